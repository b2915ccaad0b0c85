"""Benchmark: mmrobust's FARE training step against RobustVLM's (Schlarmann et al. 2024, chs20/RobustVLM).

Ours: ``FARETask`` (eps 4/255, step 1/255, 10 PGD steps, sign-momentum 0.9) through
``mmrobust.training.loop.train``. Theirs: the step of ``train_one_epoch`` in their
``train/adversarial_training_clip.py`` with the FARE flags of their README (``--attack pgd --loss l2
--inner_loss l2 --output_normalize False --clean_weight 0``), calling their own ``train.pgd_train.pgd``
and, lifted at run time from their file (it cannot be imported: it pulls in wandb, open_flamingo and an old
``training`` package), their ``ClipVisionModel``, ``ComputeLossWrapper`` and ``compute_loss``. Their code
is never copied here: pass a checkout with ``--robustvlm PATH`` (without one only our step is timed).
``--compile`` puts both sides' vision towers under ``torch.compile``; ``--tf32`` allows TF32 on both (default:
strict fp32 on both, as their code runs).

Both sides start from the same random-init weights, read the same preloaded [0,1] images (content does
not change the cost) and use AdamW lr 1e-5, wd 1e-4, betas (0.9, 0.999), eps 1e-8, no clipping. Before
timing, one step of each from the same weights and the same random start is compared (adversarial
images and FARE loss, fp32). Repetitions alternate sides; each runs ``steps + 2`` steps and times the
middle ``steps`` (the first step warms up, the last is followed by our final checkpoint), marked when
the data loader fetches the next batch. On CUDA it also prints peak memory and MFU.

    python benchmarks/bench_fare.py --robustvlm /tmp/robustvlm --model mmrobust-tiny --batch 32 --steps 20 --reps 6
    python benchmarks/bench_fare.py --robustvlm /tmp/robustvlm --model ViT-L-14 --batch 128 --device cuda \\
        --precision fp32 --steps 2 --reps 2 --peak-tflops 67 --json fare_vitl14_fp32.json

Run by hand; not part of the test suite.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import torch
import torch.nn.functional as F
from open_clip_train.scheduler import cosine_lr  # their `training.scheduler.cosine_lr` (l.18), renamed package
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode
from torchvision import transforms

from mmrobust.attacks.ops import random_delta
from mmrobust.tasks.fare import FARETask
from mmrobust.losses.embedding import fare_loss
from mmrobust.models import create_clip
from mmrobust.training.loop import TrainConfig, fp32_matmuls, train

EPS, STEP, ITERS, MOMENTUM = 4 / 255, 1 / 255, 10, 0.9
LR, WD, BETAS, ADAM_EPS, WARMUP = 1e-5, 1e-4, (0.9, 0.999), 1e-8, 2
ATC = "train/adversarial_training_clip.py"
THEIR_DEFS = ("ClipVisionModel", "ComputeLossWrapper", "compute_loss", "l2", "ce")


# ---------------------------------------------------------------- their code, loaded from their checkout
def load_robustvlm(root: Path) -> SimpleNamespace:
    """Their ``pgd`` (imported) and the loss/model definitions of adversarial_training_clip.py (compiled from
    their file alone: importing it would run its top-level imports of wandb, open_flamingo, ...)."""
    sys.path.insert(0, str(root))
    from train.pgd_train import pgd  # noqa: PLC0415  (their repo, only on sys.path now)

    source = (root / ATC).read_text()
    tree = ast.parse(source)
    keep = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name in THEIR_DEFS]
    missing = set(THEIR_DEFS) - {n.name for n in keep}
    if missing:
        raise SystemExit(f"{root / ATC} lacks {sorted(missing)}; is --robustvlm a chs20/RobustVLM checkout?")
    namespace: dict[str, Any] = {"torch": torch, "F": F}
    exec(compile(ast.Module(body=keep, type_ignores=[]), str(root / ATC), "exec"), namespace)  # noqa: S102
    return SimpleNamespace(pgd=pgd, **{name: namespace[name] for name in THEIR_DEFS})


class TheirState(SimpleNamespace):
    """What their main() builds (adversarial_training_clip.py l.95-211): two ClipVisionModel wrappers of the
    visual tower with the preprocessor's Normalize, AdamW over all visual params, open_clip's cosine_lr."""


def their_setup(rv: SimpleNamespace, visual: torch.nn.Module, mean: list[float], std: list[float],
                device: torch.device, steps: int) -> TheirState:
    normalize = transforms.Normalize(mean=mean, std=std)  # l.107: image_processor.transforms[-1]
    args = SimpleNamespace(output_normalize=False)
    model_orig = rv.ClipVisionModel(model=copy.deepcopy(visual), args=args, normalize=normalize).to(device)
    model = rv.ClipVisionModel(model=copy.deepcopy(visual), args=args, normalize=normalize).to(device)
    optimizer = torch.optim.AdamW(model.model.parameters(), lr=LR, weight_decay=WD)  # l.194-197 (default betas)
    scheduler = cosine_lr(optimizer, LR, WARMUP, steps)  # l.211
    model_orig.eval()  # l.280-281
    model.train()
    return TheirState(rv=rv, model=model, model_orig=model_orig, optimizer=optimizer, scheduler=scheduler,
                      device=device, step_total=0)


def their_step(s: TheirState, data: torch.Tensor, perturbation: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """One iteration of their train_one_epoch (adversarial_training_clip.py l.289-484) with the FARE flags,
    as its sequence of calls; eval (every --eval_freq steps), checkpoints, wandb and ImageNet accuracy
    logging left out. Returns (adversarial images, FARE loss)."""
    rv = s.rv
    data = data.to(s.device)  # l.291 data.cuda()
    with torch.no_grad():  # l.296-297
        embedding_orig = s.model_orig(vision=data, output_normalize=False)
    wrapper = rv.ComputeLossWrapper(embedding_orig, None, reduction="mean", loss="l2", logit_scale=100.)  # l.300
    s.model.eval()  # l.305
    if perturbation is None:  # l.318: uniform start from the global RNG, not clamped to [0,1]
        perturbation = torch.zeros_like(data).uniform_(-EPS, EPS)
    data_adv = rv.pgd(forward=s.model, loss_fn=wrapper, data_clean=data, targets=None, norm="linf", eps=EPS,
                      iterations=ITERS, stepsize=STEP, output_normalize=False,
                      perturbation=perturbation.requires_grad_(True), mode="max", verbose=False)  # l.308-321
    del wrapper  # l.337
    s.model.train()  # l.338
    embedding_clean = s.model(data, output_normalize=False)  # l.340: with grad, even at clean_weight 0
    embedding_adv = s.model(data_adv, output_normalize=False)  # l.349
    loss = rv.compute_loss(loss_str="l2", embedding=embedding_adv, targets=None, embedding_orig=embedding_orig,
                           logit_scale=100., embedding_text_labels_norm=None)  # l.356-360
    loss_total = 0. * 0. + (1 - 0.) * loss  # l.361: clean_weight * loss_clean + (1 - clean_weight) * loss
    loss_total.backward()  # l.362-366
    s.optimizer.step()
    s.optimizer.zero_grad()
    s.step_total += 1
    s.scheduler(s.step_total)
    with torch.no_grad():  # l.368-372 (logging)
        F.cosine_similarity(embedding_clean, embedding_orig, dim=1).mean()
        cos_sim = F.cosine_similarity(embedding_adv, embedding_orig, dim=1).mean()
    loss.item(), cos_sim.item()  # l.386-387 (meters)
    return data_adv.detach(), loss.detach()


# ---------------------------------------------------------------- data with time marks
class TimedImages(torch.utils.data.Dataset):
    """Preloaded [0,1] images; records the time each batch is fetched (after a CUDA sync), i.e. the end of
    the previous step. ``kind`` "ours" yields {"image": x} for our loop, "theirs" (x, 0) for their loader."""

    def __init__(self, images: torch.Tensor, kind: str, device: torch.device) -> None:
        self.images, self.kind, self.device, self.marks = images, kind, device, []

    def __len__(self) -> int:
        return len(self.images)

    def __getitems__(self, keys: list[Any]) -> list[Any]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.marks.append(time.perf_counter())
        idx = [k[1] if isinstance(k, tuple) else int(k) for k in keys]  # EpochBatches yields (epoch, index)
        return [{"image": self.images[i]} if self.kind == "ours" else (self.images[i], 0) for i in idx]

    def per_step(self, steps: int) -> float:
        """Mean seconds of steps 1..steps (marks[k] = end of step k-1)."""
        return (self.marks[steps + 1] - self.marks[1]) / steps


# ---------------------------------------------------------------- the two timed runs
def our_task(base: Any) -> FARETask:
    return FARETask(copy.deepcopy(base), eps=EPS, step_size=STEP, attack_steps=ITERS, momentum=MOMENTUM, seed=0)


def our_config(steps: int, batch: int, precision: str, device: torch.device, tf32: bool = False) -> TrainConfig:
    return TrainConfig(steps=steps, batch_size=batch, lr=LR, weight_decay=WD, warmup_steps=WARMUP, betas=BETAS,
                       adam_eps=ADAM_EPS, grad_clip=None, precision=precision, ckpt_every=0, log_every=10**6,
                       device=str(device), tf32=tf32)


def compile_towers(towers: list[torch.nn.Module], backend: str | None) -> None:
    """``torch.compile`` the vision towers in place (``nn.Module.compile``: state-dict keys unchanged), the same
    open_clip module on both sides: the trained tower and the frozen reference."""
    if backend:
        for tower in towers:
            tower.compile(backend=backend)


def run_ours(base: Any, images: torch.Tensor, args: argparse.Namespace, device: torch.device) -> float:
    data = TimedImages(images, "ours", device)
    task = our_task(base)
    compile_towers([task.model.model.visual, task.reference], args.compile)
    with tempfile.TemporaryDirectory(prefix="bench_fare_") as out:  # our final checkpoint lands here
        train(task, data, our_config(args.steps + 2, args.batch, args.precision, device, args.tf32), out,
              progress=False)
    return data.per_step(args.steps)


def run_theirs(rv: SimpleNamespace, base: Any, images: torch.Tensor, args: argparse.Namespace,
               device: torch.device) -> float:
    """Their main()'s `while step_total < args.steps` over epochs of a shuffled, drop_last loader (l.147, 221)."""
    torch.manual_seed(0)  # their __main__ (l.532)
    s = their_setup(rv, base.visual, _stats(base.mean), _stats(base.std), device, args.steps + 2)
    compile_towers([s.model.model, s.model_orig.model], args.compile)
    data = TimedImages(images, "theirs", device)
    loader = torch.utils.data.DataLoader(data, batch_size=args.batch, shuffle=True, drop_last=True)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if args.theirs_autocast and device.type == "cuda"
                else contextlib.nullcontext())
    with fp32_matmuls(args.tf32, device):
        while s.step_total < args.steps + 2:
            for x, _ in loader:
                with autocast:
                    their_step(s, x)
                if s.step_total >= args.steps + 2:  # l.481-484
                    break
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    return data.per_step(args.steps)


