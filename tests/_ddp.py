"""Shared by tests/test_ddp.py and its worker processes: tiny tasks, a global batch, short training runs.

Run as a script it is one rank of a torchrun-style group (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT in the environment, read by mmrobust's ``init_from_env``)::

    python tests/_ddp.py OUT_DIR MANIFEST
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

GLOBAL_BATCH = 8
CAPTIONS = ["a photo of a star.", "a red ring.", "a blue bar.", "a cross.", "a big circle.", "a green square.",
            "a small star.", "a ring on the left."]
LOSS_TASKS = ("clip", "cleanclip", "par")
DTYPES = (torch.float32, torch.float64)


def tiny_task(name: str, dtype: torch.dtype = torch.float32, **options):
    """Task ``name`` on the seeded micro CLIP in ``dtype`` (float64: float summation order stops mattering,
    so any difference left is in the math); PAR's trained copy is moved off its frozen reference."""
    from mmrobust.tasks.build import build_task
    from mmrobust.models import create_clip

    task = build_task(name, create_clip("mmrobust-micro", seed=0), **options)
    if name == "par":
        with torch.no_grad():
            for p in task.model.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    if dtype != torch.float32:
        task.to(dtype)
        forward = task.forward
        task.forward = lambda batch: forward({k: v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v
                                              for k, v in batch.items()})
    return task


def global_batch() -> dict:
    """One global batch with every view the loss tasks read (seeded, identical in every process)."""
    g = torch.Generator().manual_seed(0)
    images = torch.rand(GLOBAL_BATCH, 3, 16, 16, generator=g)
    return {"image": images, "image_aug": torch.rand(images.shape, generator=g),
            "image_noise_erase": torch.rand(images.shape, generator=g), "caption": list(CAPTIONS),
            "caption_aug": [c.replace("a ", "one ", 1) for c in CAPTIONS], "index": torch.arange(GLOBAL_BATCH)}


def rank_rows(batch: dict, rank: int, world_size: int) -> dict:
    """Rank ``rank``'s contiguous slice of ``batch``."""
    part = GLOBAL_BATCH // world_size
    return {k: v[rank * part:(rank + 1) * part] for k, v in batch.items()}


