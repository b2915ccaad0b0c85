"""MMR metrics from per-item records: RA and MR per category, per level and pooled (micro).

For a pair (POS question, leading NEG question about the same image):

- RA (robustness accuracy) = pairs with both answers right / pairs.
- MR (misleading rate) = pairs with POS right and NEG wrong / pairs with POS right
  (the model understood the image, then was led astray). ``None`` when no POS is right.

Pairs are matched by id in any order (``pairing.pair_by_id``, the default), or, with
``pairing="reference"``, by file position as the leaderboard's scorer does
(``reference.pair_by_position``; its corrections are listed in ``reference_corrections``).
The mode is recorded in ``metrics["pairing"]``. An unparseable reply is the
model's answer and counts as wrong; a pair with an API/inference error has no answer to score and
is left out of RA/MR and counted in ``n_pairs_error``. Pooled numbers are over all pairs (micro),
not a mean of categories. Confidence intervals: percentile bootstrap over pairs, seeded.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from mmrobust.eval.mmr.pairing import Pair, check_pairing, pair_by_id
from mmrobust.eval.mmr.reference import pair_by_position
from mmrobust.eval.mllm.harness import STATUSES, parse_rows
from mmrobust.eval.mllm.task import group_seed

__all__ = ["PAIRINGS", "STATUSES", "PairOutcomes", "bootstrap_ci", "check_pairing", "compute_metrics",
           "group_metrics", "parse_records"]
parse_records = parse_rows  # MMR rows parse like any multiple-choice task's (kept under its old name)


@dataclass(frozen=True)
class PairOutcomes:
    """Boolean arrays over the scored pairs of one group."""

    both: np.ndarray
    pos_right: np.ndarray
    misled: np.ndarray


def _outcomes(pairs: list[Pair[dict]]) -> PairOutcomes:
    """The reference's rule, roles read from the tags: misled = one row right, the other wrong, and
    the right one tagged POS. For a POS/NEG pair it is plain ``pos right and neg wrong``; it only
    differs on the POS/POS or NEG/NEG pairs that reference pairing keeps (see ``reference``)."""
    a = np.array([p.pos["status"] == "correct" for p in pairs], dtype=bool)
    b = np.array([p.neg["status"] == "correct" for p in pairs], dtype=bool)
    a_pos = np.array([p.pos["question_type"] == "POS" for p in pairs], dtype=bool)
    b_pos = np.array([p.neg["question_type"] == "POS" for p in pairs], dtype=bool)
    both = a & b
    misled = (a & ~b & a_pos) | (~a & b & b_pos)
    return PairOutcomes(both=both, pos_right=both | misled, misled=misled)


def group_metrics(pairs: list[Pair[dict]], *, n_errors: int, n_boot: int, seed: int, name: str,
                  ci: float = 0.95) -> dict[str, Any]:
    """RA, MR, counts and bootstrap CIs for one group of scored (error-free) pairs."""
    n = len(pairs)
    o = _outcomes(pairs)
    n_pos = int(o.pos_right.sum())
    items = [r for p in pairs for r in (p.pos, p.neg)]
    out: dict[str, Any] = {
        "n_pairs": n, "n_pairs_error": n_errors,
        "ra": float(o.both.mean()) if n else None,
        "mr": float(o.misled.sum() / n_pos) if n_pos else None,
        "n_both_right": int(o.both.sum()), "n_pos_right": n_pos, "n_misled": int(o.misled.sum()),
        "pos_acc": float(o.pos_right.mean()) if n else None,
        "neg_acc": float(np.mean([p.neg["status"] == "correct" for p in pairs])) if n else None,
        "n_unparseable": sum(r["status"] == "unparseable" for r in items),
    }
    out["ra_ci"], out["mr_ci"] = bootstrap_ci(o, n_boot=n_boot, seed=group_seed(seed, name), ci=ci)
    return out


def bootstrap_ci(o: PairOutcomes, *, n_boot: int, seed: int | list[int], ci: float = 0.95
                 ) -> tuple[list[float] | None, list[float] | None]:
    """Percentile bootstrap over pairs for RA and MR (resamples with no POS right are skipped for MR)."""
    n = len(o.both)
    if n == 0 or n_boot <= 0:
        return None, None
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))  # (B, n) resampled pair indices
    ra = o.both[idx].mean(axis=1)
    pos = o.pos_right[idx].sum(axis=1)
    mis = o.misled[idx].sum(axis=1)
    lo, hi = (1 - ci) / 2 * 100, (1 + ci) / 2 * 100
    ra_ci = [float(np.percentile(ra, lo)), float(np.percentile(ra, hi))]
    ok = pos > 0
    mr_ci = [float(np.percentile(mis[ok] / pos[ok], lo)), float(np.percentile(mis[ok] / pos[ok], hi))] if ok.any() else None
    return ra_ci, mr_ci


PairRows = Callable[[list[dict]], tuple[list[Pair[dict]], list[dict], dict[str, Any]]]


def _by_id(rows: list[dict]) -> tuple[list[Pair[dict]], list[dict], dict[str, Any]]:
    pairs, anomalies = pair_by_id(rows, id_of=lambda r: r["id"], type_of=lambda r: r["question_type"])
    return pairs, anomalies, {}


def _by_position(rows: list[dict]) -> tuple[list[Pair[dict]], list[dict], dict[str, Any]]:
    got = pair_by_position(rows, id_of=lambda r: r["id"], type_of=lambda r: r["question_type"])
    return got.pairs, got.anomalies, {"reference_corrections": got.corrections, "n_neg_first": got.n_neg_first}


PAIRINGS: dict[str, PairRows] = {"id": _by_id, "reference": _by_position}  # rows in file order for "reference"


def compute_metrics(rows: list[dict], *, n_boot: int = 1000, seed: int = 0, ci: float = 0.95,
                    pairing: str = "id") -> dict[str, Any]:
    """Metrics over parsed rows (``parse_records``): ``overall`` (micro over all pairs),
    ``per_level``, ``per_category``, item status counts, the ``pairing`` mode and its anomalies
    (``"reference"``: rows must be in file order; adds ``reference_corrections``)."""
    pairs, anomalies, pairing_extra = PAIRINGS[check_pairing(pairing)](rows)
    scored, errored = [], []
    for p in pairs:
        (errored if "error" in (p.pos["status"], p.neg["status"]) else scored).append(p)

    def block(key: str | None, value: str | None, name: str) -> dict[str, Any]:
        sel = [p for p in scored if key is None or p.pos[key] == value]
        n_err = sum(1 for p in errored if key is None or p.pos[key] == value)
        return group_metrics(sel, n_errors=n_err, n_boot=n_boot, seed=seed, name=name, ci=ci)

    levels = sorted({p.pos["level"] for p in pairs})
    cats = sorted({p.pos["category"] for p in pairs})
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    return {
        "overall": block(None, None, "overall"),
        "per_level": {lv: block("level", lv, f"level:{lv}") for lv in levels},
        "per_category": {c: block("category", c, f"category:{c}") for c in cats},
        "item_status": counts,
        "n_items": len(rows),
        "pairing": pairing,
        "pairing_anomalies": anomalies,
        **pairing_extra,
        "bootstrap": {"n_boot": n_boot, "seed": seed, "ci": ci, "method": "percentile, resampling pairs"},
    }