def _stats(t: torch.Tensor) -> list[float]:
    return [float(v) for v in t.flatten()]


# ---------------------------------------------------------------- numerics and FLOPs
def check_numerics(rv: SimpleNamespace, base: Any, x: torch.Tensor, device: torch.device) -> dict[str, float]:
    """One fp32 step of each from the same weights and the same random start. Ours draws its start from
    FARETask's generator; theirs gets that start as ``perturbation`` (box-clamped as ours is, and raw)."""
    delta = random_delta(x, EPS, "linf", torch.Generator().manual_seed(0))  # what FARETask(seed=0) draws first
    same, raw, kernels = (x + delta).clamp(0, 1) - x, delta.clone(), [("", contextlib.nullcontext)]
    if device.type == "cpu":  # our encode_image forces the math attention kernel on CPU; also compare all-math
        kernels.append(("_math_kernel", lambda: sdpa_kernel(SDPBackend.MATH)))
    out: dict[str, float] = {}
    for suffix, kernel in kernels:
        with kernel():
            our_adv, our_loss = our_step_once(base, x, device)
            for name, start in (("same_start", same), ("raw_start", raw))[: 1 if suffix else 2]:
                s = their_setup(rv, base.visual, _stats(base.mean), _stats(base.std), device, 10)
                x_adv, loss = their_step(s, x, perturbation=start.clone())
                diff, key = (x_adv - our_adv).abs(), name + suffix
                out |= {f"{key}_max_abs_x_adv": float(diff.max()),
                        f"{key}_share_pixels_differ": float((diff > 1e-6).float().mean()), f"{key}_our_loss":
                        float(our_loss), f"{key}_their_loss": float(loss), f"{key}_abs_loss_diff":
                        float((loss - our_loss).abs())}
    return out


