"""The functions an lmms-eval MMR task calls (its ``utils.py`` re-exports them): what each document sends,
and how replies score, with mmrobust's parser and RA / MR (Liu et al. 2024), not a re-implementation.

A document is one line of the export's ``mmr.jsonl`` (:mod:`.export`): ``uid``, ``id``, ``question_type``,
``category``, ``level``, ``ground_truth``, ``options`` (JSON text), ``image`` (a path), ``prompt`` (the text
mmrobust itself sends, built by the export's prompt variant) and ``parser``. ``process_results`` turns
lmms-eval's reply into the row mmrobust's own run would write; every metric's aggregation scores all rows
at once (pairs by id), so lmms-eval prints the same RA / MR as ``mmrobust mmr score`` of the same replies.
A request lmms-eval's API models could not complete (their ``[LMMS_EVAL_REQUEST_FAILED ...]`` text) is an
error row: its pair is left out of RA / MR and counted in ``mmr_pairs_error``, never scored as a reply.
"""
from __future__ import annotations

import json
import math
from typing import Any, Sequence

FAILURE_MARKERS = ("[LMMS_EVAL_REQUEST_FAILED", "[LMMS_EVAL_BUDGET_EXCEEDED]")
ROW_KEYS = ("uid", "id", "question_type", "category", "level", "ground_truth")


def harness_error(text: str | None) -> str | None:
    """lmms-eval's failure text for a request it could not complete, else None."""
    if text is None:
        return "no reply"
    stripped = text.strip()
    return stripped if stripped.startswith(FAILURE_MARKERS) else None


def mmr_doc_to_visual(doc: dict) -> list:
    """The question's image, as an RGB PIL image (lmms-eval encodes it losslessly as PNG for API models)."""
    from PIL import Image

    with Image.open(doc["image"]) as im:
        return [im.convert("RGB")]


def mmr_doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    """The text sent after the image: exactly the prompt mmrobust sends for this question."""
    return doc["prompt"]


def mmr_doc_to_target(doc: dict) -> str:
    return doc["ground_truth"]


def mmr_row(doc: dict, reply: str | None) -> dict[str, Any]:
    """mmrobust's per-question row for ``reply`` to ``doc`` (an error row for a failed request)."""
    error = harness_error(reply)
    return {**{k: doc[k] for k in ROW_KEYS}, "options": json.loads(doc["options"]),
            "response": None if error else reply, "error": error, "parser": doc["parser"]}


def mmr_process_results(doc: dict, results: Sequence[str]) -> dict[str, dict]:
    """One row per metric (lmms-eval hands each metric's list to its aggregation)."""
    row = mmr_row(doc, results[0] if results else None)
    return {name: row for name in ("mmr_ra", "mmr_mr", "mmr_pairs", "mmr_pairs_error")}


def overall(rows: Sequence[dict]) -> dict[str, Any]:
    """mmrobust's pooled MMR metrics of ``rows`` under their export's parser (no bootstrap)."""
    from mmrobust.eval.mmr import compute_metrics, parse_records

    parsers = {r["parser"] for r in rows}
    if len(parsers) != 1:
        raise ValueError(f"MMR rows scored under several parsers {sorted(parsers)}; export one task per parser")
    clean = [{k: v for k, v in r.items() if k != "parser"} for r in rows]
    return compute_metrics(parse_records(clean, parsers.pop()), n_boot=0)["overall"]


def _number(value: float | int | None) -> float:
    return math.nan if value is None else float(value)


def mmr_aggregate_ra(rows: Sequence[dict]) -> float:
    """RA: pairs with both answers right / scored pairs (NaN with no scored pair)."""
    return _number(overall(rows)["ra"])


def mmr_aggregate_mr(rows: Sequence[dict]) -> float:
    """MR: pairs misled (POS right, NEG wrong) / pairs with POS right (NaN when no POS is right)."""
    return _number(overall(rows)["mr"])


def mmr_aggregate_pairs(rows: Sequence[dict]) -> float:
    """Pairs scored (both questions answered)."""
    return float(overall(rows)["n_pairs"])


def mmr_aggregate_pairs_error(rows: Sequence[dict]) -> float:
    """Pairs left out because a request failed in lmms-eval."""
    return float(overall(rows)["n_pairs_error"])
