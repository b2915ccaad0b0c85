"""``mmr``: the MMR leading-question benchmark (RA / MR per category) of a local question file or folder, the
same evaluation and record as `mmrobust mmr run --data` (:func:`mmrobust.eval.mmr.task.evaluate_mmr`)."""
from __future__ import annotations

from dataclasses import dataclass

from mmrobust.eval.mllm.benchmark import benchmark
from mmrobust.eval.mmr.dataset import MMRDataset, load_mmr
from mmrobust.eval.mmr.task import RunSettings, evaluate_mmr, mmr_task
from mmrobust.values import check_int


@dataclass(frozen=True)
class MMRBenchSettings(RunSettings):
    """MMR's run settings (prompt, pairing, parser, decoding, ...) plus where its images are: ``image_root``
    (default: beside the question file), ``allow_outside`` (image paths may leave it), and ``limit`` (only the
    first N pairs, for smoke runs)."""

    image_root: str | None = None
    allow_outside: bool = False
    limit: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.limit is not None:
            check_int("limit", self.limit, low=1, fix="a positive number of pairs")


@benchmark("mmr", settings=MMRBenchSettings, evaluate=evaluate_mmr, task=mmr_task)
def mmr(data: str, settings: MMRBenchSettings) -> MMRDataset:
    """MMR leading questions (RA / MR): a question JSON/JSONL file or the folder holding it."""
    return load_mmr(data, image_root=settings.image_root, allow_outside=settings.allow_outside).select(
        settings.limit, pairing=settings.pairing)
