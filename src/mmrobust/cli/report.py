"""`mmrobust report RUN_DIR...`: one HTML page with the tables and plots of the given runs."""
from __future__ import annotations

import argparse
from pathlib import Path

from mmrobust.errors import DataError
from mmrobust.reports.html import write_report


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="HTML report (tables + plots) across run directories")
    p.add_argument("runs", nargs="+", help="run directories holding results*.json and plots")
    p.add_argument("--out", help="output HTML file (default: report.html in the first run directory, never the "
                                 "current folder)")
    p.add_argument("--title", default="mmrobust report")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    missing = [r for r in args.runs if not Path(r).is_dir()]
    if missing:
        raise DataError(f"run directory {missing[0]} not found; pass directories written by mmrobust commands")
    out = args.out if args.out else Path(args.runs[0]) / "report.html"
    print(f"report: {write_report(args.runs, out, title=args.title)}")
    return 0
