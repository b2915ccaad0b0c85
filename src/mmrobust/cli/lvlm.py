"""`mmrobust lvlm swap`: put a (robust) CLIP image tower into a LLaVA-style model, no retraining (FARE's use).

Example::

    mmrobust lvlm swap --lvlm llava-hf/llava-1.5-7b-hf --encoder hf-hub:chs20/fare4-clip --out runs/llava-fare4
    mmrobust lvlm eval --task vqa --model runs/llava-fare4 --data vqav2.jsonl --eps 4/255 --out runs/fare4-vqa
    mmrobust lvlm eval --task caption --attack ensemble --model runs/llava-fare4 --data coco.jsonl --out runs/ens
    mmrobust lvlm targeted --model runs/llava-fare4 --data coco.jsonl --task caption --target "Visit example.com" \
        --eps 4/255 --steps 500 --out runs/fare4-stealthy
    mmrobust mmr run --adapter hf --model runs/llava-fare4 ...
"""
from __future__ import annotations

import argparse
from typing import Any

from mmrobust.cli.common import (device, key_values, non_negative_int, parse_eps, positive_int,
                                 print_record_warnings, print_warnings, seed, with_config)
from mmrobust.registry import LVLM_ATTACKS, LVLM_TASKS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("lvlm", help="LVLM tools: swap a robust CLIP tower into LLaVA; attack and evaluate it",
                              description="Large vision-language model tools (FARE's use of robust CLIP towers).")
    sub = p.add_subparsers(dest="lvlm_command", metavar="ACTION")
    s = sub.add_parser("swap", help="swap a CLIP image tower into a LLaVA(-NeXT) -> model + processor + swap.json",
                       description="Convert an open_clip image tower exactly, load it into the LVLM's vision tower "
                                   "(at the LVLM's resolution, position embeddings resized if needed), set the "
                                   "processor's normalization to the tower's, and save the result.")
    s.add_argument("--lvlm", required=True, help="LVLM folder or hub id (e.g. llava-hf/llava-1.5-7b-hf)")
    s.add_argument("--encoder", required=True,
                   help="CLIP: open_clip name (with --pretrained), hf-hub:ORG/REPO, or a model folder (runs/x/model)")
    s.add_argument("--pretrained", help="open_clip pretrained tag for a plain --encoder name")
    s.add_argument("--image-size", type=positive_int,
                   help="size the new tower runs at (default: the LVLM's own, e.g. 336 for LLaVA-1.5)")
    s.add_argument("--out", required=True, help="output folder for the swapped model")
    s.add_argument("--overwrite", action="store_true",
                   help="replace the model, processor and swap.json files in a non-empty --out (other files kept)")
    s.set_defaults(func=run_swap)
    e = sub.add_parser("eval", help="VQA accuracy, captioning CIDEr or MMR's RA / MR, clean and under an untargeted "
                                    "attack on the LM loss",
                       description="Greedy replies on clean images, an untargeted l-inf attack (--attack, default "
                                   "APGD) on the LM loss of the reference answers / captions, greedy replies again; "
                                   "both scored. Resumable.")
    _attack_options(e)
    attacks = "; ".join(f"{n}: {LVLM_ATTACKS.get(n).description.rstrip('.')}" for n in LVLM_ATTACKS.list())
    e.add_argument("--attack", default="apgd", help=f"the attack, by name (default apgd). {attacks}")
    e.add_argument("--attack-arg", action="append", metavar="KEY=VALUE",
                   help="an option of the attack, repeatable (ensemble: low_precision=float16|bfloat16|none)")
    e.set_defaults(func=run_eval)
    t = sub.add_parser("targeted", help="targeted ('stealthy') attack: make the model say --target; success rate",
                       description="Targeted l-inf APGD minimizing the LM loss of --target as the reply; success = "
                                   "the target string in the greedy reply. Resumable.")
    _attack_options(t)
    t.add_argument("--target", required=True, help="the string the attacked model should emit")
    t.add_argument("--group", help="attack only the questions of this group / category")
    t.set_defaults(func=run_targeted)
    p.set_defaults(func=run, lvlm_parser=p)
    for action_parser in (s, e, t):
        with_config(action_parser)


