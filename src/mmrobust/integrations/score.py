"""``mmrobust mmr score --format lmms-eval|inspect|vlmevalkit``: a harness's log of MMR, checked against the
question file it was asked from, scored by mmrobust (RA / MR per category, level and pooled, with CIs).

The log is only read; the record goes to a new folder. A log that lacks questions, holds others, disagrees
on a ground truth or prompt, or whose requests failed is refused in one line naming what is wrong
(``allow_errors`` keeps failed requests as errors: their pairs are left out of RA / MR and counted).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mmrobust.errors import ConfigError
from mmrobust.eval.mllm.task import Question
from mmrobust.eval.mmr.dataset import load_mmr
from mmrobust.integrations.inspect_log import RERUN as INSPECT_RERUN, read_inspect_log
from mmrobust.integrations.lmms_eval.log import RERUN as LMMS_RERUN, read_lmms_eval_samples
from mmrobust.integrations.replies import HarnessReply, harness_questions, rows_for_replies, score_replies
from mmrobust.integrations.vlmevalkit import RERUN as VLM_RERUN, read_vlmevalkit_predictions


@dataclass(frozen=True)
class HarnessLog:
    """How one harness's log is read: its reader, how to finish the run, and the prompt it asks with when
    it builds its own (VLMEvalKit) rather than sending mmrobust's."""

    read: Callable[[Path, list[Question], bool], list[HarnessReply]]
    rerun: str
    asked_with: str | None = None


def _lmms_eval(path: Path, questions: list[Question], allow_errors: bool) -> list[HarnessReply]:
    return read_lmms_eval_samples(path, questions)


def _inspect(path: Path, questions: list[Question], allow_errors: bool) -> list[HarnessReply]:
    return read_inspect_log(path, allow_errors=allow_errors)


def _vlmevalkit(path: Path, questions: list[Question], allow_errors: bool) -> list[HarnessReply]:
    return read_vlmevalkit_predictions(path, questions)


LOGS: dict[str, HarnessLog] = {
    "lmms-eval": HarnessLog(_lmms_eval, LMMS_RERUN),
    "inspect": HarnessLog(_inspect, INSPECT_RERUN),
    "vlmevalkit": HarnessLog(_vlmevalkit, VLM_RERUN, asked_with="vlmevalkit"),
}


def score_harness_log(path: str | Path, *, harness: str, data: str | Path, out_dir: str | Path,
                      image_root: str | Path | None = None, allow_outside: bool = False, prompt: str = "official",
                      parser: str = "official", n_boot: int = 1000, seed: int = 0,
                      allow_errors: bool = False) -> dict[str, Any]:
    """Read ``path`` (a ``harness`` log of the MMR questions in ``data``), check it, score it into ``out_dir``;
    returns the record (``results_mmr.json``)."""
    if harness not in LOGS:
        raise ConfigError(f"unknown harness {harness!r}; choose one of: {', '.join(LOGS)}")
    spec = LOGS[harness]
    dataset = load_mmr(data, image_root=image_root, allow_outside=allow_outside)
    questions = harness_questions(dataset, prompt=prompt)
    replies = spec.read(Path(path), questions, allow_errors)
    rows = rows_for_replies(dataset, replies, source=path, harness=harness, rerun=spec.rerun, prompt=prompt,
                            asked_with=spec.asked_with, allow_errors=allow_errors)
    config = {"harness": harness, "log": str(path), "data": str(data), "prompt": spec.asked_with or prompt,
              "parser": parser, "allow_errors": allow_errors}
    return score_replies(rows, data=dataset, out_dir=out_dir, parser=parser, n_boot=n_boot, seed=seed, config=config)
