"""`mmrobust` entry point: dispatches to one module per subcommand.

Each subcommand module exposes ``register(subparsers)`` which adds its parser and sets
``func=run`` where ``run(args) -> int``. User errors (MMRobustError) print one line.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from mmrobust.errors import MMRobustError

SUBCOMMANDS = ("demo", "generate", "poison", "train", "eval", "mmr", "report")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmrobust",
        description="Attack, defend and measure vision-language models (CleanCLIP, PAR, FARE, TeCoA, MMR).",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            mod = importlib.import_module(f"mmrobust.cli.{name}")
        except ModuleNotFoundError as e:  # subcommand not built yet
            if e.name == f"mmrobust.cli.{name}":
                continue
            raise
        mod.register(sub)
    return parser


def _version() -> str:
    from mmrobust import __version__

    return f"mmrobust {__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except MMRobustError as e:
        print(f"mmrobust {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mmrobust {args.command}: interrupted; partial results and checkpoints are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
