"""`mmrobust demo`: the embedded stories end to end on the synthetic world, offline, on a laptop CPU."""
from __future__ import annotations

import argparse
import importlib
import time
from pathlib import Path

from mmrobust.errors import ConfigError
from mmrobust.cli.common import seed_list
from mmrobust.stories.overrides import apply_overrides
from mmrobust.stories.seeds import STORIES, run_seeds
from mmrobust.reports.contract import Record, write_record



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
    p.add_argument("--seeds", default=None, metavar="0,1,2,3,4",
                   help="run every story at each of these seeds (world and training seeds both vary) into "
                        "OUT/seed-K/, then write mean ± spread tables and the headline effects checked at every "
                        "seed into OUT/<story>/ (default: one run with the settings' seed, into OUT/<story>/)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    stories = args.story or available()
    settings = _settings(stories, _overrides(args.set, stories))  # all checked before anything runs
    if args.seeds is not None:
        return _run_seeds(out, stories, settings, seed_list(args.seeds), quiet=args.quiet)
    print("(one seed: numbers vary across seeds and machines; `mmrobust demo --seeds 0,1,2,3,4` gives the "
          "spread and checks each story's effects at every seed)", flush=True)
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


def _run_seeds(out: Path, stories: list[str], settings: dict[str, tuple], seeds: list[int], *, quiet: bool) -> int:
    start = time.time()
    given = {name: s[0] for name, s in settings.items() if s}
    results = run_seeds(stories, seeds=seeds, out_dir=out, settings=given, progress=not quiet,
                        log=lambda m: print(m, flush=True))
    for name, agg in results.items():
        print(f"\n{agg['table']}\n(plot {agg['plot']})", flush=True)
        for c in agg["claims"]:
            if c["verdict"] != "holds":
                print(f"warning: {name}: {c['description']} {c['bar']}: {c['verdict']} (worst seed "
                      f"{c['worst_seed']}: {c['worst']:.3f})", flush=True)
    write_record(out, Record(kind="demo.seeds", metrics={n: {"claims": r["claims"]} for n, r in results.items()},
                             config={"stories": stories, "seeds": seeds}, seeds={"seeds": seeds}))
    from mmrobust.reports.html import write_report

    print(f"report: {write_report([out / s for s in stories], out / 'report.html')} "
          f"({time.time() - start:.0f} s)")
    return 0
