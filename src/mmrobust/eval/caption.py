"""Image captioning (COCO / Flickr30k style) on the shared MLLM harness, scored with CIDEr.

Data: a JSONL file, one image a line: ``{"id": "1", "image": "imgs/1.png", "captions": ["A dog runs.", ...]}``
(a single ``"caption"`` string is accepted; ``group`` / ``category`` optional; images relative to the file's
folder, absolute or climbing paths refused unless ``allow_outside``). The prompt is
``"Provide a one-sentence caption for the provided image."`` (as RobustVLM / LLaVA-1.5 evaluations).

Score: CIDEr-D (Vedantam et al. 2015) from ``pycocoevalcap.cider.cider.Cider`` (n = 4, sigma = 6, x10 as
published). Tokenization is NOT the COCO PTB tokenizer (it needs Java): :func:`tokenize_caption` lower-cases,
drops punctuation and splits on whitespace, so numbers can differ slightly from the leaderboard's. The document
frequencies are those of this corpus, so the per-sample ``cider`` in the rows depends on the whole set (as in
the COCO evaluation); its bootstrap CI resamples those per-sample values with the corpus statistics fixed.
Unparseable (empty) replies score 0; rows with an error are left out.

Parsers: ``official`` the whole reply, newlines as spaces; ``strict`` refuses a multi-line reply; ``lenient``
keeps the first non-empty line and drops a ``Caption:`` prefix.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from mmrobust.errors import ConfigError, DataError
from mmrobust.eval.contract import evaluation
from mmrobust.data.manifest import read_jsonl_objects
from mmrobust.eval.vqa import field_strings, item_basics, scored_groups
from mmrobust.eval.mllm.harness import HarnessSettings, Progress, run_task
from mmrobust.eval.mllm.task import MLLMTask, Question
from mmrobust.reports.contract import Record, Table
from mmrobust.safety import resolve_inside

CAPTION_PROMPT = "Provide a one-sentence caption for the provided image."
_NON_WORD = re.compile(r"[^\w\s]|_")
_CAPTION_PREFIX = re.compile(r"^\s*(?:caption)\s*[:：\-]\s*", re.I)


def tokenize_caption(text: str) -> str:
    """Lower case, punctuation removed (apostrophes too: "dog's" -> "dogs"), single spaces."""
    return " ".join(_NON_WORD.sub(" ", text.lower().replace("'", "")).split())


def cider_scores(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[float, np.ndarray]:
    """Corpus CIDEr-D and the per-sample scores (pycocoevalcap), after :func:`tokenize_caption`."""
    try:
        from pycocoevalcap.cider.cider import Cider
    except ImportError:
        raise ConfigError("captioning CIDEr needs pycocoevalcap; pip install pycocoevalcap") from None
    if len(predictions) != len(references):
        raise ConfigError(f"got {len(predictions)} captions but {len(references)} reference lists")
    if not predictions:
        return float("nan"), np.zeros(0)
    gts = {i: [tokenize_caption(r) for r in refs] for i, refs in enumerate(references)}
    res = {i: [tokenize_caption(p)] for i, p in enumerate(predictions)}
    score, scores = Cider().compute_score(gts, res)
    return float(score), np.asarray(scores, dtype=float)


@dataclass(frozen=True)
class CaptionItem:
    id: str
    image: str
    captions: tuple[str, ...]
    group: str = "all"


def load_captions(path: str | Path, *, allow_outside: bool = False) -> list[CaptionItem]:
    """The images and reference captions of a caption JSONL file, checked line by line."""
    root, seen, items = Path(path).resolve().parent, set(), []
    for where, _, obj in read_jsonl_objects(path, "caption file"):
        uid, image, group = item_basics(obj, where, root, seen, allow_outside=allow_outside)
        captions = field_strings(obj, "captions", where, single="caption")
        if any(not tokenize_caption(c) for c in captions):
            raise DataError(f"{where}: a caption has no words (only punctuation); give real reference captions")
        items.append(CaptionItem(uid, image, tuple(captions), group))
    if not items:
        raise DataError(f"{path}: no images; write one JSON object per line")
    return items


def load_karpathy_captions(spec: str, *, split: str = "test", image_root: str | Path | None = None,
                           allow_outside: bool = False) -> list[CaptionItem]:
    """The images and captions of one split of a Karpathy-split JSON (``karpathy:PATH``: COCO's 5k test
    images, Flickr30k's 1k; :func:`mmrobust.data.captions.karpathy_images`). Images are ``filepath/filename``
    below ``image_root`` (default: the JSON's folder) and must stay inside it unless ``allow_outside``."""
    from mmrobust.data.captions import karpathy_images, karpathy_root

    images, root = karpathy_images(spec, split=split), karpathy_root(spec, image_root)
    items, seen = [], set()
    for uid, image, captions in images:
        if uid in seen:
            raise DataError(f"{spec}: two images of split {split!r} have the id {uid!r}; ids must be unique")
        seen.add(uid)
        path = resolve_inside(root, image, allow_outside=allow_outside, what=f"{spec}: image",
                              option="--allow-outside-paths")
        if not path.is_file():  # before any model loads: the usual slip is the image folder
            raise DataError(f"image {image!r} of {spec} not found below {root}; point --data-root at the folder "
                            "that holds the JSON's filepath/filename paths (COCO: the folder with val2014/)")
        if any(not tokenize_caption(c) for c in captions):
            raise DataError(f"{spec}: image {image!r} has a caption without words; fix the file")
        items.append(CaptionItem(uid, str(path), tuple(captions)))
    return items


def load_caption_data(data: str | Path, *, split: str = "test", image_root: str | Path | None = None,
                      allow_outside: bool = False) -> list[CaptionItem]:
    """A caption JSONL (:func:`load_captions`) or ``karpathy:PATH`` (:func:`load_karpathy_captions`, its
    ``split``; images below ``image_root``)."""
    from mmrobust.data.captions import parse_caption_spec

    if parse_caption_spec(str(data)) is not None:
        return load_karpathy_captions(str(data), split=split, image_root=image_root, allow_outside=allow_outside)
    if image_root is not None or split != "test":
        raise ConfigError("a data root and a split are for karpathy:PATH; a caption JSONL is used whole, its "
                          "images relative to the file: drop them")
    return load_captions(data, allow_outside=allow_outside)


class CaptionTask(MLLMTask):
    """One caption per image; CIDEr overall and per group (see the module docstring)."""

    name = "caption"
    metric_keys = ("cider",)

    def __init__(self, items: Sequence[CaptionItem] = ()) -> None:
        self.items = list(items)

    def questions(self) -> list[Question]:
        return [Question(uid=i.id, image=i.image, prompt=CAPTION_PROMPT, ground_truth=i.captions[0], group=i.group,
                         columns={"id": i.id, "captions": list(i.captions)}, meta={"id": i.id})
                for i in self.items]

    def references(self, q: Question) -> list[str]:
        """What an untargeted attack pushes away from: all reference captions (an ensemble)."""
        return list(q.columns["captions"])

    def parse(self, response: str, row: Mapping[str, Any], parser: str) -> str | None:
        s = response.strip()
        if parser == "strict" and "\n" in s:
            return None
        if parser == "lenient":
            lines = [x for x in s.splitlines() if x.strip()]
            s = _CAPTION_PREFIX.sub("", lines[0]) if lines else ""
        s = " ".join(s.split())
        return s if tokenize_caption(s) else None

    def sample_scores(self, rows: list[dict[str, Any]]) -> np.ndarray:
        """(N, 1) per-sample CIDEr; the corpus is the rows without an error, unparseable replies score 0."""
        out = np.zeros((len(rows), 1))
        idx = [i for i, r in enumerate(rows) if r["status"] != "error"]
        _, scores = cider_scores([rows[i]["pred"] or "" for i in idx], [rows[i]["captions"] for i in idx])
        for i, s in zip(idx, scores):
            out[i, 0] = 0.0 if rows[i]["pred"] is None else s
        return out

    def score(self, rows: list[dict[str, Any]], *, n_boot: int, seed: int) -> dict[str, Any]:
        values = self.sample_scores(rows)
        for r, v in zip(rows, values):
            r["cider"] = float(v[0]) if r["status"] != "error" else None
        metrics = scored_groups(rows, values, keys=self.metric_keys, n_boot=n_boot, seed=seed)
        metrics["tokenizer"] = "lowercase, punctuation stripped, whitespace split (not the PTB tokenizer)"
        return metrics

    def summary(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return {k: metrics["overall"][k] for k in ("cider", "n", "n_unparseable")}

    def tables(self, metrics: dict[str, Any]) -> list[Table]:
        rows = [{"group": g, **m} for g, m in [*metrics["per_group"].items(), ("all", metrics["overall"])]]
        return [Table.of(f"{self.name}: CIDEr per group",
                         [("group", "group"), ("cider", "CIDEr", ""), ("n", "images", "count"),
                          ("n_unparseable", "empty captions", "count"), ("n_errors", "errors", "count")], rows,
                         "CIDEr-D (pycocoevalcap, x10 as published; document frequencies over all images) with a "
                         "lowercase / punctuation-stripping tokenizer instead of the PTB tokenizer; per group: the "
                         "mean of per-sample CIDEr. Empty captions score 0, images with an error are left out.")]

    def provenance(self) -> dict[str, Any]:
        return {"n_images": len(self.items)}


@dataclass(frozen=True)
class CaptionSettings(HarnessSettings):
    """The harness settings, plus ``allow_outside``: accept image paths outside the caption file's folder
    (or the data root); ``split`` / ``data_root``: the split and image folder of a ``karpathy:PATH`` file."""

    allow_outside: bool = False
    split: str = "test"
    data_root: str | None = None


@evaluation("caption", settings=CaptionSettings)
def evaluate_caption(model: Any, data: str | Path, settings: CaptionSettings, *, out_dir: str | Path,
                     progress: Progress | None = None, config: dict | None = None) -> Record:
    """Captioning CIDEr of ``model`` (an MLLM adapter) on the JSONL file ``data`` or ``karpathy:PATH``."""
    task = CaptionTask(load_caption_data(data, split=settings.split, image_root=settings.data_root,
                                         allow_outside=settings.allow_outside))
    record = run_task(task, model, out_dir=out_dir, settings=settings.harness(), progress=progress,
                      config={"data": str(data), "prompt": CAPTION_PROMPT, **(config or {})})
    record.config["settings"] = asdict(settings)
    return record
