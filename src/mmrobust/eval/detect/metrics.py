"""How well scores find the poisoned pairs a poison record lists: AUROC, average precision and precision at
the poison count (Huang et al., ICLR 2025 report AUROC; scikit-learn's metrics)."""
from __future__ import annotations

from typing import Any

import numpy as np

from mmrobust.errors import DataError
from mmrobust.eval.detect.forest import sklearn_module


def top_order(scores: np.ndarray) -> np.ndarray:
    """Sample positions by descending score; ties keep their order (the lower position first)."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")


def detection_metrics(scores: np.ndarray, poisoned: np.ndarray) -> dict[str, Any]:
    """``auroc``, ``ap`` (average precision) and ``precision_at_n`` (share of poisoned pairs among the n
    top-scored, n = the poison count) of ``scores`` (N,) against the boolean ``poisoned`` (N,); None for
    each when the samples are all poisoned or all clean."""
    scores, poisoned = np.asarray(scores, dtype=np.float64), np.asarray(poisoned, dtype=bool)
    if scores.shape != poisoned.shape or scores.ndim != 1:
        raise DataError(f"scores {scores.shape} and poison labels {poisoned.shape} must be two (N,) arrays")
    n_pos = int(poisoned.sum())
    out: dict[str, Any] = {"n": int(len(scores)), "n_poisoned": n_pos, "auroc": None, "ap": None,
                           "precision_at_n": None}
    if 0 < n_pos < len(scores):
        metrics = sklearn_module("metrics")
        out["auroc"] = float(metrics.roc_auc_score(poisoned, scores))
        out["ap"] = float(metrics.average_precision_score(poisoned, scores))
        out["precision_at_n"] = float(poisoned[top_order(scores)[:n_pos]].mean())
    return out