def our_step_once(base: Any, x: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """FARETask's forward on x (as the loop's step calls it), recording the adversarial images it makes."""
    task = our_task(base).to(device)
    seen: list[torch.Tensor] = []
    perturb = task.perturb
    task.perturb = lambda *a, **kw: seen.append(perturb(*a, **kw)) or seen[-1]  # no "index" in the batch:
    # the start comes from FARETask's generator, as in the timed runs
    task.train()
    loss = task({"image": x})["loss"].detach()
    return seen[0], loss


def count_flops(base: Any, x: torch.Tensor, device: torch.device) -> dict[str, float]:
    """Model FLOPs of one FARE step, counted with FlopCounterMode: reference forward (no grad) + ITERS x
    attack step (forward + input-gradient backward: no weight-gradient matmuls) + train forward + backward."""
    model = copy.deepcopy(base).to(device)
    with torch.no_grad():
        target = model.encode_image(x)

    def flops(fn: Callable[[], Any]) -> float:
        with FlopCounterMode(display=False) as counter:
            fn()
        return float(counter.get_total_flops())

    x_req = x.clone().requires_grad_(True)
    fwd = flops(lambda: model.encode_image(x))  # with grad on: no_grad takes nn.MultiheadAttention's fast path,
    # whose projections FlopCounterMode does not see (it undercounted ViT-L/14's forward by 1.56x)
    attack = flops(lambda: torch.autograd.grad(fare_loss(model.encode_image(x_req), target).sum(), x_req))
    step = flops(lambda: fare_loss(model.encode_image(x), target).mean().backward())
    total = fwd + ITERS * attack + step
    return {"forward": fwd, "attack_step": attack, "train_fwd_bwd": step, "fare_step": total,
            "fare_step_in_forwards": total / fwd}


# ---------------------------------------------------------------- main
def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--robustvlm", type=Path, default=None,
                   help="a checkout of github.com/chs20/RobustVLM (its train/ and vlm_eval/ folders suffice); without "
                        "it only our step is timed and the comparison is skipped")
    p.add_argument("--model", default="mmrobust-tiny", help="mmrobust-tiny, or an open_clip name (random init)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=10, help="timed steps per run (each run does 2 more)")
    p.add_argument("--reps", type=int, default=3, help="0: numerics check and FLOP count only")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="ours: bf16 autocast on CUDA; theirs runs in fp32 as their code does")
    p.add_argument("--theirs-autocast", action="store_true",
                   help="also wrap their step in bf16 autocast (not in their code; an apples-to-apples what-if)")
    p.add_argument("--compile", nargs="?", const="inductor", default=None, metavar="BACKEND",
                   help="torch.compile the vision towers on both sides (default backend inductor; aot_eager for a "
                        "cheap CPU check of the code path); the first of the steps + 2 steps, untimed, compiles")
    p.add_argument("--tf32", action="store_true", help="TF32 fp32 matmuls on CUDA, both sides (default: strict fp32, "
                   "as their code runs)")
    p.add_argument("--check-batch", type=int, default=16, help="batch of the numerics check (fp32; 0: skip it)")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="peak FLOP/s for MFU (H200 bf16 dense: 989)")
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args()


