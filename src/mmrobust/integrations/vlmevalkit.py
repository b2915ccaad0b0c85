"""MMR (Liu et al. 2024) for VLMEvalKit: the questions as a custom multiple-choice TSV, and its prediction
files read back so mmrobust scores RA / MR of the replies.

VLMEvalKit has no MMR dataset; a TSV named ``<NAME>.tsv`` in its data folder (``$LMUData``) with ``A`` / ``B``
columns and an ``image`` column is run as a custom MCQ dataset (``build_dataset``: ``CustomMCQDataset``).
Columns written: ``index`` (0..n-1, the question's position in the export: POS then NEG of each pair, pairs
by id), ``image`` (base64 of the image file; a question whose image an earlier row already holds gives that
row's index instead, VLMEvalKit's way of saving space), ``question`` (the stem), ``A``..``D``, ``answer``,
``category`` (``level/category``), ``l2-category`` (the level) and mmrobust's ``id``, ``question_type``, ``uid``.
VLMEvalKit asks with its own MCQ prompt (or the model's custom one), not MMR's official prompt: its numbers
are comparable with each other, not with runs of the official prompt.

Its prediction file (``<model>_<NAME>.xlsx``, or ``.tsv`` / ``.json`` with ``PRED_FORMAT``) holds the TSV's
rows without ``image`` plus ``prediction``; :func:`read_vlmevalkit_predictions` maps ``index`` back to the
question and refuses missing, extra or repeated indices and a ``answer`` that disagrees with the data.
"""
from __future__ import annotations

import base64
import csv
import io
import json
import re
from pathlib import Path
from typing import Any, Iterable

from mmrobust.errors import ConfigError, DataError
from mmrobust.eval.mllm.options import LETTERS
from mmrobust.eval.mllm.task import Question
from mmrobust.eval.mmr.dataset import MMRDataset
from mmrobust.integrations.exports import start_export, write_text
from mmrobust.integrations.replies import HarnessReply, harness_questions
from mmrobust.safety import ensure_regular_file

COLUMNS = ("index", "image", "question", *LETTERS, "answer", "category", "l2-category", "id", "question_type", "uid")
FAIL_MSG = "Failed to obtain answer"  # VLMEvalKit's prefix for a request its API models could not complete
RERUN = "rerun VLMEvalKit's inference on the same TSV (it retries failed requests) and pass its new prediction file"
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_\-]{0,63}")
_MAX_CELL = 10_000_000  # the csv module's default field limit (128 KiB) is too small for a base64 image


def tsv_rows(data: MMRDataset) -> list[dict[str, Any]]:
    """The TSV's rows, one per question the export asks."""
    rows, first_row_of = [], {}
    stems = {i.uid: i.stem for i in data.items}
    for n, q in enumerate(harness_questions(data)):
        image = str(Path(q.image).resolve())
        if image in first_row_of:
            encoded = str(first_row_of[image])
        else:
            first_row_of[image] = n
            encoded = base64.b64encode(Path(image).read_bytes()).decode("ascii")
        rows.append({"index": n, "image": encoded, "question": stems[q.uid],
                     **{k: q.options.get(k, "") for k in LETTERS}, "answer": q.ground_truth,
                     "category": q.columns["category"], "l2-category": q.columns["level"],
                     "id": q.columns["id"], "question_type": q.columns["question_type"], "uid": q.uid})
    return rows


def export_vlmevalkit(data: MMRDataset, *, out_dir: str | Path, name: str = "MMR_mmrobust",
                      overwrite: bool = False) -> Path:
    """Write ``out_dir/<name>.tsv`` (+ ``export.json``); returns the TSV. Point ``$LMUData`` at ``out_dir`` and
    run VLMEvalKit with ``--data <name>``."""
    if not _NAME.fullmatch(name):
        raise ConfigError(f"dataset name {name!r}: use letters, digits, '_' and '-' (starting with a letter)")
    root = Path(out_dir)
    start_export(root, [f"{name}.tsv"], overwrite=overwrite, harness="vlmevalkit", data=data, settings={"name": name})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, delimiter="\t", quoting=csv.QUOTE_ALL, lineterminator="\n")
    writer.writeheader()
    writer.writerows(tsv_rows(data))
    return write_text(root / f"{name}.tsv", buf.getvalue())


