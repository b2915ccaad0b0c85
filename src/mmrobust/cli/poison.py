"""`mmrobust poison`: poison an image-text manifest or webdataset shards with a trigger and a target caption."""
from __future__ import annotations

import argparse

from mmrobust.cli.common import (add_config_option, add_path_options, apply_config, delimiter, key_values, number,
                                 positive_int, print_warnings, seed)
from mmrobust.data.poison import poison_manifest, poison_shards
from mmrobust.data.shards import parse_shard_spec
from mmrobust.errors import ConfigError
from mmrobust.registry import TRIGGERS
from mmrobust.reports.sanity import too_few_poisoned

CSV_ONLY = (("image_col", "image", "--image-col"), ("caption_col", "caption", "--caption-col"),
            ("delimiter", ",", "--delimiter"), ("data_root", None, "--data-root"),
            ("allow_outside_paths", False, "--allow-outside-paths"))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("poison", help="poison a manifest or shards -> poisoned copy + poison.json",
                       description="Choose rows with a seed, apply a trigger to their images and rewrite their "
                                   "captions to name the target class (Carlini & Terzis 2022; Bansal et al. 2023).")
    add_config_option(p)
    p.add_argument("--manifest", "--data", dest="manifest", required=True,
                   help="CSV of image,caption rows, or shards:PATTERN for webdataset shards (plain tars of KEY.jpg + "
                        "KEY.txt, e.g. shards:/data/cc3m/{00000..00331}.tar)")
    p.add_argument("--out", required=True, help="output directory (manifest.csv + images/, or shards/*.tar; "
                   "poison.json)")
    p.add_argument("--trigger", default="badnet", help=f"trigger name ({', '.join(TRIGGERS.list())})")
    p.add_argument("--trigger-param", action="append", metavar="KEY=VALUE",
                   help="trigger parameter, repeatable (e.g. size=6 pattern=checkerboard location=bottom_right)")
    p.add_argument("--target", required=True, help="target class name written into poisoned captions")
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
    p.set_defaults(func=run, _parser=p)


def run(args: argparse.Namespace) -> int:
    args = apply_config(args._parser, args)
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
    print_warnings(too_few_poisoned(len(rec.poisoned_ids), rec.n_rows))
    return 0


def _run_shards(args: argparse.Namespace, pattern: str, common: dict) -> int:
    given = [flag for dest, default, flag in CSV_ONLY if getattr(args, dest) != default]
    if given:
        raise ConfigError(f"{', '.join(given)} only apply to a CSV manifest; drop them with --data shards:... "
                          "(shards hold KEY.jpg/png/webp images and KEY.txt captions)")
    rec = poison_shards(shards=pattern, **common)
    print(f"poisoned {len(rec.keys)} of {rec.n_rows} samples -> {rec.data} (record: {rec.record_path})")
    print_warnings(too_few_poisoned(len(rec.keys), rec.n_rows))
    return 0
