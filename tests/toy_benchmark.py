"""A toy MLLM benchmark in one small file: its questions, its prompt, its scorer (tests the harness)."""
from __future__ import annotations

from pathlib import Path

from PIL import Image

from mmrobust.eval.contract import evaluation
from mmrobust.eval.mllm import HarnessSettings, MLLMTask, Question, run_task

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 230)}


class ColourQuiz(MLLMTask):
    """What colour fills the image? Three options; scored per true colour, plus how often "A" is said."""

    name = "colour-quiz"

    def __init__(self, root: Path) -> None:
        self.root = root

    def questions(self) -> list[Question]:
        out = []
        for k, (colour, rgb) in enumerate(COLOURS.items()):
            path = self.root / f"{colour}.png"
            Image.new("RGB", (8, 8), rgb).save(path)
            options = dict(zip("ABC", COLOURS))
            prompt = "What colour is this image?\n" + "\n".join(f"{k}. {v}" for k, v in options.items())
            out.append(Question(uid=colour, image=str(path), prompt=prompt + "\nAnswer with the letter.",
                                ground_truth="ABC"[k], options=options, group=colour))
        return out

    def score(self, rows: list[dict], *, n_boot: int, seed: int) -> dict:
        metrics = super().score(rows, n_boot=n_boot, seed=seed)
        metrics["overall"]["says_a"] = sum(r["pred"] == "A" for r in rows) / len(rows)
        return metrics


@evaluation("colour-quiz", settings=HarnessSettings)
def colour_quiz(model, data: Path, settings: HarnessSettings, *, out_dir: Path):
    """The colour quiz over images written into ``data``."""
    return run_task(ColourQuiz(data), model, out_dir=out_dir, settings=settings)
