"""Benchmark: mmrobust attacks against torchattacks (PGD) and pyautoattack (APGD-CE, worst case).

Same seeded model, data and settings on both sides; repetitions are interleaved (ours, theirs,
theirs, ours, ...) so machine load hits both alike. Prints a markdown table of images per second,
the speed ratio (ours / reference, > 1 means we are faster) and robust accuracies side by side.

    python benchmarks/bench_attacks.py --threads 1           # CPU, 200 images, eps 1/255
    python benchmarks/bench_attacks.py --device cuda --n 1000 --width 4 --json bench.json

Run by hand; not part of the test suite. Needs torchattacks and pyautoattack installed.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

import torch
from torch import Tensor, nn

from mmrobust.attacks import autoattack
from mmrobust.registry import ATTACKS


def build_model(width: int, n_classes: int, seed: int, device: str) -> nn.Module:
    """A small conv net on 3x32x32 images in [0, 1] (normalization inside), random init."""
    torch.manual_seed(seed)  # a script, not the library: seeding the global RNG is fine here
    net = nn.Sequential(
        nn.Conv2d(3, 8 * width, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(8 * width, 16 * width, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(16 * width * 8 * 8, n_classes),
    )
    return _Normalized(net).to(device).eval()


class _Normalized(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net((x - 0.5) / 0.25)


def build_data(model: nn.Module, n: int, seed: int, device: str) -> tuple[Tensor, Tensor]:
    """Smooth random images labelled by the model itself (clean accuracy 100%)."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 8, 8, generator=gen)
    x = nn.functional.interpolate(coarse, size=32, mode="bilinear", align_corners=False).clamp(0, 1).to(device)
    with torch.no_grad():
        return x, model(x).argmax(1)


def robust_acc(model: nn.Module, x_adv: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return (model(x_adv).argmax(1) == y).float().mean().item()


def comparisons(model: nn.Module, x: Tensor, y: Tensor, args: argparse.Namespace) -> dict[str, tuple[Callable, Callable]]:
    """name -> (ours, reference), each a no-argument callable returning adversarial images."""
    import pyautoattack
    import torchattacks
    from pyautoattack.autopgd_base import APGDAttack

    eps, dev = args.eps, args.device
    alpha = 2.5 * eps / args.pgd_steps

    def ref_worst() -> Tensor:
        aa = pyautoattack.AutoAttack(model, norm="Linf", eps=eps, version="custom", seed=0,
                                     attacks=["apgd-ce", "apgd-t"], device=dev)
        aa.apgd.n_restarts, aa.apgd.n_iter = 1, args.steps
        aa.apgd_targeted.n_target_classes, aa.apgd_targeted.n_iter = args.targets, args.steps
        for a in (aa.apgd, aa.apgd_targeted):  # n_iter changes the checkpoint lengths too
            a.n_iter_2, a.n_iter_min, a.size_decr = (max(int(f * args.steps), 1) for f in (0.22, 0.06, 0.03))
        return aa.run_standard_evaluation(x, y, batch_size=len(x))[0]

    return {
        f"PGD-{args.pgd_steps} l-inf vs torchattacks.PGD": (
            lambda: ATTACKS.get("pgd")(model, x, y, eps=eps, steps=args.pgd_steps, step_size=alpha, seed=0).x_adv,
            lambda: torchattacks.PGD(model, eps=eps, alpha=alpha, steps=args.pgd_steps, random_start=True)(x, y),
        ),
        f"APGD-CE ({args.steps} steps) vs pyautoattack": (
            lambda: ATTACKS.get("apgd-ce")(model, x, y, eps=eps, steps=args.steps, seed=0).x_adv,
            lambda: APGDAttack(model, n_iter=args.steps, eps=eps, seed=0, device=dev).perturb(x, y),
        ),
        f"worst case APGD-CE + APGD-T ({args.targets} targets) vs pyautoattack": (
            lambda: autoattack(model, x, y, eps=eps, steps=args.steps, seed=0,
                               attack_kwargs={"apgd-t": {"n_target_classes": args.targets}}).x_adv,
            ref_worst,
        ),
    }


def timed(fn: Callable[[], Tensor], device: str) -> tuple[float, Tensor]:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    torch.manual_seed(0)  # torchattacks' random start and pyautoattack draw from the global RNG
    model = build_model(args.width, 10, seed=0, device=args.device)
    x, y = build_data(model, args.n, seed=0, device=args.device)
    rows = []
    for name, (ours, ref) in comparisons(model, x, y, args).items():
        times: dict[str, list[float]] = {"ours": [], "ref": []}
        accs: dict[str, float] = {}
        timed(ours, args.device), timed(ref, args.device)  # warm-up (allocator, kernels)
        for rep in range(args.reps):
            order = [("ours", ours), ("ref", ref)] if rep % 2 == 0 else [("ref", ref), ("ours", ours)]
            for side, fn in order:
                seconds, x_adv = timed(fn, args.device)
                times[side].append(seconds)
                accs[side] = robust_acc(model, x_adv, y)
        t_ours, t_ref = statistics.median(times["ours"]), statistics.median(times["ref"])
        rows.append(dict(comparison=name, ours_img_s=args.n / t_ours, ref_img_s=args.n / t_ref,
                         speed_ratio=t_ref / t_ours, ours_robust_acc=accs["ours"], ref_robust_acc=accs["ref"],
                         ours_seconds=times["ours"], ref_seconds=times["ref"]))
    return rows


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    head = (f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"n={args.n}, eps={args.eps * 255:g}/255 (l-inf), width {args.width}, "
            f"median of {args.reps} interleaved reps\n\n")
    lines = ["| comparison | ours img/s | reference img/s | speed ratio (ours/ref) | robust acc ours | robust acc ref |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['comparison']} | {r['ours_img_s']:.1f} | {r['ref_img_s']:.1f} | {r['speed_ratio']:.2f}x "
                     f"| {100 * r['ours_robust_acc']:.1f}% | {100 * r['ref_robust_acc']:.1f}% |")
    return head + "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--n", type=int, default=200, help="number of images")
    p.add_argument("--eps", type=parse_fraction, default=1 / 255, help="l-inf eps, e.g. 1/255")
    p.add_argument("--steps", type=int, default=100, help="APGD iterations")
    p.add_argument("--pgd-steps", type=int, default=10)
    p.add_argument("--targets", type=int, default=9, help="APGD-T target classes")
    p.add_argument("--width", type=int, default=1, help="channel multiplier of the conv net")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (1 avoids thread oversubscription on small, shared machines)")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = p.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but CUDA is not available")
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run(args)
    print(markdown(rows, args))
    if args.json:
        from mmrobust.jsonio import write_json

        write_json(args.json, {"settings": vars(args), "torch": torch.__version__, "rows": rows})


def parse_fraction(text: str) -> float:
    """'4/255' -> 0.01568...; '0.01' -> 0.01."""
    num, _, den = text.partition("/")
    return float(num) / float(den) if den else float(num)


if __name__ == "__main__":
    main()
