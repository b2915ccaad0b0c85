"""`mmrobust eval robust`: clean and robust zero-shot accuracy per eps under PGD / APGD / AutoAttack; with
``--defense NAME`` also under a test-time defense, non-adaptive (paper protocol) and adaptive side by side."""
from __future__ import annotations

import argparse
import json
from typing import Any, Callable

from mmrobust.cli.common import (apply_config, eps_list, key_values, positive_int, print_record_warnings,
                                 add_seeds_option, over_seeds)
from mmrobust.cli.options import add_settings, settings_from
from mmrobust.errors import ConfigError
from mmrobust.eval.defended import WARM_STARTS, DefendedSettings
from mmrobust.eval.robust import RobustSettings
from mmrobust.pipelines.defended import eval_defended
from mmrobust.pipelines.evaluate import eval_data, eval_robust

DEFENSE_SCALARS = ("paper_attack", "eot_samples", "backward", "draws", "warm_start")
DEFENSE_DEFAULTS = tuple(getattr(DefendedSettings(), k) for k in DEFENSE_SCALARS)


def _defense_settings(args: argparse.Namespace) -> tuple:
    return tuple(getattr(args, k) for k in DEFENSE_SCALARS)


def register_robust(es: argparse._SubParsersAction, common: Callable[..., None]) -> None:
    p = es.add_parser("robust", help="robust zero-shot accuracy per eps (pgd, apgd-ce, apgd-t, autoattack)",
                      description="Attack a seeded sample of the test set at each eps and report clean and robust "
                                  "zero-shot accuracy, sample ids, seeds and attack config. Finished batches are "
                                  "saved to OUT/partial_robust.jsonl as they go, so a killed run resumes.")
    common(p, RobustSettings)
    add_settings(p, RobustSettings, skip=("batch_size", "device"), types={"eps": eps_list},
                 choices={"norm": ["linf", "l2"]})
    p.add_argument("--steps", type=positive_int, help="attack iterations (default: the attack's own; the same as "
                                                      "--attack-opt steps=N)")
    p.add_argument("--reference", help="original model, to also report the embedding drift (FARE paper)")
    p.add_argument("--reference-pretrained", help="pretrained tag for --reference (e.g. openai)")
    p.add_argument("--save-adv", action="store_true", help="save adversarial images (safetensors) per eps")
    p.add_argument("--no-resume", dest="resume", action="store_false",
                   help="ignore finished batches saved by an earlier, interrupted run and start over")
    _defense_options(p)
    add_seeds_option(p, "--seed set to it: the sampled test images and the attack's random starts")
    p.set_defaults(func=over_seeds(run, "seed"), _parser=p)


def _defense_options(p: argparse.ArgumentParser) -> None:
    from mmrobust.attacks.adaptive import BACKWARDS
    from mmrobust.registry import DEFENSES

    g = p.add_argument_group("test-time defense", "with --defense: the defense under the attack made on the "
                             "undefended model (the paper protocol, not robustness) and under the same attack "
                             "through the defense (adaptive, EOT over its randomness), side by side")
    g.add_argument("--defense", default=None, help=f"test-time defense to evaluate ({', '.join(DEFENSES.list())}); "
                                                   "default: none")
    add_settings(g, DefendedSettings, owner=p, choices={"backward": BACKWARDS, "warm_start": WARM_STARTS},
                 only=("defense_options", "paper_attack", "paper_attack_options", "eot_samples", "backward", "draws",
                       "warm_start"))


def run(args: argparse.Namespace) -> int:
    args = apply_config(args._parser, args)
    fixed = {"attack_options": {**key_values(args.attack_options), **({"steps": args.steps} if args.steps else {})}}
    data = eval_data(args.data, args.classes, out_dir=args.out, image_col=args.image_col, label_col=args.label_col,
                     delimiter=args.delimiter, data_root=args.data_root, allow_outside=args.allow_outside_paths)
    weights = {"pretrained": args.pretrained, "checkpoint": args.checkpoint}
    if args.defense:
        return run_defended(args, fixed, data, weights)
    if args.defense_options or args.paper_attack_options or _defense_settings(args) != DEFENSE_DEFAULTS:
        raise ConfigError("--defense-opt, --paper-attack(-opt), --eot-samples, --backward, --draws and --warm-start "
                          "set up a test-time defense; name it with --defense (e.g. --defense ttc)")
    settings = settings_from(args, RobustSettings, **fixed)
    m = eval_robust(model=args.model, weights=weights, data=data, out_dir=args.out, settings=settings,
                    reference=args.reference, reference_weights={"pretrained": args.reference_pretrained},
                    save_adv=args.save_adv, resume=args.resume)
    print(json.dumps(m))
    print_record_warnings(args.out, "robust")
    return 0


def run_defended(args: argparse.Namespace, fixed: dict, data: Any, weights: dict) -> int:
    """``--defense NAME``: no defense, the paper protocol and the adaptive attack in one record."""
    if args.reference or args.save_adv:
        raise ConfigError("--reference and --save-adv are not available with --defense; run without --defense "
                          "for the embedding drift or the adversarial images")
    settings = settings_from(args, DefendedSettings, defense=args.defense, **fixed)
    m = eval_defended(model=args.model, weights=weights, data=data, out_dir=args.out, settings=settings,
                      resume=args.resume)
    print(json.dumps(m))
    print_record_warnings(args.out, "robust-defended")
    return 0
