"""`mmrobust study backdoor`: the attack x defense matrix over seeds on the embedded world; `study instructions`:
instruction-data backdoors of the tiny LLaVA; `study robust-ft`: cheaper robust finetuning (cost vs accuracy)."""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Callable

from mmrobust.cli.common import run_subaction, seed_list, with_config
from mmrobust.cli.options import add_settings, settings_from


def register(sub: argparse._SubParsersAction) -> None:
    from mmrobust.stories.study import ATTACKS, DEFENSES, REFERENCES, BackdoorStudy

    p = sub.add_parser("study", help="the backdoor attack x defense matrix; instruction-data backdoors; cheaper "
                                     "robust finetuning; TTC",
                       description="Studies that cross many runs into one table.")
    p.set_defaults(func=lambda a: run_subaction(a, "action", "_study"), _study=p)
    actions = p.add_subparsers(dest="study", metavar="STUDY")
    b = actions.add_parser(
        "backdoor", help="every attack x every defense x seeds: clean accuracy, ASR, detection AUROC",
        description="For each seed (a new world and training seeds) and attack: poison the world, pretrain a CLIP, "
                    "score every pair with a poisoned-pair detector; then each defense. Resumable cell by cell; "
                    f"attacks: {', '.join(ATTACKS)}; defenses: {', '.join(DEFENSES)}.")
    b.add_argument("--out", default="runs/study", help="run directory (default runs/study); the matrix goes into "
                   "OUT/matrix/")
    b.add_argument("--seeds", default="0,1,2", metavar="0,1,2", help="seeds (default 0,1,2)")
    add_settings(b, BackdoorStudy, choices={"detector": _detectors(), "reference": list(REFERENCES)},
                 types={"attacks": _names, "defenses": _names})
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a budget of the backdoor story's settings (BackdoorDemo), e.g. pretrain_steps=400 "
                        "or poison_rate=0.03 (repeatable)")
    b.add_argument("--quiet", action="store_true", help="no progress bars")
    b.set_defaults(action=run_backdoor)
    with_config(b, "action")
    _register_instructions(actions)
    _register_robust_ft(actions)
    from mmrobust.cli.study_ttc import register_ttc

    register_ttc(actions)


def _register_robust_ft(actions: argparse._SubParsersAction) -> None:
    from mmrobust.cli.common import eps_list, parse_eps
    from mmrobust.stories.robust_ft import METHODS, RobustFTStudy

    r = actions.add_parser(
        "robust-ft", help="cheaper robust finetuning: FARE with PGD-10, FGSM-RS, LoRA; cost against accuracy",
        description="For each seed of a finished `mmrobust demo --seeds` run (its adversarial story's clean CLIP "
                    "and world, read only): FARE finetunes at the story's budget with each method, the tower "
                    "passes per step counted, the time per step measured (as a ratio to PGD-10), clean and "
                    f"worst-case accuracy evaluated; one table over the seeds. Methods: {', '.join(METHODS)}.")
    r.add_argument("--out", default="runs/robust-ft", help="run directory (default runs/robust-ft); the table goes "
                   "into OUT/robust-ft/")
    r.add_argument("--seeds", default="0,1,2", metavar="0,1,2", help="seeds (default 0,1,2)")
    add_settings(r, RobustFTStudy,
                 types={"methods": _names, "eps": parse_eps, "eval_eps": lambda t: tuple(eps_list(t))})
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.set_defaults(action=run_robust_ft)
    with_config(r, "action")


def _register_instructions(actions: argparse._SubParsersAction) -> None:
    from mmrobust.stories.instruction_study import ATTACKS, InstructionStudy

    i = actions.add_parser(
        "instructions", help="instruction-data backdoors of the tiny LLaVA: ASR, clean accuracy, filter, retrain",
        description="For each seed: finetune the MMR story's baseline LLaVA on a VQA set, clean and with each "
                    "attack's poisoned rows; measure ASR and clean accuracy; filter the poisoned set with the audit "
                    "(image and text embeddings) and finetune again. Resumable stage by stage; attacks: "
                    f"{', '.join(ATTACKS)}.")
    i.add_argument("--out", default="runs/demo", help="run directory (default runs/demo, where `mmrobust demo --seeds` "
                   "puts the baselines it shares); the aggregate goes into OUT/instructions/")
    i.add_argument("--seeds", default="0,1,2", metavar="0,1,2", help="seeds (default 0,1,2)")
    add_settings(i, InstructionStudy, choices={"detector": _detectors()}, types={"attacks": _names})
    i.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting of the MMR story's baseline (MMRTrainedDemo), e.g. base_steps=400")
    i.add_argument("--quiet", action="store_true", help="no progress bars")
    i.set_defaults(action=run_instructions)
    with_config(i, "action")


def _names(text: str) -> tuple[str, ...]:
    """``badnet,blended`` as a tuple of names (checked against the known ones by the settings)."""
    return tuple(n.strip() for n in text.split(",") if n.strip())


def _detectors() -> list[str]:
    from mmrobust.registry import DETECTORS

    return DETECTORS.list()


def run_backdoor(args: argparse.Namespace) -> int:
    from mmrobust.stories.backdoor import BackdoorDemo
    from mmrobust.stories.overrides import apply_overrides
    from mmrobust.stories.study import BackdoorStudy, run_study

    base = apply_overrides(BackdoorDemo(), args.set)
    return _run_study(args, run_study, settings_from(args, BackdoorStudy), base, "matrix")


def run_instructions(args: argparse.Namespace) -> int:
    from mmrobust.stories.instruction_study import InstructionStudy, run_instruction_study
    from mmrobust.stories.mmr_trained import MMRTrainedDemo
    from mmrobust.stories.overrides import apply_overrides

    base = apply_overrides(MMRTrainedDemo(), args.set)
    return _run_study(args, run_instruction_study, settings_from(args, InstructionStudy), base, "instructions")


def run_robust_ft(args: argparse.Namespace) -> int:
    from mmrobust.stories.robust_ft import RobustFTStudy, run_robust_ft as run

    seeds, start = seed_list(args.seeds), time.time()
    result = run(settings_from(args, RobustFTStudy), seeds=seeds, out_dir=Path(args.out), progress=not args.quiet,
                 log=lambda m: print(m, flush=True))
    print(f"\n{result['table']}\n\n{result['caption']}\n({result['summary']}; {time.time() - start:.0f} s)",
          flush=True)
    return 0


def _run_study(args: argparse.Namespace, run: Callable[..., dict[str, Any]], study: Any, base: Any,
               folder: str) -> int:
    """Run a study over ``--seeds`` into ``--out``, print its table (and claims), write the report page."""
    from mmrobust.reports.html import write_report

    seeds, start = seed_list(args.seeds), time.time()
    result = run(study, seeds=seeds, out_dir=Path(args.out), base=base, progress=not args.quiet,
                 log=lambda m: print(m, flush=True))
    claims = f"\n\n{result['claims']}" if result.get("claims") else ""
    print(f"\n{result['table']}{claims}\n(plot {result['plot']}; {time.time() - start:.0f} s)", flush=True)
    print(f"report: {write_report([Path(args.out) / folder], Path(args.out) / 'report.html')}")
    return 0
