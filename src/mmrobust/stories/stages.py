"""Small helpers for multi-stage stories: resumable stages, clean subsets of manifests."""
from __future__ import annotations

import contextlib

import csv
import io
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator, Sequence

from mmrobust.data.manifest import read_csv
from mmrobust.pipelines.stages import DONE, run_stage, stamp  # noqa: F401 - the stories' stages live a layer down


def clean_subset(manifest: Path, out: Path, *, exclude: Sequence[int], n: int, image_col: str = "image") -> Path:
    """Write the first ``n`` rows of ``manifest`` not in ``exclude``, image paths re-based to ``out``'s folder.
    An ``out`` that already holds exactly these rows is left alone: its stamp (mtime) is what the stages
    trained on it are keyed by, so rewriting it would retrain them."""
    skip = set(exclude)
    table = read_csv(manifest)
    rows = [r for i, r in enumerate(table.dicts()) if i not in skip][:n]
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=table.header)
    w.writeheader()
    for r in rows:
        src = Path(r[image_col])
        src = src if src.is_absolute() else manifest.parent / src
        r[image_col] = os.path.relpath(src.resolve(), out.parent.resolve())
        w.writerow(r)
    text = buf.getvalue()
    if out.is_file() and not out.is_symlink() and out.read_bytes() == text.encode():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(text.encode())
    os.replace(tmp, out)
    return out


def train_stage(out: Path, *, task: str, model: str, manifest: Path, classes: Path, steps: int, batch: int, lr: float,
                weight_decay: float, seed: int, opts: dict[str, Any], progress: bool,
                data_root: Path | None = None) -> str:
    """One resumable training stage of a story (cosine schedule, 10% warmup, a few checkpoints);
    returns the exported model directory."""
    from mmrobust.pipelines.train import DataSpec, ModelSpec, TrainJob, run_train
    from mmrobust.training.loop import TrainConfig

    optim = TrainConfig(steps=steps, batch_size=batch, lr=lr, weight_decay=weight_decay,
                        warmup_steps=max(1, steps // 10), ckpt_every=max(25, steps // 4), seed=seed)
    job = TrainJob(task=task, model=ModelSpec(name=model, seed=seed),
                   data=DataSpec(manifest=str(manifest), label_col="label", classes=str(classes),
                                 data_root=str(data_root) if data_root else None),
                   optim=optim, out_dir=str(out), task_options=opts)
    cfg = {"task": task, "model": model, "manifest": str(manifest), "optim": asdict(optim), "opts": opts,
           "inputs": [stamp(model), stamp(manifest)]}
    output = run_stage(out, cfg, lambda: {"model_dir": str(run_train(job, resume=True, progress=progress)[0])})
    return output["model_dir"]


@contextlib.contextmanager
def quiet_hf_progress(quiet: bool = True) -> Iterator[None]:
    """Within the block, transformers' weight-loading and saving bars are off (for ``--quiet`` runs); on
    leaving it they are turned back on if they were on before."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        quiet = False
    was_on = quiet and hf_logging.is_progress_bar_enabled()
    if quiet:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()
