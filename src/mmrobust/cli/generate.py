"""`mmrobust generate`: write the embedded synthetic world to disk."""
from __future__ import annotations

import argparse

from mmrobust.cli.common import positive_int, seed
from mmrobust.world.shapes import generate_world


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="write the synthetic image-caption world (train.csv, test.csv, classes.json)",
                       description="Generate the embedded synthetic world: coloured shapes (class = shape) with "
                                   "captions, as a CSV manifest for training and a labelled split for evaluation.")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--n-train", type=positive_int, default=20000)
    p.add_argument("--n-test", type=positive_int, default=1000)
    p.add_argument("--image-size", type=positive_int, default=32, help="image side in pixels, 8 to 1024")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace train.csv, test.csv, classes.json, world.json "
                   "and the train/ test/ images of an earlier world in --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    w = generate_world(args.out, n_train=args.n_train, n_test=args.n_test, image_size=args.image_size, seed=args.seed,
                       overwrite=args.overwrite)
    print(f"wrote {w.train_manifest} ({args.n_train} pairs), {w.test_manifest} ({args.n_test}), {w.classes}")
    return 0
