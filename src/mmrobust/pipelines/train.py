"""`mmrobust train` as a library function: model + data + task + loop -> run directory."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mmrobust.data.datasets import ClassInfo, ImageTextDataset
from mmrobust.defenses.build import build_task
from mmrobust.models.clip import create_clip
from mmrobust.reports.records import write_results
from mmrobust.training.loop import TrainConfig, TrainResult, train


@dataclass(frozen=True)
class DataSpec:
    """Where training pairs come from (CSV manifest; columns configurable)."""

    manifest: str
    image_col: str = "image"
    caption_col: str = "caption"
    label_col: str | None = None
    delimiter: str = ","
    classes: str | None = None  # classes.json for tasks that classify
    preload: bool = True


@dataclass(frozen=True)
class ModelSpec:
    """Which CLIP to start from."""

    name: str = "mmrobust-tiny"
    pretrained: str | None = None
    checkpoint: str | None = None
    seed: int = 0


@dataclass(frozen=True)
class TrainJob:
    task: str
    model: ModelSpec
    data: DataSpec
    optim: TrainConfig
    out_dir: str
    task_options: dict[str, Any] = field(default_factory=dict)


def job_dict(job: TrainJob) -> dict[str, Any]:
    d = asdict(job)
    d["optim"]["betas"] = list(job.optim.betas)
    return d


def run_train(job: TrainJob, *, resume: bool = False, progress: bool = True) -> tuple[Path, TrainResult]:
    """Train per ``job``; writes config.yaml, checkpoints/, train_log.jsonl, model/ and results.json.
    Returns (exported model directory, result)."""
    out = Path(job.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(job_dict(job), sort_keys=False))
    model = create_clip(job.model.name, pretrained=job.model.pretrained, checkpoint=job.model.checkpoint,
                        seed=job.model.seed)
    classes = ClassInfo.load(job.data.classes) if job.data.classes else None
    task = build_task(job.task, model, classes=classes, **job.task_options)
    label_col = job.data.label_col if (task.needs_labels or job.data.label_col) else None
    if task.needs_labels and not label_col:
        from mmrobust.errors import ConfigError

        raise ConfigError(f"task {job.task!r} trains on labels: pass --label-col (and --classes)")
    dataset = ImageTextDataset(
        job.data.manifest, image_size=model.image_size, image_col=job.data.image_col,
        caption_col=job.data.caption_col, label_col=label_col,
        classnames=classes.classnames if classes else None, delimiter=job.data.delimiter,
        preload=job.data.preload, views=task.views, seed=job.optim.seed,
    )
    result = train(task, dataset, job.optim, out, resume=resume, progress=progress, desc=f"train {job.task}")
    model_dir = task.export(out / "model")
    last = result.history[-1] if result.history else {}
    write_results(out, kind="train", metrics={"steps": result.steps_done, "final": last,
                                              "n_skipped_images": len(dataset.skips.skipped)},
                  config=job_dict(job), seeds={"train": job.optim.seed, "init": job.model.seed},
                  extra={"skipped_images": dataset.skips.summary()["skipped"], "resumed_from": result.resumed_from})
    return model_dir, result
