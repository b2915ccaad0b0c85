"""`mmrobust demo`: the embedded stories end to end on the synthetic world, offline, on a laptop CPU."""
from __future__ import annotations

import argparse
import importlib
import time
from pathlib import Path

from mmrobust.reports.records import write_results

STORIES = {  # name -> (module, function) of a library story taking (out_dir, progress=..., log=...)
    "backdoor": ("mmrobust.pipelines.demo_backdoor", "run_backdoor_demo"),
    "adversarial": ("mmrobust.pipelines.demo_adversarial", "run_adversarial_demo"),
    "mmr": ("mmrobust.pipelines.demo_mmr", "run_mmr_demo"),
}


def available() -> list[str]:
    out = []
    for name, (mod, _) in STORIES.items():
        try:
            importlib.import_module(mod)
            out.append(name)
        except ModuleNotFoundError as e:
            print(f"(skipping the {name} story: {e}; install the missing package to run it)")
    return out


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the embedded stories (backdoor, adversarial, MMR) on synthetic data",
                       description="Generate a synthetic world, then attack, defend and measure a tiny CLIP (and a "
                                   "tiny LLaVA for MMR). Finished stages are reused when re-run with the same settings.")
    p.add_argument("--out", default="runs/demo", help="run directory (default runs/demo)")
    p.add_argument("--story", action="append", choices=list(STORIES),
                   help="story to run (repeatable; default: all available)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    stories = args.story or available()
    summary = {}
    for name in stories:
        mod, fn = STORIES[name]
        start = time.time()
        print(f"== {name} story -> {out / name}", flush=True)
        result = getattr(importlib.import_module(mod), fn)(out / name, progress=not args.quiet,
                                                           log=lambda m: print(m, flush=True))
        seconds = time.time() - start
        print(f"\n{result['table']}\n({name} story: {seconds:.0f} s; plot {result['plot']})\n", flush=True)
        summary[name] = {"seconds": round(seconds, 1), "table": result["table"], "plot": result["plot"]}
    write_results(out, kind="demo", metrics=summary, config={"stories": stories})
    try:
        from mmrobust.reports.html import write_report

        print(f"report: {write_report([out / s for s in stories], out / 'report.html')}")
    except ModuleNotFoundError:
        pass
    return 0
