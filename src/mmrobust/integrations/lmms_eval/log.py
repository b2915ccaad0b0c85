"""The replies of an lmms-eval ``--log_samples`` file of the MMR task (``<date>_samples_<task>.jsonl``).

Each line is one document: ``doc_id`` (its line in the export's ``mmr.jsonl``), ``target`` (the ground
truth), ``filtered_resps`` (the reply) and, when lmms-eval scored it, the row our ``process_results``
returned under ``mmr_ra`` (uid and the stripped reply it scored). That row is read when present, so
mmrobust scores exactly the text lmms-eval scored; a ``--predict_only`` log (no rows) is read by
``doc_id`` against the questions, its reply stripped as lmms-eval strips before scoring.
"""
from __future__ import annotations

import json
from pathlib import Path

from mmrobust.errors import DataError
from mmrobust.eval.mllm.task import Question
from mmrobust.integrations.lmms_eval.functions import harness_error
from mmrobust.integrations.replies import HarnessReply
from mmrobust.safety import ensure_regular_file

RERUN = ("rerun lmms-eval on the same task folder against a live server (with --log_samples, without --limit) "
         "and pass its new samples file")


def _reply_text(value: object) -> str | None:
    """``filtered_resps`` as lmms-eval hands it to ``process_results``: the first reply, stripped."""
    while isinstance(value, list) and value:
        value = value[0]
    return value.strip() if isinstance(value, str) else None


def _line_reply(raw: dict, questions: list[Question], where: str, path: Path) -> HarnessReply:
    prompt = raw["input"] if isinstance(raw.get("input"), str) else None
    row = raw.get("mmr_ra")
    if isinstance(row, dict) and isinstance(row.get("uid"), str):
        text = row.get("response")
        error = row.get("error") or (None if isinstance(text, str) else "no reply")
        return HarnessReply(row["uid"], text if isinstance(text, str) else None, error, row.get("ground_truth"), where,
                            prompt)
    doc_id = raw.get("doc_id")
    if not isinstance(doc_id, int) or isinstance(doc_id, bool) or "filtered_resps" not in raw:
        raise DataError(f"{path} {where} has neither an mmr_ra row nor doc_id + filtered_resps; pass the "
                        "--log_samples file of the task `mmrobust mmr export --format lmms-eval` wrote")
    if not 0 <= doc_id < len(questions):
        raise DataError(f"{path} {where}: doc_id {doc_id} is not one of the {len(questions)} questions of --data; "
                        "pass the question file the task folder was exported from")
    text = _reply_text(raw["filtered_resps"])
    error = harness_error(text)
    return HarnessReply(questions[doc_id].uid, None if error else text, error, raw.get("target"), where, prompt)


def read_lmms_eval_samples(path: str | Path, questions: list[Question]) -> list[HarnessReply]:
    """One reply per line of ``path``; ``questions`` (``replies.harness_questions`` of the exported data) map
    a ``doc_id`` when the line has no scored row. A line that is not a JSON object is a one-line DataError."""
    p = ensure_regular_file(Path(path), "lmms-eval samples file")
    replies = []
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{p} is not UTF-8 text ({e.reason} at byte {e.start}); pass lmms-eval's samples "
                        "JSONL") from None
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as e:
            raise DataError(f"{p}:{n} is not JSON ({type(e).__name__}); a cut-off file? rerun lmms-eval or drop "
                            "that line") from None
        if not isinstance(raw, dict):
            raise DataError(f"{p}:{n} is a JSON {type(raw).__name__}, not an object; pass lmms-eval's samples JSONL")
        replies.append(_line_reply(raw, questions, f"line {n}", p))
    if not replies:
        raise DataError(f"{p} holds no samples; pass the *_samples_<task>.jsonl that lmms-eval --log_samples wrote")
    return replies
