"""MMR as an Inspect task (Liu et al. 2024, "Seeing Clearly, Answering Incorrectly"): the paired POS /
leading-NEG questions of an MMR file, asked with the prompt mmrobust sends (image first), scored with
mmrobust's answer parser; the metrics are mmrobust's RA and MR (pairs by id), not a re-implementation.

This module imports ``inspect_ai`` (the ``harness`` extra); nothing else in mmrobust imports it. Run::

    export LOCAL_BASE_URL=http://127.0.0.1:8000/v1 LOCAL_API_KEY=none
    inspect eval mmrobust/mmr -T data=path/to/questions.json --model openai-api/local/MODEL
    # or, without the package's entry point: inspect eval .../mmrobust/integrations/inspect_mmr.py@mmr ...

Task options (``-T``): ``data`` (question file or folder), ``image_root``, ``prompt`` (an MMR prompt
variant), ``parser`` (official | strict | lenient), ``max_tokens`` (64; greedy decoding). A sample whose
request failed has no score in Inspect's log; ``mmrobust mmr score --format inspect`` refuses such a log
(or, with ``--allow-errors``, leaves its pair out and counts it) and writes the per-category record.
"""
from __future__ import annotations

import math
from typing import Any

from inspect_ai import Task, task
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.model import ChatMessageUser, ContentImage, ContentText, GenerateConfig
from inspect_ai.scorer import CORRECT, INCORRECT, Metric, SampleScore, Score, Scorer, Target, metric, scorer
from inspect_ai.solver import TaskState, generate

from mmrobust.eval.mmr import compute_metrics, load_mmr, parse_records
from mmrobust.integrations.replies import harness_questions
from mmrobust.registry import PARSERS

ROW_COLUMNS = ("id", "question_type", "category", "level", "prompt_variant")


def mmr_samples(data: str, *, image_root: str | None = None, prompt: str = "official",
                allow_outside_paths: bool = False) -> list[Sample]:
    """One Inspect sample per question of a valid pair (id = mmrobust's uid, target = the letter)."""
    questions = harness_questions(load_mmr(data, image_root=image_root, allow_outside=allow_outside_paths),
                                  prompt=prompt)
    return [Sample(id=q.uid, target=q.ground_truth,
                   input=[ChatMessageUser(content=[ContentImage(image=q.image), ContentText(text=q.prompt)])],
                   metadata={"uid": q.uid, **{k: q.columns[k] for k in ROW_COLUMNS}, "options": dict(q.options)})
            for q in questions]


def reply_row(metadata: dict[str, Any], target: str, completion: str, error: str | None) -> dict[str, Any]:
    """mmrobust's per-question row of one Inspect reply."""
    return {"uid": metadata["uid"], **{k: metadata[k] for k in ROW_COLUMNS}, "ground_truth": target,
            "options": dict(metadata["options"]), "response": None if error else completion, "error": error}


def _overall(scores: list[SampleScore]) -> dict[str, Any]:
    rows = [s.score.metadata["row"] for s in scores if s.score.metadata]
    parser = scores[0].score.metadata["parser"] if rows else "official"
    return compute_metrics(parse_records(rows, parser), n_boot=0)["overall"]


def _number(value: float | int | None) -> float:
    return math.nan if value is None else float(value)


@metric
def ra() -> Metric:
    """RA: pairs with both answers right / scored pairs (mmrobust's ``compute_metrics``; NaN with no pair)."""
    def compute(scores: list[SampleScore]) -> float:
        return _number(_overall(scores)["ra"])
    return compute


@metric
def mr() -> Metric:
    """MR: pairs misled (POS right, NEG wrong) / pairs with POS right (NaN when no POS is right)."""
    def compute(scores: list[SampleScore]) -> float:
        return _number(_overall(scores)["mr"])
    return compute


@metric
def pairs() -> Metric:
    """Pairs scored (both questions answered)."""
    def compute(scores: list[SampleScore]) -> float:
        return float(_overall(scores)["n_pairs"])
    return compute


@scorer(metrics=[ra(), mr(), pairs()])
def mmr_scorer(parser: str = "official") -> Scorer:
    """Parse each reply with mmrobust's ``parser``; the row is kept in the score's metadata for RA / MR."""
    PARSERS.get(parser)

    async def score(state: TaskState, target: Target) -> Score:
        row = reply_row(state.metadata, target.text, state.output.completion, state.output.error)
        parsed = parse_records([row], parser)[0]
        return Score(value=CORRECT if parsed["status"] == "correct" else INCORRECT, answer=parsed["pred"],
                     explanation=parsed["status"], metadata={"row": row, "parser": parser})

    return score


@task
def mmr(data: str, image_root: str | None = None, prompt: str = "official", parser: str = "official",
        max_tokens: int = 64, allow_outside_paths: bool = False) -> Task:
    """MMR on ``data`` (an MMR question file or the folder holding it), greedy, one epoch."""
    samples = mmr_samples(data, image_root=image_root, prompt=prompt, allow_outside_paths=allow_outside_paths)
    return Task(dataset=MemoryDataset(samples, name="mmr"), solver=generate(), scorer=mmr_scorer(parser),
                config=GenerateConfig(temperature=0.0, max_tokens=int(max_tokens)), epochs=1,
                metadata={"mmrobust": {"data": str(data), "prompt": prompt, "parser": parser}})
