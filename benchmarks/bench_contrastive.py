"""Benchmark: mmrobust's contrastive (CLIP) training step against open_clip_train's train_one_epoch.

Both sides train the same CLIP (same weights, loaded by open_clip from the directory mmrobust
saves; random init for an open_clip architecture such as ViT-B-32) on the same synthetic pairs, AdamW
with a cosine schedule, gradient clipping 1.0, in fp32 or bf16 autocast (open_clip_train's
``amp_bf16``). To compare training steps and not image decoding, both read preloaded tensors: mmrobust
its preloaded dataset, open_clip_train a TensorDataset of the same images (normalized) and tokens.
Repetitions alternate (ours, theirs, theirs, ours, ...) so machine load hits both alike. On CUDA it
also prints samples/s, peak memory and the MFU (model FLOPs of a step, counted once with
``torch.utils.flop_counter``, per second over ``--peak-tflops``).

    python benchmarks/bench_contrastive.py --steps 60 --reps 2 [--threads 2] [--model mmrobust-tiny]
    python benchmarks/bench_contrastive.py --model ViT-B-32 --batch 256 --precision bf16 --device cuda \
        --steps 50 --reps 3 --json contrastive.json       # the issue's GPU comparison

Run by hand; not part of the test suite.
"""
from __future__ import annotations

import argparse
import json
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
from mmrobust.tasks.clip import CLIPTask
from mmrobust.models import create_clip, save_clip
from mmrobust.training.loop import TrainConfig, train

LR, WD, BETAS, EPS, WARMUP = 1e-3, 0.1, (0.9, 0.98), 1e-6, 5


class _DataInfo(SimpleNamespace):
    """What train_one_epoch reads of open_clip_train.data.DataInfo (whose module needs webdataset)."""

    def set_epoch(self, epoch: int) -> None:
        pass


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def ours(model_dir: Path, ds: ImageTextDataset, steps: int, batch: int, out: Path, device: str,
         precision: str) -> float:
    task = CLIPTask(create_clip(str(model_dir)))
    cfg = TrainConfig(steps=steps, batch_size=batch, lr=LR, weight_decay=WD, warmup_steps=WARMUP, ckpt_every=0,
                      device=device, precision=precision)
    _sync(device)
    start = time.perf_counter()
    train(task, ds, cfg, out, progress=False)
    _sync(device)
    return (time.perf_counter() - start) / steps


def theirs(model_dir: Path, images: torch.Tensor, tokens: torch.Tensor, steps: int, batch: int, device: str,
           precision: str) -> float:
    """open_clip_train's own epoch loop, set up as its main.py does (param groups, cosine_lr, ClipLoss)."""
    model = open_clip.create_model(f"local-dir:{model_dir}", output_dict=True).to(device)  # as main.py creates it
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
    args = SimpleNamespace(device=device, precision="amp_bf16" if precision == "bf16" else "fp32", distill=False,
                           accum_freq=1, batch_size=batch,
                           skip_scheduler=False, grad_clip_norm=1.0, horovod=False, rank=1, local_rank=1,
                           world_size=1, log_every_n_steps=10**9, wandb=False)
    _sync(device)
    start = time.perf_counter()
    data = {"train": _DataInfo(dataloader=loader)}
    train_one_epoch(model, data, ClipLoss(), 0, optimizer, None, scheduler, None, args)
    _sync(device)
    return (time.perf_counter() - start) / steps


def step_flops(model_dir: Path, images: torch.Tensor, tokens: torch.Tensor, batch: int, device: str) -> float:
    """Model FLOPs of one training step: forward + backward of both towers at ``batch`` (counted, not estimated)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = open_clip.create_model(f"local-dir:{model_dir}").to(device)
    counter = FlopCounterMode(display=False)
    with counter:
        img, txt, _ = model(images[:batch].to(device), tokens[:batch].to(device))
        (img.float().sum() + txt.float().sum()).backward()
    return float(counter.get_total_flops())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mmrobust-tiny")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="bf16: autocast on CUDA, both sides")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="the GPU's dense peak for the MFU (H200 bf16: 989)")
    p.add_argument("--n-pairs", type=int, default=2048, help="synthetic pairs generated (and preloaded)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench_contrastive_") as tmp:  # worlds and checkpoints: ~200 MB
        _run(args, Path(tmp))


def _run(args: argparse.Namespace, root: Path) -> None:
    world = generate_world(root / "world", n_train=args.n_pairs, n_test=8, seed=0)
    model = create_clip(args.model, seed=0)
    model_dir = save_clip(model, root / "model")
    ds = ImageTextDataset(world.train_manifest, image_size=model.image_size, preload=True)
    items = ds.__getitems__(list(range(len(ds))))
    images = model.normalize_pixels(torch.stack([it["image"] for it in items])).detach()
    tokens = model.tokenize([it["caption"] for it in items]).cpu()
    times: dict[str, list[float]] = {"mmrobust": [], "open_clip_train": []}
    peak: dict[str, float] = {}
    for r in range(args.reps):
        order = ("mmrobust", "open_clip_train") if r % 2 == 0 else ("open_clip_train", "mmrobust")
        for side in order:
            if args.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            t = (ours(model_dir, ds, args.steps, args.batch, root / f"ours{r}", args.device, args.precision)
                 if side == "mmrobust" else theirs(model_dir, images, tokens, args.steps, args.batch, args.device,
                                                   args.precision))
            times[side].append(t)
            if args.device.startswith("cuda"):
                peak[side] = max(peak.get(side, 0.0), torch.cuda.max_memory_allocated() / 2**30)
            print(f"rep {r} {side}: {1000 * t:.1f} ms/step", flush=True)
    _report(args, times, peak, step_flops(model_dir, images, tokens, args.batch, args.device)
            if args.device.startswith("cuda") else None)


def _report(args: argparse.Namespace, times: dict[str, list[float]], peak: dict[str, float],
            flops: float | None) -> None:
    ours_t, ref_t = statistics.median(times["mmrobust"]), statistics.median(times["open_clip_train"])
    row = {"model": args.model, "batch": args.batch, "precision": args.precision, "device": args.device,
           "ours_ms": 1000 * ours_t, "ref_ms": 1000 * ref_t, "ratio": ref_t / ours_t,
           "ours_samples_s": args.batch / ours_t, "ref_samples_s": args.batch / ref_t, "peak_gib": peak,
           "times": times}
    if flops:
        row.update(step_tflop=flops / 1e12, ours_mfu=flops / ours_t / (args.peak_tflops * 1e12),
                   ref_mfu=flops / ref_t / (args.peak_tflops * 1e12))
    print(f"\n| model | batch | precision | mmrobust ms/step | open_clip_train ms/step | speed ratio ours / reference |"
          f"\n|---|---:|---|---:|---:|---:|\n| {args.model} | {args.batch} | {args.precision} | {row['ours_ms']:.1f} | "
          f"{row['ref_ms']:.1f} | {row['ratio']:.2f}x |")
    if flops:
        print(f"samples/s ours {row['ours_samples_s']:.0f}, open_clip_train {row['ref_samples_s']:.0f}; "
              f"MFU ours {row['ours_mfu']:.1%}, open_clip_train {row['ref_mfu']:.1%} (step {row['step_tflop']:.2f} "
              f"TFLOP, peak {args.peak_tflops} TFLOP/s); peak memory {peak}")
    if args.json:
        Path(args.json).write_text(json.dumps(row, indent=1))
    assert math.isfinite(ours_t) and math.isfinite(ref_t)


if __name__ == "__main__":
    main()
