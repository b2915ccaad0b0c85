"""`mmrobust report RUN_DIR...`: one HTML page with the tables and plots of the given runs; with
``--model-card PATH --model NAME``, a Hugging Face model card (README.md with model-index results) instead."""
from __future__ import annotations

import argparse
from pathlib import Path

from mmrobust.errors import ConfigError, DataError
from mmrobust.reports.html import write_report


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="HTML report (tables + plots) across run directories, or a Hugging Face "
                                      "model card (--model-card)")
    p.add_argument("runs", nargs="+", help="run directories holding results*.json and plots (or results*.json "
                                           "files, with --model-card)")
    p.add_argument("--out", help="output HTML file (default: report.html in the first run directory, never the "
                                 "current folder; with --model-card, written only when given)")
    p.add_argument("--title", default="mmrobust report")
    p.add_argument("--model-card", metavar="PATH", help="write a Hugging Face model card of the runs' records: "
                   "PATH when it ends in .md, else README.md inside the folder PATH (e.g. the model's); replaces only "
                   "a card mmrobust wrote")
    p.add_argument("--model", help="with --model-card: the model's name in the card (e.g. the hub id it will have; a "
                                   "local folder is named by its last two components)")
    p.add_argument("--base-model", help="with --model-card: the hub id of the model it was finetuned from")
    p.add_argument("--summary", action="append", default=[], metavar="LINE",
                   help="with --model-card: a summary line shown as given (repeat for several)")
    p.set_defaults(func=run)


def _records(runs: list[str]) -> list[dict]:
    """Every results record of the runs (each file once), as ``mmrobust compare`` reads them."""
    from mmrobust.reports.compare import load_run

    seen, records = set(), []
    for run in runs:
        base = Path(run)
        for name, record in load_run(run).items():
            key = (base / name if base.is_dir() else base).resolve()
            if key not in seen:
                seen.add(key)
                records.append(record)
    return records


def _model_card(args: argparse.Namespace) -> None:
    from mmrobust.reports.model_card import write_model_card

    if not args.model:
        raise ConfigError("--model-card needs --model NAME, the model's name in the card (e.g. the hub id it will "
                          "have)")
    out = write_model_card(args.model_card, model=args.model, records=_records(args.runs),
                           summary_lines=args.summary, base_model=args.base_model)
    print(f"model card: {out}")


def run(args: argparse.Namespace) -> int:
    missing = [r for r in args.runs if not Path(r).exists() or (not args.model_card and not Path(r).is_dir())]
    if missing:
        raise DataError(f"run directory {missing[0]} not found; pass directories written by mmrobust commands")
    card_only = [name for name, v in (("--model", args.model), ("--base-model", args.base_model),
                                      ("--summary", args.summary)) if v]
    if card_only and not args.model_card:
        raise ConfigError(f"{card_only[0]} is for the model card; add --model-card PATH or drop it")
    if args.model_card:
        _model_card(args)
        if not args.out:
            return 0
    out = args.out if args.out else Path(args.runs[0]) / "report.html"
    print(f"report: {write_report(args.runs, out, title=args.title)}")
    return 0
