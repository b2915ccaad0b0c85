"""`mmrobust report RUN_DIR...`: one HTML page with the tables and plots of the given runs."""
from __future__ import annotations

import argparse
from pathlib import Path

from mmrobust.errors import DataError
from mmrobust.reports.html import write_report


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="HTML report (tables + plots) across run directories")
    p.add_argument("runs", nargs="+", help="run directories holding results*.json and plots")
    p.add_argument("--out", default="report.html", help="output HTML file")
    p.add_argument("--title", default="mmrobust report")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    missing = [r for r in args.runs if not Path(r).is_dir()]
    if missing:
        raise DataError(f"run directory {missing[0]} not found; pass directories written by mmrobust commands")
    print(f"report: {write_report(args.runs, args.out, title=args.title)}")
    return 0