def _records(path: Path) -> list[dict[str, Any]]:
    """The rows of a prediction file (.xlsx, .tsv, .csv or .json), as dicts keyed by column name."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".xlsx":
            return _xlsx_records(path)
        if suffix in (".tsv", ".csv"):
            csv.field_size_limit(_MAX_CELL)
            text = path.read_text(encoding="utf-8-sig")
            return list(csv.DictReader(io.StringIO(text), delimiter="\t" if suffix == ".tsv" else ","))
        if suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, list) and all(isinstance(r, dict) for r in data):
                return data
            raise DataError(f"{path} is not a list of records (VLMEvalKit's PRED_FORMAT=json); pass its prediction "
                            "file")
    except (UnicodeDecodeError, json.JSONDecodeError, csv.Error, RecursionError) as e:
        raise DataError(f"{path} cannot be read as a VLMEvalKit prediction file ({type(e).__name__}: {str(e)[:120]}); "
                        "pass the .xlsx / .tsv / .json it wrote") from None
    raise DataError(f"{path}: a VLMEvalKit prediction file ends in .xlsx, .tsv, .csv or .json; got {suffix or 'none'}")


def _xlsx_records(path: Path) -> list[dict[str, Any]]:
    try:
        from openpyxl import load_workbook
    except ImportError:
        raise ConfigError("reading .xlsx prediction files needs openpyxl: pip install 'mmrobust[harness]' "
                          "(or export VLMEvalKit's predictions with PRED_FORMAT=tsv)") from None
    try:
        sheet = load_workbook(path, read_only=True, data_only=True).worksheets[0]
    except Exception as e:  # openpyxl raises zipfile / KeyError / its own errors for a damaged workbook
        raise DataError(f"{path} is not a readable .xlsx workbook ({type(e).__name__}); pass VLMEvalKit's "
                        "prediction file") from None
    rows = sheet.iter_rows(values_only=True)
    header = [str(c) if c is not None else "" for c in next(rows, ())]
    return [dict(zip(header, r)) for r in rows if any(c is not None for c in r)]


def _index(value: Any, path: Path, n: int) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not number.is_integer():
        raise DataError(f"{path} row {n}: index {value!r} is not a whole number; pass the prediction file VLMEvalKit "
                        "wrote for the exported TSV")
    return int(number)


def read_vlmevalkit_predictions(path: str | Path, questions: list[Question]) -> list[HarnessReply]:
    """One reply per row of a VLMEvalKit prediction file; ``questions`` (``harness_questions`` of the exported
    data) map each ``index`` back to its question."""
    p = ensure_regular_file(Path(path), "VLMEvalKit prediction file")
    records = _records(p)
    columns = set(records[0]) if records else set()
    missing = [c for c in ("index", "prediction") if c not in columns]
    if not records or missing:
        found = ", ".join(sorted(map(str, columns))[:8]) or "none"
        raise DataError(f"{p} lacks the column(s) {', '.join(missing or ['index', 'prediction'])} (columns: {found}); "
                        "pass the prediction file VLMEvalKit wrote (<model>_<dataset>.xlsx)")
    return list(_replies(records, questions, p))


def _replies(records: list[dict[str, Any]], questions: list[Question], path: Path) -> Iterable[HarnessReply]:
    extra = []
    for n, r in enumerate(records, start=2):  # row 1 is the header
        i = _index(r["index"], path, n)
        if not 0 <= i < len(questions):
            extra.append(str(i))
            continue
        q = questions[i]
        if r.get("uid") not in (None, "") and str(r["uid"]) != q.uid:
            raise DataError(f"{path} row {n}: index {i} is {r['uid']!r} there but {q.uid!r} in --data; it was exported "
                            "from other data: pass that question file as --data")
        text = r["prediction"]
        text = "" if text is None else str(text)  # an empty cell is an empty reply (unparseable), not a letter
        error = text if text.startswith(FAIL_MSG) else None
        yield HarnessReply(q.uid, None if error else text, error, None if r.get("answer") in (None, "") else
                           str(r["answer"]), f"row {n}")
    if extra:
        raise DataError(f"{path} holds {len(extra)} row(s) whose index is not a question of --data (first: "
                        f"{', '.join(extra[:3])}; --data has {len(questions)} questions); pass the question file the "
                        "TSV was exported from")