def _attack_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="HF LLaVA-style model folder or hub id (e.g. a swapped one)")
    p.add_argument("--data", required=True, help="VQA JSONL (id, image, question, answers), caption JSONL "
                                                 "(id, image, captions; images relative to the file) or, with "
                                                 "--task caption, karpathy:PATH (a COCO / Flickr30k "
                                                 "Karpathy-split JSON)")
    p.add_argument("--split", default="test", help="with --data karpathy:PATH: train, restval, val or test")
    p.add_argument("--data-root", help="with --data karpathy:PATH: the folder its filepath/filename paths are "
                                       "below (default: the JSON's folder)")
    tasks = "; ".join(f"{n}: {LVLM_TASKS.get(n).description.rstrip('.')}" for n in LVLM_TASKS.list())
    p.add_argument("--task", default="vqa", help=f"the task, by name (default vqa). {tasks}")
    p.add_argument("--prompt", default="official", help="MMR prompt variant with --task mmr (official, option-text)")
    p.add_argument("--eps", type=parse_eps, default=4 / 255, help="l-inf radius, e.g. 4/255")
    p.add_argument("--steps", type=positive_int, default=100, help="attack steps (APGD iterations per pass)")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--max-new-tokens", type=positive_int, default=20)
    p.add_argument("--parser", default="official", help="answer parser (official, strict, lenient)")
    p.add_argument("--n-boot", type=non_negative_int, default=1000, help="bootstrap resamples for the CIs")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--device", type=device, default="cpu")
    p.add_argument("--allow-outside-paths", action="store_true",
                   help="allow image paths outside the JSONL file's folder (absolute, or climbing out with ..)")
    p.add_argument("--out", required=True, help="output folder (results, per-sample JSONL, partial files)")


def _job(args: argparse.Namespace) -> Any:
    from mmrobust.pipelines.lvlm import LVLMAttackJob

    return LVLMAttackJob(model=args.model, data=args.data, task=args.task, out_dir=args.out, eps=args.eps,
                         steps=args.steps, seed=args.seed, batch_size=args.batch_size,
                         max_new_tokens=args.max_new_tokens, parser=args.parser, n_boot=args.n_boot,
                         dtype=args.dtype, device=args.device, allow_outside=args.allow_outside_paths,
                         prompt=args.prompt, split=args.split, data_root=args.data_root,
                         attack=getattr(args, "attack", "apgd"), attack_options=key_values(getattr(args, "attack_arg",
                                                                                                   None)))


def run_eval(args: argparse.Namespace) -> int:
    from mmrobust.pipelines.lvlm import run_lvlm_eval

    m = run_lvlm_eval(_job(args))
    keys = LVLM_TASKS.get(args.task).metric_keys
    shown = ", ".join(f"{k} clean {_num(m['clean'][k])}, under {m['eps_label']} {_num(m['adversarial'][k])}"
                      for k in keys)
    print(f"{args.task}: {shown} (n {m['clean']['n']}); results -> {args.out}")
    print_record_warnings(args.out, f"{args.task}-attack")
    return 0


def _num(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def run_targeted(args: argparse.Namespace) -> int:
    from mmrobust.pipelines.lvlm import run_lvlm_targeted

    m = run_lvlm_targeted(_job(args), args.target, group=args.group)
    print(f"targeted '{args.target}': success {m['success']:.1%} (clean {m['clean_success']:.1%}) on {m['n']} "
          f"images at {m['eps_label']}; results -> {args.out}")
    print_record_warnings(args.out, "targeted")
    return 0


def run(args: argparse.Namespace) -> int:
    args.lvlm_parser.print_help()
    return 2


def run_swap(args: argparse.Namespace) -> int:
    from mmrobust.lvlm import swap_and_save

    out = swap_and_save(args.lvlm, args.encoder, out_dir=args.out, pretrained=args.pretrained,
                        image_size=args.image_size, overwrite=args.overwrite)
    print(f"wrote {out} (swapped-in {args.encoder}; record in {out / 'swap.json'})")
    from mmrobust.jsonio import read_json

    print_warnings(read_json(out / "swap.json").get("warnings"))
    return 0
