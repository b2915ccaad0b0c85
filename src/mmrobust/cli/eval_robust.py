"""`mmrobust eval robust`: clean and robust zero-shot accuracy per eps under PGD / APGD / AutoAttack."""
from __future__ import annotations

import argparse
import json
from typing import Callable

from mmrobust.cli.common import apply_config, eps_list, key_values, positive_int
from mmrobust.values import parse_value
from mmrobust.pipelines.evaluate import EvalData, eval_robust
from mmrobust.registry import ATTACKS


def register_robust(es: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = es.add_parser("robust", help="robust zero-shot accuracy per eps (pgd, apgd-ce, apgd-t, autoattack)",
                      description="Attack a seeded sample of the test set at each eps and report clean and robust "
                                  "zero-shot accuracy, sample ids, seeds and attack config.")
    common(p)
    p.add_argument("--attack", default="apgd-ce", help=f"one of: {', '.join(ATTACKS.list())}")
    p.add_argument("--eps", type=eps_list, default=[4 / 255], help="comma-separated, e.g. 2/255,4/255")
    p.add_argument("--norm", default="linf", choices=["linf", "l2"])
    p.add_argument("--n-samples", type=positive_int, default=500, help="number of test images (seeded choice)")
    p.add_argument("--steps", type=positive_int, help="attack iterations (default: the attack's own)")
    p.add_argument("--attack-opt", action="append", metavar="KEY=VALUE", help="extra attack option, repeatable")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reference", help="original model, to also report the embedding drift (FARE paper)")
    p.add_argument("--reference-pretrained", help="pretrained tag for --reference (e.g. openai)")
    p.add_argument("--save-adv", action="store_true", help="save adversarial images (safetensors) per eps")
    p.set_defaults(func=run, _parser=p)


def run(args: argparse.Namespace) -> int:
    args = apply_config(args._parser, args)
    ATTACKS.get(args.attack)
    opts = {k: parse_value(v) for k, v in key_values(args.attack_opt).items()}
    if args.steps:
        opts["steps"] = args.steps
    data = EvalData(manifest=args.data, classes=args.classes, image_col=args.image_col, label_col=args.label_col,
                    delimiter=args.delimiter)
    m = eval_robust(model=args.model, weights={"pretrained": args.pretrained, "checkpoint": args.checkpoint},
                    data=data, out_dir=args.out, attack=args.attack, eps=tuple(args.eps), n_samples=args.n_samples,
                    seed=args.seed, norm=args.norm, attack_options=opts, reference=args.reference,
                    reference_weights={"pretrained": args.reference_pretrained}, save_adv=args.save_adv,
                    batch_size=args.batch_size, device=args.device)
    print(json.dumps(m))
    return 0
