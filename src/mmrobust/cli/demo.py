"""`mmrobust demo`: the embedded stories end to end on the synthetic world, offline, on a laptop CPU."""
from __future__ import annotations

import argparse
import importlib
import time
from pathlib import Path

from mmrobust.errors import ConfigError
from mmrobust.pipelines.overrides import apply_overrides
from mmrobust.reports.contract import Record, write_record

STORIES = {  # name -> (module, function, settings class) of a library story taking (out_dir, [settings,] progress, log)
    "backdoor": ("mmrobust.pipelines.demo_backdoor", "run_backdoor_demo", "BackdoorDemo"),
    "adversarial": ("mmrobust.pipelines.demo_adversarial", "run_adversarial_demo", "AdversarialDemo"),
    "mmr": ("mmrobust.pipelines.demo_mmr_trained", "run_mmr_trained_demo", "MMRTrainedDemo"),
    "lvlm": ("mmrobust.pipelines.demo_lvlm", "run_lvlm_demo", "LVLMDemo"),
}


def available() -> list[str]:
    out = []
    for name, (mod, _, _) in STORIES.items():
        try:
            importlib.import_module(mod)
            out.append(name)
        except ModuleNotFoundError as e:
            print(f"(skipping the {name} story: {e}; install the missing package to run it)")
    return out


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the embedded stories (backdoor, adversarial, MMR, LVLM) on synthetic data",
                       description="Generate a synthetic world, then attack, defend and measure a tiny CLIP (and a "
                                   "tiny LLaVA for MMR). Finished stages are reused when re-run with the same settings.")
    p.add_argument("--out", default="runs/demo", help="run directory (default runs/demo)")
    p.add_argument("--story", action="append", choices=list(STORIES),
                   help="story to run (repeatable; default: all available)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--set", action="append", default=[], metavar="STORY.KEY=VALUE",
                   help="override a story setting, e.g. backdoor.finetune_lr=1e-3 or "
                        "backdoor.trigger_params.pattern=random_noise (repeatable; see the settings classes "
                        "BackdoorDemo, AdversarialDemo, MMRTrainedDemo and LVLMDemo)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    stories = args.story or available()
    settings = _settings(stories, _overrides(args.set, stories))  # all checked before anything runs
    summary = {}
    for name in stories:
        start = time.time()
        print(f"== {name} story -> {out / name}", flush=True)
        story = getattr(importlib.import_module(STORIES[name][0]), STORIES[name][1])
        result = story(out / name, *settings[name], progress=not args.quiet, log=lambda m: print(m, flush=True))
        seconds = time.time() - start
        print(f"\n{result['table']}\n({name} story: {seconds:.0f} s; plot {result['plot']})\n", flush=True)
        summary[name] = {"seconds": round(seconds, 1), "table": result["table"], "plot": result["plot"]}
    write_record(out, Record(kind="demo", metrics=summary, config={"stories": stories, "set": args.set}))
    try:
        from mmrobust.reports.html import write_report

        print(f"report: {write_report([out / s for s in stories], out / 'report.html')}")
    except ModuleNotFoundError:
        pass
    return 0


def _settings(stories: list[str], overrides: dict[str, list[str]]) -> dict[str, tuple]:
    """Each story's settings object with its overrides applied (empty for stories without settings)."""
    out: dict[str, tuple] = {}
    for name in stories:
        mod, _, cls = STORIES[name]
        if cls:
            defaults = getattr(importlib.import_module(mod), cls)()
            out[name] = (apply_overrides(defaults, overrides.get(name, [])),)
        else:
            out[name] = ()
    return out


def _overrides(assignments: list[str], stories: list[str]) -> dict[str, list[str]]:
    """Group ``story.key=value`` items by story; a story without settings or not being run is an error."""
    grouped: dict[str, list[str]] = {}
    for item in assignments:
        story, _, rest = item.partition(".")
        if story not in stories or STORIES[story][2] is None:
            runnable = [s for s in stories if STORIES[s][2]]
            raise ConfigError(f"--set {item!r}: prefix the key with a story being run that has settings "
                              f"({', '.join(runnable) or 'none'}), e.g. backdoor.finetune_steps=300")
        grouped.setdefault(story, []).append(rest)
    return grouped
