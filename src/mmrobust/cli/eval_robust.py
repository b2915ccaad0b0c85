"""`mmrobust eval robust`: clean and robust zero-shot accuracy per eps under PGD / APGD / AutoAttack."""
from __future__ import annotations

import argparse
import json
from typing import Callable

from mmrobust.cli.common import (apply_config, eps_list, key_values, positive_int, print_record_warnings,
                                 add_seeds_option, over_seeds)
from mmrobust.cli.options import add_settings, settings_from
from mmrobust.eval.robust import RobustSettings
from mmrobust.pipelines.evaluate import eval_data, eval_robust


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
    add_seeds_option(p, "--seed set to it: the sampled test images and the attack's random starts")
    p.set_defaults(func=over_seeds(run, "seed"), _parser=p)


def run(args: argparse.Namespace) -> int:
    args = apply_config(args._parser, args)
    fixed = {"attack_options": {**key_values(args.attack_options), **({"steps": args.steps} if args.steps else {})}}
    settings = settings_from(args, RobustSettings, **fixed)
    data = eval_data(args.data, args.classes, out_dir=args.out, image_col=args.image_col, label_col=args.label_col,
                     delimiter=args.delimiter, data_root=args.data_root, allow_outside=args.allow_outside_paths)
    m = eval_robust(model=args.model, weights={"pretrained": args.pretrained, "checkpoint": args.checkpoint},
                    data=data, out_dir=args.out, settings=settings, reference=args.reference,
                    reference_weights={"pretrained": args.reference_pretrained}, save_adv=args.save_adv,
                    resume=args.resume)
    print(json.dumps(m))
    print_record_warnings(args.out, "robust")
    return 0