def time_sides(rv: SimpleNamespace | None, base: Any, images: torch.Tensor, args: argparse.Namespace,
               device: torch.device) -> dict[str, dict[str, list[float]]]:
    sides = ("mmrobust", "robustvlm") if rv is not None else ("mmrobust",)
    res: dict[str, dict[str, list[float]]] = {s: {"s_per_step": [], "peak_gib": []} for s in sides}
    for r in range(args.reps):
        for side in (sides if r % 2 == 0 else sides[::-1]):
            gc.collect()  # the previous run's models and optimizer state go before the peak is reset
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            t = (run_ours(base, images, args, device) if side == "mmrobust"
                 else run_theirs(rv, base, images, args, device))
            peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
            res[side]["s_per_step"].append(t)
            res[side]["peak_gib"].append(peak)
            mem = f", peak {peak:.1f} GiB" if device.type == "cuda" else ""
            print(f"rep {r} {side}: {1000 * t:.1f} ms/step{mem}", flush=True)
    return res


def report(args: argparse.Namespace, num: dict[str, float], flops: dict[str, float],
           res: dict[str, dict[str, list[float]]], device: torch.device) -> dict[str, Any]:
    times = {s: statistics.median(r["s_per_step"]) for s, r in res.items()}
    ours, theirs = times["mmrobust"], times.get("robustvlm", float("nan"))
    prec_theirs = ("not run (no --robustvlm checkout)" if "robustvlm" not in res else "bf16 autocast (added)"
                   if args.theirs_autocast and device.type == "cuda" else "fp32 (as their code)")
    prec_ours = args.precision if device.type == "cuda" else "fp32"
    compiled = f"torch.compile ({args.compile})" if args.compile else "eager"
    row = (f"| {args.model} | {args.batch} | {prec_ours} / {prec_theirs} | {compiled} | {1000 * ours:.1f} | "
           f"{1000 * theirs:.1f} | {theirs / ours:.2f}x |")
    head = ("| model | batch | precision ours / theirs | towers | mmrobust ms/step | RobustVLM ms/step "
            "| speed ratio ours / theirs |")
    paired = [t / o for o, t in zip(res["mmrobust"]["s_per_step"], res.get("robustvlm", {}).get("s_per_step", []))]
    summary: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "numerics": num, "flops": flops,
                               "times": res, "ms_ours": 1000 * ours, "ms_theirs": 1000 * theirs,
                               "ratio": theirs / ours, "ratio_per_rep": paired, "compile": args.compile,
                               "tf32": args.tf32, "precision_ours": prec_ours, "precision_theirs": prec_theirs}
    if device.type == "cuda":
        mfu = {s: flops["fare_step"] / t / (args.peak_tflops * 1e12) for s, t in times.items()}
        peaks = {s: max(res[s]["peak_gib"]) for s in res}
        head += " peak GiB ours / theirs | MFU ours / theirs |"
        row += (f" {peaks['mmrobust']:.1f} / {peaks.get('robustvlm', float('nan')):.1f} | "
                f"{100 * mfu['mmrobust']:.1f}% / {100 * mfu.get('robustvlm', float('nan')):.1f}% |")
        summary |= {"mfu": mfu, "peak_gib": peaks}
    print(f"\n{head}\n|{'---|' * (head.count('|') - 1)}\n{row}")
    print(f"ratio per repetition (theirs / ours, same rep): {', '.join(f'{r:.2f}' for r in paired) or 'none'}")
    return summary


