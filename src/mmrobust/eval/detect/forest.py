"""Isolation forest (Liu, Ting & Zhou, ICDM 2008) on embeddings: the global-outlier baseline of Huang et al.,
ICLR 2025 (scikit-learn's ``IsolationForest``, as the reference code uses it). Higher = more suspicious."""
from __future__ import annotations

import torch

from mmrobust.errors import ConfigError
from mmrobust.eval.detect.knn import check_embeddings
from mmrobust.registry import DETECTORS
from mmrobust.values import check_int, check_seed

Tensor = torch.Tensor


def sklearn_module(name: str):
    """Import ``sklearn.<name>``; a one-line ConfigError naming the extra to install when it is missing."""
    import importlib

    try:
        return importlib.import_module(f"sklearn.{name}")
    except ModuleNotFoundError:
        raise ConfigError("the audit's isolation forest and metrics need scikit-learn: pip install "
                          "'mmrobust[audit]' (or scikit-learn)") from None


@DETECTORS.register("iforest")
def isolation_forest(embeddings: Tensor, *, n_estimators: int = 100, seed: int = 0,
                     reference: Tensor | None = None) -> Tensor:
    """Isolation forest baseline (Huang et al., ICLR 2025; Liu et al. 2008): score(x) = -s(x), s being
    scikit-learn's ``score_samples`` (the mean path length, normalized; lower = easier to isolate), fitted on
    the same N samples (or on ``reference``, a dedicated reference set) with 256 samples per tree.
    Example: ``isolation_forest(emb, seed=0)``."""
    x = check_embeddings(embeddings).detach().float().cpu().numpy()
    fit = x if reference is None else check_embeddings(reference).detach().float().cpu().numpy()
    check_int("iforest n_estimators", n_estimators, low=1)
    check_seed("iforest seed", seed)
    forest = sklearn_module("ensemble").IsolationForest(n_estimators=n_estimators, random_state=seed).fit(fit)
    return torch.from_numpy(-forest.score_samples(x)).double()
