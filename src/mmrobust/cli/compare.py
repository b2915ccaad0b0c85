"""`mmrobust compare RUN_A RUN_B`: the metrics, protocol, config and seed fields that differ between two runs."""
from __future__ import annotations

import argparse

from mmrobust.reports.compare import compare_runs, format_comparison


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="list the metrics and protocol fields that differ between two runs",
                       description="Read the results*.json of two run directories (or two results files), pair "
                                   "the records by file name, and list the metrics, protocol (templates and "
                                   "prompt hashes, decoding, attack settings, eps, package versions), config "
                                   "and seed fields whose values differ.")
    p.add_argument("run_a", metavar="RUN_A", help="run directory or results*.json file")
    p.add_argument("run_b", metavar="RUN_B", help="run directory or results*.json file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rows = compare_runs(args.run_a, args.run_b)
    print(f"A: {args.run_a}\nB: {args.run_b}")
    print(format_comparison(rows))
    return 0