def print_numerics(num: dict[str, float], flops: dict[str, float]) -> None:
    print(f"model FLOPs per FARE step: {flops['fare_step']:.3g} = {flops['fare_step_in_forwards']:.1f} x one vision "
          f"forward ({flops['forward']:.3g}); attack step {flops['attack_step'] / flops['forward']:.2f} x, "
          f"train fwd+bwd {flops['train_fwd_bwd'] / flops['forward']:.2f} x", flush=True)
    if not num:
        return
    print("numerics (fp32, one step, same weights):")
    print(f"  same start (theirs given our box-clamped start): max |x_adv diff| {num['same_start_max_abs_x_adv']:.3g}, "
          f"pixels differing {100 * num['same_start_share_pixels_differ']:.3f}%, FARE loss ours "
          f"{num['same_start_our_loss']:.6g} theirs {num['same_start_their_loss']:.6g} "
          f"(|diff| {num['same_start_abs_loss_diff']:.3g})")
    if "same_start_math_kernel_max_abs_x_adv" in num:
        print(f"  same start, both sides under the math attention kernel: max |x_adv diff| "
              f"{num['same_start_math_kernel_max_abs_x_adv']:.3g}, pixels differing "
              f"{100 * num['same_start_math_kernel_share_pixels_differ']:.3f}%, loss |diff| "
              f"{num['same_start_math_kernel_abs_loss_diff']:.3g}")
    print(f"  raw start (their semantics: x + delta NOT clamped to [0,1] before the first gradient): max |x_adv diff| "
          f"{num['raw_start_max_abs_x_adv']:.3g}, pixels differing {100 * num['raw_start_share_pixels_differ']:.3f}%, "
          f"loss |diff| {num['raw_start_abs_loss_diff']:.3g}")
    print("  differences by design: their first PGD gradient is taken at the unclamped start; they weight-decay all "
          "params (ours: not norms/biases/embeddings), use foreach AdamW (ours: fused) and run an extra clean "
          "forward with grad that no loss uses")


def main() -> None:
    args = parse()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rv = load_robustvlm(args.robustvlm.resolve()) if args.robustvlm else None
    if rv is None:
        print("RobustVLM: no checkout given (--robustvlm PATH): the comparison is skipped, our step alone is timed")
    base = create_clip(args.model, seed=0)  # random init (open_clip), kept on the CPU; each run copies it
    size = base.image_size
    images = torch.rand(args.batch * 2, 3, size, size, generator=torch.Generator().manual_seed(0))
    num = (check_numerics(rv, base, images[: args.check_batch].to(device), device)
           if rv is not None and args.check_batch > 0 else {})
    flops = count_flops(base, images[: args.batch].to(device), device)
    print_numerics(num, flops)
    summary = (report(args, num, flops, time_sides(rv, base, images, args, device), device) if args.reps > 0
               else {"args": {k: str(v) for k, v in vars(args).items()}, "numerics": num, "flops": flops})
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
