"""`mmrobust poison`: poison an image-text manifest or webdataset shards with a trigger and a target caption, or an
MLLM instruction JSONL with an instruction attack (image trigger, text trigger, Shadowcast)."""
from __future__ import annotations

import argparse

from mmrobust.cli.common import (add_config_option, add_path_options, apply_config, delimiter, device, key_values,
                                 number, positive_int, print_warnings, seed)
from mmrobust.data.poison import poison_manifest, poison_shards
from mmrobust.data.poison.preview import write_poison_preview
from mmrobust.data.shards import parse_shard_spec
from mmrobust.errors import ConfigError
from mmrobust.registry import INSTRUCTION_ATTACKS, TRIGGERS
from mmrobust.reports.sanity import too_few_poisoned

CSV_ONLY = (("image_col", "image", "--image-col"), ("caption_col", "caption", "--caption-col"),
            ("delimiter", ",", "--delimiter"), ("data_root", None, "--data-root"),
            ("allow_outside_paths", False, "--allow-outside-paths"))
INSTRUCTIONS_ONLY = (("attack", None, "--attack"), ("attack_opt", None, "--attack-opt"), ("encoder", None, "--encoder"),
                     ("encoder_pretrained", None, "--encoder-pretrained"), ("device", "cpu", "--device"),
                     ("asr_test", None, "--asr-test"))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("poison", help="poison a manifest or shards -> poisoned copy + poison.json",
                       description="Choose rows with a seed, apply a trigger to their images and rewrite their "
                                   "captions to name the target class (Carlini & Terzis 2022; Bansal et al. 2023).")
    add_config_option(p)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--manifest", "--data", dest="manifest",
                        help="CSV of image,caption rows, or shards:PATTERN for webdataset shards (plain tars of "
                             "KEY.jpg + KEY.txt, e.g. shards:/data/cc3m/{00000..00331}.tar)")
    source.add_argument("--instructions", help="MLLM instruction JSONL (id, image, question + answer or conversations; "
                        "images relative to it) to poison with --attack")
    p.add_argument("--out", required=True, help="output directory (manifest.csv + images/, shards/*.tar, or "
                   "instructions.jsonl + images/; poison.json)")
    p.add_argument("--trigger", default="badnet", help=f"trigger name ({', '.join(TRIGGERS.list())})")
    p.add_argument("--trigger-param", action="append", metavar="KEY=VALUE",
                   help="trigger parameter, repeatable (e.g. size=6 pattern=checkerboard location=bottom_right)")
    p.add_argument("--target", help="target class name written into poisoned captions (required), or the target "
                   "string of an instruction attack (its answer, or the destination concept of shadowcast)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--rate", type=number(0.0, 1.0, low_open=True),
                   help="fraction of rows to poison, in (0, 1] (e.g. 0.05)")
    g.add_argument("--count", type=positive_int, help="exact number of rows to poison")
    p.add_argument("--template", action="append", help="caption template with {} for the target (repeatable)")
    p.add_argument("--label-consistent", action="store_true", help="poison only rows whose caption names the target")
    p.add_argument("--target-synonyms", default="", help="comma-separated words that also name the target "
                   "(label-consistent mode), e.g. bananas,plantain")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--image-col", default="image")
    p.add_argument("--caption-col", default="caption")
    p.add_argument("--delimiter", type=delimiter, default=",", help="CSV delimiter (one character; \\t for a tab)")
    p.add_argument("--image-size", type=positive_int, help="resize images to this size before triggering")
    add_path_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace an earlier poisoned copy in --out: deletes only "
                   "the files its poison.json lists (never source data; --out must not hold the manifest or images)")
    _add_instruction_options(p)
    p.set_defaults(func=run, _parser=p)


def _add_instruction_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("instruction files (--instructions)")
    g.add_argument("--attack", help=f"instruction attack ({', '.join(INSTRUCTION_ATTACKS.list())}; default "
                   "image-trigger, whose trigger is --trigger / --trigger-param)")
    g.add_argument("--attack-opt", action="append", metavar="KEY=VALUE",
                   help="attack setting, repeatable (e.g. mode=insert, phrase='I watch this 3D movie', "
                        "concept=circle, eps=8/255, steps=500)")
    g.add_argument("--encoder", help="shadowcast: the vision tower to optimize against (a CLIP: open_clip name with "
                   "--encoder-pretrained, hf-hub:org/repo or a model directory; or a LLaVA folder / hub id)")
    g.add_argument("--encoder-pretrained", help="open_clip pretrained tag or weights file of --encoder")
    g.add_argument("--device", type=device, default="cpu", help="cpu, cuda or cuda:N (shadowcast's optimization)")
    g.add_argument("--asr-test", metavar="POISON_JSON", help="instead of poisoning, write the triggered test inputs "
                   "of --instructions (a clean test file) with the attack of this poison.json")


def _given(args: argparse.Namespace, options: tuple) -> list[str]:
    return [flag for dest, default, flag in options if getattr(args, dest) != default]


def run(args: argparse.Namespace) -> int:
    args = apply_config(args._parser, args)
    if args.instructions is not None:
        from mmrobust.cli.poison_instructions import run_instructions

        return run_instructions(args)
    given = _given(args, INSTRUCTIONS_ONLY)
    if given:
        raise ConfigError(f"{', '.join(given)} only apply to --instructions (an MLLM instruction JSONL); drop them "
                          "for a manifest or shards")
    if not args.target:
        raise ConfigError("--target is required: the class name poisoned captions name, e.g. --target star")
    words = args.target_synonyms if isinstance(args.target_synonyms, list) else str(args.target_synonyms).split(",")
    synonyms = tuple(str(w).strip() for w in words if str(w).strip())
    common = dict(out_dir=args.out, trigger={"name": args.trigger, "config": key_values(args.trigger_param)},
                  target=args.target, rate=args.rate, count=args.count,
                  caption_templates=tuple(args.template or ("a photo of a {}.",)), seed=args.seed,
                  label_consistent=args.label_consistent, target_synonyms=synonyms, image_size=args.image_size,
                  overwrite=args.overwrite)
    pattern = parse_shard_spec(args.manifest)
    if pattern is not None:
        return _run_shards(args, pattern, common)
    rec = poison_manifest(manifest=args.manifest, data_root=args.data_root, allow_outside=args.allow_outside_paths,
                          image_col=args.image_col, caption_col=args.caption_col, delimiter=args.delimiter, **common)
    print(f"poisoned {len(rec.poisoned_ids)} of {rec.n_rows} rows -> {rec.manifest} (record: {rec.record_path})")
    _print_preview(write_poison_preview(rec, data_root=args.data_root, allow_outside=args.allow_outside_paths))
    print_warnings(too_few_poisoned(len(rec.poisoned_ids), rec.n_rows))
    return 0


def _print_preview(result: tuple) -> None:
    path, why = result
    print(f"trigger preview: {path}" if path is not None else f"no trigger preview ({why})")


def _run_shards(args: argparse.Namespace, pattern: str, common: dict) -> int:
    given = [flag for dest, default, flag in CSV_ONLY if getattr(args, dest) != default]
    if given:
        raise ConfigError(f"{', '.join(given)} only apply to a CSV manifest; drop them with --data shards:... "
                          "(shards hold KEY.jpg/png/webp images and KEY.txt captions)")
    rec = poison_shards(shards=pattern, **common)
    print(f"poisoned {len(rec.keys)} of {rec.n_rows} samples -> {rec.data} (record: {rec.record_path})")
    _print_preview(write_poison_preview(rec))
    print_warnings(too_few_poisoned(len(rec.keys), rec.n_rows))
    return 0