@torch.no_grad()
def par_tau(task, batch: dict) -> float:
    """A tau between rank 0's local mean image distance and the global one: a per-rank threshold would
    switch the push term on where the global one switches it off (or the reverse)."""
    x = batch["image_noise_erase"]
    d = (task.model.encode_image(x, normalize=True) - task.reference.encode_image(x, normalize=True)).pow(2).sum(1)
    return float((d[:GLOBAL_BATCH // 2].mean() + d.mean()) / 2)


def loss_and_grads(name: str, batch: dict, dtype: torch.dtype) -> tuple[dict, dict]:
    """The task's terms and its trainable gradients on ``batch`` (under a group: averaged over ranks)."""
    from mmrobust.training.distributed import all_reduce_mean_, mean_across_ranks

    task = tiny_task(name, dtype).train()
    if name == "par":
        task.tau = par_tau(task, {k: v.to(dtype) if torch.is_tensor(v) else v for k, v in global_batch().items()})
    out = task(batch)
    out["loss"].backward()
    named = dict(task.trainable_named_parameters())
    all_reduce_mean_([p.grad for p in named.values() if p.grad is not None])
    terms = mean_across_ranks({k: v.detach() for k, v in out.items()})
    grads = {k: p.grad.clone() for k, p in named.items() if p.grad is not None}
    return {k: v.item() for k, v in terms.items()}, grads


RUNS = {  # name -> (task, task options, TrainConfig overrides)
    "par_accum": ("par", {}, dict(steps=4, batch_size=16, accum_steps=2)),
    "fare": ("fare", {"attack_steps": 2}, dict(steps=3, batch_size=8)),
    "cleanclip": ("cleanclip", {}, dict(steps=6, batch_size=8, ckpt_every=3)),
}


class Interrupted(Exception):
    pass


def run_training(run: str, manifest: str, out: Path, *, resume: bool = False, stop_at: int | None = None) -> dict:
    """Run ``RUNS[run]`` into ``out``; ``stop_at``: raise on that forward call (a simulated kill).
    Runs in float64 (see :func:`tiny_task`). Returns this rank's final trainable state."""
    from mmrobust.data.datasets import ImageTextDataset
    from mmrobust.training import TrainConfig, train

    name, options, overrides = RUNS[run]
    task = tiny_task(name, torch.float64, **options)
    if stop_at is not None:
        calls, forward = [0], task.forward

        def counting(batch):
            calls[0] += 1
            if calls[0] == stop_at:
                raise Interrupted(f"stopped at forward {stop_at}")
            return forward(batch)
        task.forward = counting
    ds = ImageTextDataset(manifest, image_size=16, preload=True, views=task.views, seed=0)
    cfg = TrainConfig(**{"lr": 1e-3, "warmup_steps": 1, "log_every": 1, **overrides})
    train(task, ds, cfg, out, resume=resume, progress=False)
    return {k: v.detach().clone() for k, v in task.trainable_named_parameters()}


def drop_error(manifest: str, out: Path) -> str:
    """Train on 8 rows, one of them unreadable, with batch size 8: the rank holding it has a short slice.
    Returns the error every rank must stop with (a shorter slice would break the gathers)."""
    from mmrobust.data.datasets import ImageTextDataset
    from mmrobust.data.manifest import PathPolicy
    from mmrobust.errors import DataError
    from mmrobust.training import TrainConfig, train

    root = Path(manifest).parent
    lines = Path(manifest).read_text().splitlines()[:9]
    rows = [lines[0]] + [f"{root / line.split(',', 1)[0]},{line.split(',', 1)[1]}" for line in lines[1:]]
    rows[1] = "missing.png," + rows[1].split(",", 1)[1]
    broken = out / "broken.csv"
    broken.parent.mkdir(parents=True, exist_ok=True)
    broken.write_text("\n".join(rows) + "\n")
    ds = ImageTextDataset(broken, image_size=16, preload=True, paths=PathPolicy.of(broken, root))
    try:
        train(tiny_task("clip"), ds, TrainConfig(steps=2, batch_size=8), out / "run", progress=False)
    except DataError as e:
        return str(e)
    return "no error"


def _worker(out: Path, manifest: str) -> None:
    from mmrobust.training import loop
    from mmrobust.training.distributed import init_from_env, rank_and_size

    rank, size = init_from_env("cpu")
    assert (rank, size) == rank_and_size() and size == int(os.environ["WORLD_SIZE"]) > 1
    batch = rank_rows(global_batch(), rank, size)
    results: dict = {f"losses_{str(dtype)[6:]}": {n: loss_and_grads(n, batch, dtype) for n in LOSS_TASKS}
                     for dtype in DTYPES}
    syncs, reduce = [0], loop.all_reduce_mean_

    def counted(tensors):
        syncs[0] += 1
        reduce(tensors)
    loop.all_reduce_mean_ = counted
    for run in RUNS:
        syncs[0] = 0
        results[run] = run_training(run, manifest, out / run)
        results[f"{run}_syncs"] = syncs[0]
    try:
        run_training("cleanclip", manifest, out / "resumed", stop_at=5)
    except Interrupted:
        results["resumed_ckpt_step"] = torch.load(out / "resumed" / "checkpoints" / "last.pt")["step"]
    results["resumed"] = run_training("cleanclip", manifest, out / "resumed", resume=True)
    results["drop_error"] = drop_error(manifest, out / f"drop{rank}")
    torch.save(results, out / f"rank{rank}.pt")


if __name__ == "__main__":
    torch.set_num_threads(1)
    _worker(Path(sys.argv[1]), sys.argv[2])
