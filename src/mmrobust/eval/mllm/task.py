"""What an MLLM benchmark is on the shared harness: its questions, how each is asked, how answers score.

A benchmark subclasses :class:`MLLMTask` and gives ``questions()`` (image, prompt, ground truth,
the columns its per-sample rows carry); the harness (``harness.run_task``) asks them through any
adapter with the response cache, parses each reply with a registered parser, and calls ``score``,
``tables`` and ``plots``. The defaults score multiple-choice accuracy overall and per ``group``
with a seeded percentile bootstrap, so a simple benchmark is just its questions (as lmms-eval's
tasks and VLMEvalKit's ``build_prompt`` / ``evaluate`` split it, in fewer parts).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from mmrobust.models.mllm.base import check_history
from mmrobust.registry import PARSERS
from mmrobust.reports.contract import Table


@dataclass(frozen=True)
class Question:
    """One request: ``uid`` unique in the task, the image file, the text sent after it, the
    ground truth, lettered ``options`` (for parsers that read them), the ``group`` it is scored in,
    extra per-sample ``columns`` and ``meta`` (given to adapters; never the ground truth), and the
    conversation's earlier ``history`` turns (``GenRequest.history``; empty for a first question)."""

    uid: str
    image: str
    prompt: str
    ground_truth: str
    options: Mapping[str, str] = field(default_factory=dict)
    group: str = "all"
    columns: Mapping[str, Any] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)
    history: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.history:
            object.__setattr__(self, "history", check_history(self.history))


def bootstrap_mean(values: np.ndarray, *, n_boot: int, seed: int | list[int], ci: float = 0.95
                   ) -> list[float] | None:
    """Percentile-bootstrap CI of the mean of ``values`` (resampling items); None when empty."""
    if len(values) == 0 or n_boot <= 0:
        return None
    idx = np.random.default_rng(seed).integers(0, len(values), size=(n_boot, len(values)))
    means = values[idx].mean(axis=1)
    return [float(np.percentile(means, (1 - ci) / 2 * 100)), float(np.percentile(means, (1 + ci) / 2 * 100))]


def group_seed(seed: int, name: str) -> list[int]:
    """A bootstrap seed per group, so adding a group never changes another group's interval."""
    return [seed, zlib.crc32(name.encode())]


class MLLMTask:
    """Base of every MLLM benchmark; override ``questions`` (required) and any of the rest.

    A task that can be evaluated under an untargeted pixel attack (``mmrobust lvlm eval``,
    ``eval.lvlm.under_attack``) also gives ``metric_keys``, :meth:`references` and :meth:`sample_scores`
    (and ``sample_keys`` where its per-sample values are not its metrics); the others raise
    NotImplementedError.
    """

    name = "mllm"
    parser = "official"  # default answer parser (a PARSERS name)
    # under attack: the metrics of ``score(...)["overall"]`` reported clean and attacked, e.g. ("accuracy",)
    metric_keys: tuple[str, ...] = ()

    def questions(self) -> Sequence[Question]:
        raise NotImplementedError

    @property
    def sample_keys(self) -> tuple[str, ...]:
        """Names of the columns of :meth:`sample_scores` (default ``metric_keys``; MMR scores pairs, so its
        per-sample column is ``correct``)."""
        return self.metric_keys

    def references(self, q: Question) -> list[str]:
        """Under attack: the answer(s) whose LM loss an untargeted attack on ``q``'s image raises (the model
        is pushed away from them), e.g. the most common human answer, or all reference captions."""
        raise NotImplementedError(f"task {self.name!r} cannot be attacked: it gives no references (implement "
                                  "references, sample_scores and metric_keys)")

    def sample_scores(self, rows: list[dict[str, Any]]) -> np.ndarray:
        """Under attack: (N, len(sample_keys)) per-sample values of parsed harness rows (``pred`` and ``status``
        set by ``parse_rows``), in row order; unparseable and error rows score 0."""
        raise NotImplementedError(f"task {self.name!r} cannot be attacked: it gives no per-sample scores "
                                  "(implement references, sample_scores and metric_keys)")

    def parse(self, response: str, row: Mapping[str, Any], parser: str) -> str | None:
        """The answer in ``response`` (None: unparseable), by the registered ``parser``."""
        return PARSERS.get(parser)(response, row.get("options") or None)

    def score(self, rows: list[dict[str, Any]], *, n_boot: int, seed: int) -> dict[str, Any]:
        """Accuracy overall and per group over parsed rows; errors are left out and counted."""
        groups = sorted({str(r.get("group", "all")) for r in rows})
        return {"overall": self._accuracy(rows, n_boot, seed, "overall"),
                "per_group": {g: self._accuracy([r for r in rows if str(r.get("group", "all")) == g], n_boot, seed,
                                                f"group:{g}") for g in groups},
                "bootstrap": {"n_boot": n_boot, "seed": seed, "method": "percentile, resampling items"}}

    @staticmethod
    def _accuracy(rows: list[dict[str, Any]], n_boot: int, seed: int, name: str) -> dict[str, Any]:
        scored = [r for r in rows if r["status"] != "error"]
        ok = np.array([r["status"] == "correct" for r in scored], dtype=float)
        return {"accuracy": float(ok.mean()) if len(ok) else None, "n": len(scored),
                "n_errors": len(rows) - len(scored),
                "n_unparseable": sum(r["status"] == "unparseable" for r in scored),
                "accuracy_ci": bootstrap_mean(ok, n_boot=n_boot, seed=group_seed(seed, name))}

    def summary(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """The headline numbers, compared across parsers in ``by_parser``."""
        o = metrics["overall"]
        return {k: o[k] for k in ("accuracy", "n", "n_unparseable")}

    def tables(self, metrics: dict[str, Any]) -> list[Table]:
        rows = [{"group": g, **m} for g, m in [*metrics["per_group"].items(), ("all (micro)", metrics["overall"])]]
        return [Table.of(f"{self.name}: accuracy per group",
                         [("group", "group"), ("accuracy", "accuracy", "%"), ("n", "questions", "count"),
                          ("n_unparseable", "unparseable answers", "count"), ("n_errors", "errors", "count")], rows,
                         f"Share of questions answered right (parser: {metrics.get('parser')}); unparseable answers "
                         "count as wrong, questions with an error are left out.")]

    def plots(self, metrics: dict[str, Any], out_dir: Path) -> list[str]:
        """Plot files written into ``out_dir`` (names relative to it)."""
        return []

    def provenance(self) -> dict[str, Any]:
        """Where the questions came from (file, hashes, anomalies), for the record."""
        return {}
