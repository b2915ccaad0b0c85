"""Benchmark: mmrobust's contrastive (CLIP) training step against open_clip_train's train_one_epoch.

Both sides train the same tiny CLIP (same weights, loaded by open_clip from the directory mmrobust
saves) on the same synthetic pairs, batch 128, AdamW with a cosine schedule, gradient clipping 1.0,
fp32. To compare training steps and not image decoding, both read preloaded tensors: mmrobust its
preloaded dataset, open_clip_train a TensorDataset of the same images (normalized) and tokens.
Repetitions alternate (ours, theirs, theirs, ours, ...) so machine load hits both alike.

    python benchmarks/bench_contrastive.py --steps 60 --reps 2 [--threads 2] [--model mmrobust-tiny]

Run by hand; not part of the test suite.
"""
from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import open_clip
import torch
from open_clip.loss import ClipLoss
from open_clip_train.scheduler import cosine_lr
from open_clip_train.train import train_one_epoch

from mmrobust.data.datasets import ImageTextDataset
from mmrobust.world.shapes import generate_world
from mmrobust.defenses.clip import CLIPTask
from mmrobust.models import create_clip, save_clip
from mmrobust.training.loop import TrainConfig, train

LR, WD, BETAS, EPS, WARMUP = 1e-3, 0.1, (0.9, 0.98), 1e-6, 5


class _DataInfo(SimpleNamespace):
    """What train_one_epoch reads of open_clip_train.data.DataInfo (whose module needs webdataset)."""

    def set_epoch(self, epoch: int) -> None:
        pass


def ours(model_dir: Path, ds: ImageTextDataset, steps: int, batch: int, out: Path) -> float:
    task = CLIPTask(create_clip(str(model_dir)))
    cfg = TrainConfig(steps=steps, batch_size=batch, lr=LR, weight_decay=WD, warmup_steps=WARMUP, ckpt_every=0)
    start = time.perf_counter()
    train(task, ds, cfg, out, progress=False)
    return (time.perf_counter() - start) / steps


def theirs(model_dir: Path, images: torch.Tensor, tokens: torch.Tensor, steps: int, batch: int) -> float:
    """open_clip_train's own epoch loop, set up as its main.py does (param groups, cosine_lr, ClipLoss)."""
    model = open_clip.create_model(f"local-dir:{model_dir}", output_dict=True)  # as main.py creates it
    exclude = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n  # noqa: E731
    named = list(model.named_parameters())
    groups = [{"params": [p for n, p in named if exclude(n, p) and p.requires_grad], "weight_decay": 0.0},
              {"params": [p for n, p in named if not exclude(n, p) and p.requires_grad], "weight_decay": WD}]
    optimizer = torch.optim.AdamW(groups, lr=LR, betas=BETAS, eps=EPS)
    scheduler = cosine_lr(optimizer, LR, WARMUP, steps)
    n = steps * batch
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(0)) % len(images)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images[idx], tokens[idx]),
                                         batch_size=batch, shuffle=False, drop_last=True)
    loader.num_batches, loader.num_samples = steps, n
    args = SimpleNamespace(device="cpu", precision="fp32", distill=False, accum_freq=1, batch_size=batch,
                           skip_scheduler=False, grad_clip_norm=1.0, horovod=False, rank=1, local_rank=1,
                           world_size=1, log_every_n_steps=10**9, wandb=False)
    start = time.perf_counter()
    data = {"train": _DataInfo(dataloader=loader)}
    train_one_epoch(model, data, ClipLoss(), 0, optimizer, None, scheduler, None, args)
    return (time.perf_counter() - start) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mmrobust-tiny")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench_contrastive_") as tmp:  # worlds and checkpoints: ~200 MB
        _run(args, Path(tmp))


def _run(args: argparse.Namespace, root: Path) -> None:
    world = generate_world(root / "world", n_train=2048, n_test=8, seed=0)
    model = create_clip(args.model, seed=0)
    model_dir = save_clip(model, root / "model")
    ds = ImageTextDataset(world.train_manifest, image_size=model.image_size, preload=True)
    items = ds.__getitems__(list(range(len(ds))))
    images = model.normalize_pixels(torch.stack([it["image"] for it in items])).detach()
    tokens = model.tokenize([it["caption"] for it in items]).cpu()
    times: dict[str, list[float]] = {"mmrobust": [], "open_clip_train": []}
    for r in range(args.reps):
        order = ("mmrobust", "open_clip_train") if r % 2 == 0 else ("open_clip_train", "mmrobust")
        for side in order:
            t = (ours(model_dir, ds, args.steps, args.batch, root / f"ours{r}") if side == "mmrobust"
                 else theirs(model_dir, images, tokens, args.steps, args.batch))
            times[side].append(t)
            print(f"rep {r} {side}: {1000 * t:.1f} ms/step", flush=True)
    ours_t, ref_t = statistics.median(times["mmrobust"]), statistics.median(times["open_clip_train"])
    print(f"\n| model | batch | mmrobust ms/step | open_clip_train ms/step | speed ratio ours / reference |\n"
          f"|---|---:|---:|---:|---:|\n| {args.model} | {args.batch} | {1000 * ours_t:.1f} | {1000 * ref_t:.1f} | "
          f"{ref_t / ours_t:.2f}x |")
    assert math.isfinite(ours_t) and math.isfinite(ref_t)


if __name__ == "__main__":
    main()
