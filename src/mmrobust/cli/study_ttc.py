"""`mmrobust study ttc`: TTC (test-time counterattacks) on the demo's CLIPs over seeds, the paper's protocol beside
the adaptive attack (:mod:`mmrobust.stories.defense_study`)."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from mmrobust.cli.common import device, eps_list, key_values, positive_int, print_warnings, seed_list, with_config
from mmrobust.cli.options import add_settings, settings_from


def register_ttc(actions: argparse._SubParsersAction) -> None:
    from mmrobust.attacks.adaptive import BACKWARDS
    from mmrobust.eval.defended import WARM_STARTS, DefendedSettings
    from mmrobust.stories.defense_study import MODEL_PATH

    t = actions.add_parser(
        "ttc", help="TTC on the demo's CLIPs over seeds: paper protocol vs adaptive attack",
        description="For each seed of a `mmrobust demo --seeds` run: attack the adversarial story's plain CLIP, "
                    "counterattack its adversarial images with TTC (the paper's protocol, not robustness), attack "
                    "through TTC (EOT over its random start; by default warm-started from the paper-protocol images), "
                    "and take the worst case per image; then mean ± sd "
                    "(min-max) over the seeds. Resumable seed by seed; nothing is written under --runs.")
    t.add_argument("--runs", required=True, help="the --out of `mmrobust demo --seeds ...` (read only)")
    t.add_argument("--model-path", default=MODEL_PATH, help=f"the CLIP inside RUNS/seed-K (default {MODEL_PATH})")
    t.add_argument("--seeds", default="0,1,2", metavar="0,1,2", help="seeds (default 0,1,2)")
    t.add_argument("--out", default="runs/study-ttc", help="run directory (default runs/study-ttc)")
    t.add_argument("--steps", type=positive_int, help="attack iterations (the same as --attack-opt steps=N)")
    add_settings(t, DefendedSettings, skip=("defense", "seed"), types={"eps": eps_list, "device": device},
                 choices={"norm": ["linf", "l2"], "backward": BACKWARDS, "warm_start": WARM_STARTS})
    t.set_defaults(action=run_ttc)
    with_config(t, "action")


def run_ttc(args: argparse.Namespace) -> int:
    from mmrobust.eval.defended import DefendedSettings
    from mmrobust.stories.defense_study import run_defense_study

    fixed = {"attack_options": {**key_values(args.attack_options), **({"steps": args.steps} if args.steps else {})}}
    settings = settings_from(args, DefendedSettings, defense="ttc", **fixed)
    start = time.time()
    result = run_defense_study(runs=Path(args.runs), seeds=seed_list(args.seeds), out_dir=Path(args.out),
                               settings=settings, model_path=args.model_path, log=lambda m: print(m, flush=True))
    print(f"\n{result['table']}\n({time.time() - start:.0f} s; {Path(args.out) / 'summary.md'})", flush=True)
    print_warnings(result["record"].get("warnings"))
    return 0
