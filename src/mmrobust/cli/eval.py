"""`mmrobust eval zeroshot|backdoor|retrieval|robust`: metrics -> results JSON + per-sample JSONL."""
from __future__ import annotations

import argparse
import json

from mmrobust.cli.common import (add_config_option, add_path_options, apply_config, delimiter, device, key_values,
                                 add_seeds_option, over_seeds, print_record_warnings)
from mmrobust.cli.options import add_settings, settings_from
from mmrobust.eval.backdoor import BackdoorSettings
from mmrobust.eval.retrieval import RetrievalSettings
from mmrobust.eval.zeroshot import ZeroShotSettings
from mmrobust.pipelines.evaluate import (EvalData, RetrievalData, eval_backdoor, eval_data, eval_retrieval,
                                         eval_zeroshot)
from mmrobust.registry import TRIGGERS


def _common(p: argparse.ArgumentParser, settings: type, labelled: bool = True) -> None:
    add_config_option(p)
    p.add_argument("--model", required=True, help="open_clip name, hf-hub:org/repo, or a model directory")
    p.add_argument("--pretrained", help="open_clip pretrained tag or weights file (e.g. openai)")
    p.add_argument("--checkpoint", help="extra state dict to load (open_clip/OpenAI/CleanCLIP format)")
    p.add_argument("--data", required=True, help="CSV manifest (image + label columns for labelled evals)"
                   + (", imagenet:PATH / folder:PATH (one sub-folder per class), or clip_benchmark:NAME "
                      "(with --data-root)" if labelled else
                      ", or karpathy:PATH (a COCO / Flickr30k Karpathy-split JSON; images below --data-root)"))
    if labelled:
        p.add_argument("--classes", help="classes.json: classnames + templates (with a CSV manifest)")
        p.add_argument("--label-col", default="label")
    p.add_argument("--image-col", default="image")
    p.add_argument("--delimiter", type=delimiter, default=",", help="CSV delimiter (one character; \\t for a tab)")
    add_path_options(p)
    p.add_argument("--out", required=True, help="output directory for results and per-sample JSONL")
    add_settings(p, settings, only=("batch_size", "device"), types={"device": device})


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a CLIP: zeroshot, backdoor (ASR), retrieval, robust")
    es = p.add_subparsers(dest="eval_kind", metavar="KIND", required=True)
    z = es.add_parser("zeroshot", help="zero-shot top-1/top-5 accuracy with template ensembles")
    _common(z, ZeroShotSettings)
    z.set_defaults(func=run_zeroshot, _parser=z)
    b = es.add_parser("backdoor", help="clean accuracy + attack success rate of a trigger")
    _common(b, BackdoorSettings)
    b.add_argument("--poison-record", help="poison.json: take trigger and target from it")
    b.add_argument("--trigger", help=f"trigger name ({', '.join(TRIGGERS.list())}) when no record is given")
    b.add_argument("--trigger-param", action="append", metavar="KEY=VALUE")
    b.add_argument("--target", help="target class name (default: the record's)")
    add_settings(b, BackdoorSettings, only=("seed",))
    add_seeds_option(b, "--seed set to it: the trigger's per-image randomness")
    b.set_defaults(func=over_seeds(run_backdoor, "seed"), _parser=b)
    r = es.add_parser("retrieval", help="image<->text recall@1/5/10 over images and their captions")
    _common(r, RetrievalSettings, labelled=False)
    r.add_argument("--caption-col", default="caption")
    r.add_argument("--split", default="test", help="with --data karpathy:PATH: train, restval, val or test")
    r.set_defaults(func=run_retrieval, _parser=r)
    try:
        from mmrobust.cli.eval_robust import register_robust
    except ModuleNotFoundError:
        return
    register_robust(es, _common)


def _weights(args: argparse.Namespace) -> dict:
    return {"pretrained": args.pretrained, "checkpoint": args.checkpoint}


def _data(args: argparse.Namespace) -> EvalData:
    return eval_data(args.data, args.classes, out_dir=args.out, image_col=args.image_col, label_col=args.label_col,
                     delimiter=args.delimiter, data_root=args.data_root, allow_outside=args.allow_outside_paths)


def run_zeroshot(args: argparse.Namespace) -> int:
    args = apply_config(args._parser, args)
    m = eval_zeroshot(model=args.model, weights=_weights(args), data=_data(args), out_dir=args.out,
                      batch_size=args.batch_size,
                      device=args.device)
    print(json.dumps(m))
    print_record_warnings(args.out, "zeroshot")
    return 0


def run_backdoor(args: argparse.Namespace) -> int:
    args = apply_config(args._parser, args)
    m = eval_backdoor(model=args.model, weights=_weights(args), data=_data(args), out_dir=args.out,
                      poison_record=args.poison_record, trigger=args.trigger,
                      trigger_params=key_values(args.trigger_param), target=args.target,
                      seed=args.seed, batch_size=args.batch_size, device=args.device)
    print(json.dumps(m))
    print_record_warnings(args.out, "backdoor")
    return 0


def run_retrieval(args: argparse.Namespace) -> int:
    args = apply_config(args._parser, args)
    data = RetrievalData(args.data, image_col=args.image_col, caption_col=args.caption_col, delimiter=args.delimiter,
                         data_root=args.data_root, allow_outside=args.allow_outside_paths, split=args.split)
    m = eval_retrieval(model=args.model, weights=_weights(args), data=data, out_dir=args.out,
                       settings=settings_from(args, RetrievalSettings))
    print(json.dumps(m))
    return 0
