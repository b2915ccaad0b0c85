"""A harness's replies back into mmrobust rows, checked against the MMR questions they answer, and scored.

A harness (lmms-eval, Inspect, VLMEvalKit) asks the questions of one export and logs one reply per
question. Before mmrobust scores such a log (Liu et al. 2024: RA and MR over POS / leading-NEG pairs),
:func:`rows_for_replies` checks that it is whole and belongs to the data: every question answered
exactly once, no question the data lacks, the same ground truth, and no request that failed inside the
harness (a failure is an error, never a reply; with ``allow_errors`` it is kept as an error row, its
pair left out of RA / MR and counted). Each refusal is one :class:`DataError` line naming what is missing.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from mmrobust.errors import DataError
from mmrobust.eval.mllm.harness import check_run_settings, rescore
from mmrobust.eval.mllm.task import Question
from mmrobust.eval.mmr.dataset import MMRDataset
from mmrobust.eval.mmr.task import MMRTask
from mmrobust.models.mllm.base import GenerationParams
from mmrobust.registry import PARSERS
from mmrobust.reports.contract import write_record

_SHOW = 3  # uids named in a refusal


@dataclass(frozen=True)
class HarnessReply:
    """One logged answer: the question's ``uid`` (``id|POS`` / ``id|NEG``), the reply text or the
    harness's ``error``, the ground truth and the prompt text the log carries (each checked when
    given) and ``where`` it was in the log (``line 7``), for messages."""

    uid: str
    response: str | None
    error: str | None = None
    ground_truth: str | None = None
    where: str = ""
    prompt: str | None = None


def harness_questions(data: MMRDataset, *, prompt: str = "official") -> list[Question]:
    """The questions an export asks, in its order: every item of a valid pair (POS then NEG, pairs
    by id), each with the prompt mmrobust itself sends (``prompt`` variant) and its row columns."""
    return list(MMRTask(data, prompt=prompt).questions())


def _named(uids: Sequence[str]) -> str:
    return ", ".join(uids[:_SHOW]) + (f" (+{len(uids) - _SHOW} more)" if len(uids) > _SHOW else "")


def _check_coverage(questions: list[Question], replies: Sequence[HarnessReply], *, source: str, harness: str,
                    rerun: str) -> dict[str, HarnessReply]:
    """uid -> reply, or a one-line DataError for duplicated, foreign or missing questions."""
    counts = Counter(r.uid for r in replies)
    twice = [u for u, n in counts.items() if n > 1]
    if twice:
        raise DataError(f"{source} answers {len(twice)} question(s) more than once (first: {_named(twice)}); "
                        f"one {harness} run answers each question once: pass the log of a single run")
    known = {q.uid for q in questions}
    foreign = [r.uid for r in replies if r.uid not in known]
    if foreign:
        raise DataError(f"{source} answers {len(foreign)} question(s) the MMR data does not hold (first: "
                        f"{_named(foreign)}); it was asked from other data: pass the question file it was exported "
                        "from as --data")
    by_uid = {r.uid: r for r in replies}
    missing = [q.uid for q in questions if q.uid not in by_uid]
    if missing:
        raise DataError(f"{source} lacks {len(missing)} of {len(questions)} questions (missing: {_named(missing)}); "
                        f"the {harness} run stopped early or was limited: {rerun}")
    return by_uid


def _check_asked(questions: list[Question], by_uid: dict[str, HarnessReply], source: str, prompt: str) -> None:
    """A one-line DataError where the log's ground truth or prompt text is not the data's."""
    for q in questions:
        r = by_uid[q.uid]
        at = f" ({r.where})" if r.where else ""
        if r.ground_truth is not None and str(r.ground_truth).strip().upper() != q.ground_truth:
            raise DataError(f"{source}{at} gives ground truth {r.ground_truth!r} for {q.uid} but the MMR data says "
                            f"{q.ground_truth!r}; it was asked from another version of the data: pass that file as "
                            "--data")
        if r.prompt is not None and r.prompt != q.prompt:
            raise DataError(f"{source}{at} asked {q.uid} with another text than the {prompt!r} prompt of the MMR data; "
                            "pass the --prompt it was exported with, or the question file it was asked from as --data")


def rows_for_replies(data: MMRDataset, replies: Sequence[HarnessReply], *, source: str | Path, harness: str,
                     rerun: str, prompt: str = "official", asked_with: str | None = None,
                     allow_errors: bool = False) -> list[dict[str, Any]]:
    """mmrobust's per-question rows (as a run writes them) for a harness log of ``data``'s questions.

    ``rerun`` says how to finish the harness run (named in refusals); ``asked_with`` names the prompt in the
    rows when the harness built its own (default: ``prompt``, the MMR variant). Refuses, in one line, a log
    with duplicated, foreign or missing questions, a different ground truth or prompt, or (unless
    ``allow_errors``) requests that failed in the harness."""
    source = str(source)
    questions = harness_questions(data, prompt=prompt)
    by_uid = _check_coverage(questions, replies, source=source, harness=harness, rerun=rerun)
    _check_asked(questions, by_uid, source, prompt)
    failed = [q.uid for q in questions if by_uid[q.uid].error]
    if failed and not allow_errors:
        first = by_uid[failed[0]]
        raise DataError(f"{source}: {len(failed)} of {len(questions)} requests failed in {harness} (first: "
                        f"{first.uid}: {str(first.error)[:160]}); {rerun}, or pass --allow-errors to score the rest "
                        "(their pairs are left out of RA / MR and counted)")
    rows = []
    for q in questions:
        r = by_uid[q.uid]
        columns = {**q.columns, **({"prompt_variant": asked_with} if asked_with else {})}
        rows.append({"uid": q.uid, **columns, "ground_truth": q.ground_truth, "options": dict(q.options),
                     "group": q.group, "image": q.image, "response": None if r.error else r.response,
                     "error": r.error or None})
    return rows


def score_replies(rows: list[dict[str, Any]], *, data: MMRDataset, out_dir: str | Path, parser: str = "official",
                  n_boot: int = 1000, seed: int = 0, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """mmrobust's MMR record (RA / MR per category, level and pooled, under ``parser``) of checked harness rows
    of ``data``, written to ``out_dir`` (``results_mmr.json`` + ``samples_mmr.jsonl``); returns the record."""
    PARSERS.get(parser)
    check_run_settings(params=GenerationParams(), n_boot=n_boot, seed=seed)
    task = MMRTask(data)
    record = rescore(task, rows, out_dir=out_dir, parser=parser, n_boot=n_boot, seed=seed, config=config)
    record.extra.update(task.provenance())
    record.protocol["pairing"] = "id"
    return write_record(out_dir, record)
