"""`mmrobust eval robust`: clean and robust zero-shot accuracy per eps under PGD / APGD / AutoAttack."""
from __future__ import annotations

import argparse
import json
from typing import Any, Callable

from mmrobust.cli.common import (apply_config, eps_list, key_values, parse_eps, positive_int, print_record_warnings,
                                 add_seeds_option, over_seeds, seed)
from mmrobust.errors import ConfigError
from mmrobust.values import parse_value
from mmrobust.pipelines.evaluate import eval_data, eval_robust
from mmrobust.registry import ATTACKS

DEFAULT_EPS = (4 / 255,)  # not an argparse list default: config files would add to it, not replace it


def register_robust(es: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = es.add_parser("robust", help="robust zero-shot accuracy per eps (pgd, apgd-ce, apgd-t, autoattack)",
                      description="Attack a seeded sample of the test set at each eps and report clean and robust "
                                  "zero-shot accuracy, sample ids, seeds and attack config. Finished batches are "
                                  "saved to OUT/partial_robust.jsonl as they go, so a killed run resumes.")
    common(p)
    p.add_argument("--attack", default="apgd-ce", help=f"one of: {', '.join(ATTACKS.list())}")
    p.add_argument("--eps", type=eps_list, default=None, help="comma-separated, e.g. 2/255,4/255 (default 4/255)")
    p.add_argument("--norm", default="linf", choices=["linf", "l2"])
    p.add_argument("--n-samples", type=positive_int, default=500, help="number of test images (seeded choice)")
    p.add_argument("--steps", type=positive_int, help="attack iterations (default: the attack's own)")
    p.add_argument("--attack-opt", action="append", metavar="KEY=VALUE", help="extra attack option, repeatable")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--reference", help="original model, to also report the embedding drift (FARE paper)")
    p.add_argument("--reference-pretrained", help="pretrained tag for --reference (e.g. openai)")
    p.add_argument("--save-adv", action="store_true", help="save adversarial images (safetensors) per eps")
    p.add_argument("--no-resume", dest="resume", action="store_false",
                   help="ignore finished batches saved by an earlier, interrupted run and start over")
    add_seeds_option(p, "--seed set to it: the sampled test images and the attack's random starts")
    p.set_defaults(func=over_seeds(run, "seed"), _parser=p)


def eps_values(values: Any) -> tuple[float, ...]:
    """The eps list as floats in [0,1] (a config file may give strings like '4/255'); at least one."""
    items = values if isinstance(values, (list, tuple)) else [values]
    items = [t for v in items for t in (v.split(",") if isinstance(v, str) else [v]) if str(t).strip()]
    try:
        eps = tuple(parse_eps(v) if isinstance(v, str) else float(v) for v in items)
    except (argparse.ArgumentTypeError, TypeError, ValueError) as e:
        raise ConfigError(f"--eps: {e}") from None
    if not eps:
        raise ConfigError("--eps is empty; give at least one value, e.g. --eps 4/255 or --eps 2/255,4/255")
    return eps


def run(args: argparse.Namespace) -> int:
    args = apply_config(args._parser, args)
    ATTACKS.get(args.attack)
    eps = eps_values(DEFAULT_EPS if args.eps is None else args.eps)
    opts = {k: parse_value(v) for k, v in key_values(args.attack_opt).items()}
    if args.steps:
        opts["steps"] = args.steps
    data = eval_data(args.data, args.classes, out_dir=args.out, image_col=args.image_col, label_col=args.label_col,
                     delimiter=args.delimiter, data_root=args.data_root, allow_outside=args.allow_outside_paths)
    m = eval_robust(model=args.model, weights={"pretrained": args.pretrained, "checkpoint": args.checkpoint},
                    data=data, out_dir=args.out, attack=args.attack, eps=eps, n_samples=args.n_samples,
                    seed=args.seed, norm=args.norm, attack_options=opts, reference=args.reference,
                    reference_weights={"pretrained": args.reference_pretrained}, save_adv=args.save_adv,
                    batch_size=args.batch_size, device=args.device, resume=args.resume)
    print(json.dumps(m))
    print_record_warnings(args.out, "robust")
    return 0
