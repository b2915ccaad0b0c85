"""Every GPU benchmark in one run that fits 8 minutes on one H100, rows written into RESULTS.md with the machine.

Runs, each as its own process with its own time budget (killed and reported as such past it):

- ``bench_contrastive.py``: the CLIP step against open_clip_train's, ViT-B/32 (random init), batch 256, bf16
  autocast on both sides (samples/s, MFU, peak memory);
- ``bench_fare.py``: the FARE step against RobustVLM's at ViT-L/14 (random init), batch 128: strict fp32 on both
  sides (their code's precision), bf16 autocast on both, and bf16 with both towers under ``torch.compile``
  (fp32 + compile is left out: it would not fit the 8 minutes). Their code comes from a checkout carried to the
  machine (``--robustvlm PATH``: its ``train/`` and ``vlm_eval/`` folders suffice; the GPU machine has no
  network); without one the comparison row says it was skipped and our step alone is timed;
- ``bench_attacks.py``: PGD-10 / APGD-CE / the APGD-CE + APGD-T worst case against torchattacks / pyautoattack;
- ``bench_lvlm_attack.py``: untargeted APGD on the LM loss of a LLaVA-1.5-7B-shaped model (random weights,
  bf16) at batch 1 and 8.

``--dry-run`` runs the same code paths on the CPU with tiny shapes in about a minute (one step, one repetition;
``torch.compile`` with the cheap ``aot_eager`` backend; bf16 rows are GPU-only: on a CPU the loop trains in fp32)
and writes its rows to a scratch file (``--results``, default in a temporary folder), never to RESULTS.md.

    python benchmarks/gpu_suite.py --robustvlm /path/to/RobustVLM           # on the GPU machine (< 8 minutes)
    python benchmarks/gpu_suite.py --dry-run --robustvlm /path/to/RobustVLM  # CPU check, scratch results file

The budgets are estimates for an H100 (none was lent when this was written): a benchmark that runs over its
budget is stopped and its row says so, so the whole suite ends within its total.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
TOTAL_BUDGET_S = 480


@dataclass(frozen=True)
class Bench:
    """One benchmark run: its script, arguments on the GPU and in the dry run, time budget, needed packages."""

    key: str
    title: str
    script: str
    gpu_args: list[str]
    dry_args: list[str] | None  # None: not run in the dry run (the same code path as another entry on a CPU)
    budget_s: int
    needs: tuple[str, ...] = ()
    robustvlm: bool = False
    rows: Callable[[dict[str, Any]], list[str]] = field(default=lambda d: [])


# ---------------------------------------------------------------- rows of each benchmark's JSON
def _pct(x: Any) -> str:
    return f"{100 * x:.1f}%" if isinstance(x, (int, float)) else "-"


def _num(x: Any, fmt: str = ".1f") -> str:
    return format(x, fmt) if isinstance(x, (int, float)) and x == x else "-"


def contrastive_rows(d: dict[str, Any]) -> list[str]:
    peak = d.get("peak_gib") or {}
    return [f"| {d['model']} | {d['batch']} | {d['precision']} | {_num(d['ours_samples_s'], '.0f')} | "
            f"{_num(d['ref_samples_s'], '.0f')} | {d['ratio']:.2f}x | {_pct(d.get('ours_mfu'))} / "
            f"{_pct(d.get('ref_mfu'))} | {_num(peak.get('mmrobust'))} / {_num(peak.get('open_clip_train'))} |"]


CONTRASTIVE_HEAD = ["| model | batch | precision | mmrobust samples/s | open_clip_train samples/s | "
                    "speed ratio ours / theirs | MFU ours / theirs | peak GiB ours / theirs |",
                    "|---|---:|---|---:|---:|---:|---:|---:|"]


def fare_rows(d: dict[str, Any]) -> list[str]:
    args, mfu, peak = d["args"], d.get("mfu") or {}, d.get("peak_gib") or {}
    towers = f"torch.compile ({d['compile']})" if d.get("compile") else "eager"
    theirs = d["precision_theirs"]
    return [f"| {args['model']} | {args['batch']} | {d['precision_ours']} / {theirs} | {towers} | "
            f"{_num(d['ms_ours'])} | {_num(d['ms_theirs'])} | {_num(d['ratio'], '.2f')}x | "
            f"{_pct(mfu.get('mmrobust'))} / {_pct(mfu.get('robustvlm'))} | {_num(peak.get('mmrobust'))} / "
            f"{_num(peak.get('robustvlm'))} |"]


FARE_HEAD = ["| model | batch | precision ours / theirs | towers | mmrobust ms/step | RobustVLM ms/step | "
             "speed ratio ours / theirs | MFU ours / theirs | peak GiB ours / theirs |",
             "|---|---:|---|---|---:|---:|---:|---:|---:|"]


def attack_rows(d: dict[str, Any]) -> list[str]:
    return [f"| {r['comparison']} | {r['ours_img_s']:.1f} | {r['ref_img_s']:.1f} | {r['speed_ratio']:.2f}x | "
            f"{_pct(r['ours_robust_acc'])} | {_pct(r['ref_robust_acc'])} |" for r in d["rows"]]


ATTACK_HEAD = ["| comparison | ours img/s | reference img/s | speed ratio ours / reference | robust acc ours | "
               "robust acc reference |", "|---|---:|---:|---:|---:|---:|"]


def _params(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def lvlm_rows(d: dict[str, Any]) -> list[str]:
    return [f"| {d['shape']} ({_params(d['n_params'])} params) | {d['dtype']} | {r['batch']} | {r['steps']} | "
            f"{r['seconds_per_step']:.3f} | {_num(r.get('peak_gib'))} |" for r in d["rows"]]


LVLM_HEAD = ["| model | dtype | batch | APGD steps | s / step | peak GiB |", "|---|---|---:|---:|---:|---:|"]
HEADS = {"contrastive": CONTRASTIVE_HEAD, "fare": FARE_HEAD, "attacks": ATTACK_HEAD, "lvlm": LVLM_HEAD}


# ---------------------------------------------------------------- the suite
def benches() -> list[Bench]:
    """GPU settings sized for one H100 (estimates: budgets sum to 450 s of the 480 s total)."""
    cuda = ["--device", "cuda"]
    fare_gpu = ["--model", "ViT-L-14", "--batch", "128", *cuda, "--peak-tflops"]
    fare_dry = ["--model", "mmrobust-micro", "--batch", "4", "--steps", "1", "--reps", "1", "--threads", "1"]
    return [
        Bench("contrastive", "Contrastive step vs open_clip_train", "bench_contrastive.py",
              ["--model", "ViT-B-32", "--batch", "256", "--precision", "bf16", *cuda, "--steps", "30", "--reps", "2",
               "--peak-tflops", "989"],
              ["--model", "mmrobust-micro", "--batch", "8", "--steps", "2", "--reps", "1", "--threads", "1",
               "--n-pairs", "32"], 60, needs=("open_clip_train",), rows=contrastive_rows),
        Bench("fare", "FARE step vs RobustVLM, fp32", "bench_fare.py",
              [*fare_gpu, "67", "--precision", "fp32", "--steps", "1", "--reps", "1", "--check-batch", "8"],
              [*fare_dry, "--check-batch", "2"], 120, robustvlm=True, rows=fare_rows),
        Bench("fare", "FARE step vs RobustVLM, bf16", "bench_fare.py",
              [*fare_gpu, "989", "--precision", "bf16", "--theirs-autocast", "--steps", "3", "--reps", "1",
               "--check-batch", "0"], None, 50, robustvlm=True, rows=fare_rows),
        Bench("fare", "FARE step vs RobustVLM, bf16, torch.compile", "bench_fare.py",
              [*fare_gpu, "989", "--precision", "bf16", "--theirs-autocast", "--compile", "inductor", "--steps", "3",
               "--reps", "1", "--check-batch", "0"],
              [*fare_dry, "--check-batch", "0", "--compile", "aot_eager"], 130, robustvlm=True, rows=fare_rows),
        Bench("attacks", "Attacks vs torchattacks / pyautoattack", "bench_attacks.py",
              [*cuda, "--n", "1000", "--width", "4", "--reps", "3"],
              ["--n", "16", "--steps", "4", "--pgd-steps", "2", "--targets", "2", "--reps", "1", "--threads", "1"],
              30, needs=("torchattacks", "pyautoattack"), rows=attack_rows),
        Bench("lvlm", "APGD on the LM loss of a LLaVA-1.5-7B-shaped model", "bench_lvlm_attack.py",
              ["--shape", "llava-1.5-7b", *cuda, "--batch", "1", "8", "--steps", "5"],
              ["--shape", "tiny", "--dtype", "fp32", "--batch", "1", "2", "--steps", "2"], 60,
              needs=("transformers",), rows=lvlm_rows),
    ]


def machine(dry_run: bool) -> str:
    """GPU name (nvidia-smi), torch and CUDA versions; on a CPU the processor and core count."""
    import torch

    gpu = "no GPU"
    if shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        gpu = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "nvidia-smi failed"
    where = "CPU dry run" if dry_run else "GPU"
    return (f"{where}: {gpu}; torch {torch.__version__}, CUDA {torch.version.cuda or 'none'}; "
            f"{platform.machine()} {os.cpu_count()} cores; {datetime.date.today().isoformat()}")


def _missing(b: Bench) -> str | None:
    gone = [m for m in b.needs if importlib.util.find_spec(m) is None]
    if gone:
        return f"skipped: {', '.join(gone)} not installed (pip install them, see benchmarks/README.md)"
    return None


def run_one(b: Bench, *, args: argparse.Namespace, work: Path, python: str, remaining: float) -> dict[str, Any]:
    """Run one benchmark in its own process within its budget; its JSON, the wall time and a status line."""
    why = _missing(b)
    if why:
        return {"status": why, "seconds": 0.0}
    budget = min(b.budget_s * (args.budget_scale or 1.0), remaining)
    if budget < 5:
        return {"status": f"skipped: the suite's {args.total_budget} s were spent", "seconds": 0.0}
    out = work / f"{len(list(work.glob('*.json')))}-{b.key}.json"
    argv = [python, str(HERE / b.script), *(b.dry_args if args.dry_run else b.gpu_args), "--json", str(out)]
    if b.robustvlm and args.robustvlm:
        argv += ["--robustvlm", str(args.robustvlm)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parent / "src"),
                                                                      os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=budget, env=env)
    except subprocess.TimeoutExpired:
        return {"status": f"timed out: stopped at its budget of {budget:.0f} s", "seconds": budget}
    seconds = time.perf_counter() - start
    (work / f"{out.stem}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0 or not out.is_file():
        last = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1][:200]
        return {"status": f"failed (exit {proc.returncode}): {last}", "seconds": seconds}
    return {"status": "ok", "seconds": seconds, "data": json.loads(out.read_text())}


def _status_note(b: Bench, res: dict[str, Any], robustvlm: Path | None) -> str:
    if res["status"] != "ok":
        return f"{b.title}: {res['status']}"
    note = f"{b.title}: {res['seconds']:.0f} s (budget {b.budget_s} s)"
    if b.robustvlm and robustvlm is None:
        note += ("; RobustVLM comparison skipped: no checkout given (--robustvlm PATH to a chs20/RobustVLM checkout "
                 "carried to the machine), our step alone timed")
    return note


def section(results: list[tuple[Bench, dict[str, Any]]], *, args: argparse.Namespace, header: str,
            total_s: float) -> str:
    """The markdown section: machine, command, per-benchmark status and wall time, one table per benchmark."""
    cmd = "python benchmarks/gpu_suite.py" + (" --dry-run" if args.dry_run else "") + \
        (" --robustvlm PATH" if args.robustvlm else "")
    title = "GPU suite dry run (CPU, tiny shapes: checks the code paths, not a timing)" if args.dry_run else "GPU suite"
    lines = [f"## {title} — {header}", "", f"`{cmd}` — {total_s:.0f} s in all (budget {args.total_budget} s).", ""]
    lines += [f"- {_status_note(b, r, args.robustvlm)}" for b, r in results]
    for key in HEADS:
        rows = [row for b, r in results if b.key == key and r["status"] == "ok" for row in b.rows(r["data"])]
        if rows:
            lines += ["", *HEADS[key], *rows]
    return "\n".join(lines) + "\n"


def append_section(path: Path, text: str) -> None:
    old = path.read_text() if path.is_file() else "# Benchmark results\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(old.rstrip("\n") + "\n\n" + text)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--robustvlm", type=Path, default=None, help="a chs20/RobustVLM checkout (train/ and vlm_eval/)")
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes, seconds per benchmark; scratch results")
    p.add_argument("--results", type=Path, default=None,
                   help=f"markdown file the section is appended to (default: {RESULTS} on a GPU, a scratch file in "
                        "a temporary folder in the dry run, which never writes RESULTS.md)")
    p.add_argument("--only", default=None, help="comma-separated keys: contrastive, fare, attacks, lvlm")
    p.add_argument("--total-budget", type=int, default=TOTAL_BUDGET_S, help="seconds for the whole suite")
    p.add_argument("--budget-scale", type=float, default=None, help="multiply every benchmark's budget (slow machines)")
    args = p.parse_args(argv)
    if args.robustvlm is not None and not (args.robustvlm / "train" / "adversarial_training_clip.py").is_file():
        p.error(f"--robustvlm {args.robustvlm} has no train/adversarial_training_clip.py; pass a RobustVLM checkout")
    if args.dry_run and args.results is not None and args.results.resolve() == RESULTS.resolve():
        p.error("the dry run never writes benchmarks/RESULTS.md; pass another --results file or leave it out")
    return args


def main(argv: list[str] | None = None) -> Path:
    args = parse(argv)
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: run on the GPU machine, or check the code paths with --dry-run")
    work = Path(tempfile.mkdtemp(prefix="gpu_suite_"))
    results_path = args.results or (work / "RESULTS.md" if args.dry_run else RESULTS)
    chosen = [b for b in benches() if (not args.dry_run or b.dry_args is not None)
              and (args.only is None or b.key in args.only.split(","))]
    header, start, done = machine(args.dry_run), time.perf_counter(), []
    for b in chosen:
        res = run_one(b, args=args, work=work, python=sys.executable,
                      remaining=args.total_budget - (time.perf_counter() - start))
        done.append((b, res))
        print(_status_note(b, res, args.robustvlm), flush=True)
    append_section(results_path, section(done, args=args, header=header, total_s=time.perf_counter() - start))
    print(f"rows -> {results_path} (logs in {work})")
    return results_path


if __name__ == "__main__":
    main()
