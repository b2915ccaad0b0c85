"""`mmrobust lvlm swap`: put a (robust) CLIP image tower into a LLaVA-style model, no retraining (FARE's use).

Example::

    mmrobust lvlm swap --lvlm llava-hf/llava-1.5-7b-hf --encoder hf-hub:chs20/fare4-clip --out runs/llava-fare4
    mmrobust mmr run --adapter hf --model runs/llava-fare4 ...
"""
from __future__ import annotations

import argparse

from mmrobust.cli.common import positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("lvlm", help="LVLM tools: swap a robust CLIP tower into LLaVA",
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
    p.set_defaults(func=run, lvlm_parser=p)


def run(args: argparse.Namespace) -> int:
    args.lvlm_parser.print_help()
    return 2


def run_swap(args: argparse.Namespace) -> int:
    from mmrobust.lvlm import swap_and_save

    out = swap_and_save(args.lvlm, args.encoder, out_dir=args.out, pretrained=args.pretrained,
                        image_size=args.image_size, overwrite=args.overwrite)
    print(f"wrote {out} (swapped-in {args.encoder}; record in {out / 'swap.json'})")
    return 0
