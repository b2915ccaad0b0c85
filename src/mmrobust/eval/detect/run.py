"""Several detectors over one set of embeddings, sharing one nearest-neighbour search per reference set.

A reference set is the samples a sample's neighbours are searched among. By default it is all N samples
(one exact search). Huang et al. (ICLR 2025) score each training batch against itself (their
``extract_bd_scores.py``: random batches gathered over GPUs): a poisoned pair then has few poisoned
neighbours, which is what makes its neighbourhood sparse. Once the poisoned pairs in one reference set
outnumber k they are each other's nearest neighbours and look dense, so with many poisons pass
``reference_size``: the samples are split by a seeded permutation into near-equal reference sets of about that
many samples (fewer than k poisons in each: size < k / poison rate) and each set is scored on its own.
Or pass ``reference``: the embeddings of a dedicated reference set (their README's alternative), such as
a trusted clean set the defender holds; every sample's neighbours are then searched among those only (and
the isolation forest is fitted on them).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch

from mmrobust.errors import ConfigError
from mmrobust.eval.detect.knn import DEFAULT_CHUNK, check_embeddings, check_k, nearest, nearest_in
from mmrobust.registry import DETECTORS
from mmrobust.values import check_int, check_seed

Tensor = torch.Tensor
KNN_ARGS = ("k", "neighbors", "reference_neighbors", "chunk_size")  # what a kNN detector takes from the caller


def uses_neighbours(name: str) -> bool:
    """Whether detector ``name`` scores from the k nearest neighbours (takes ``k`` and a neighbour table)."""
    return "neighbors" in DETECTORS.slots(name)


def detector_options(names: Sequence[str], options: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict]:
    """Each detector's own options (``{"dao": {"form": "power"}}``) typed and checked against its signature;
    the caller's arguments (embeddings, k, seed) cannot be set this way. One-line ConfigError otherwise."""
    if not names or len(set(names)) != len(names):
        raise ConfigError(f"give each detector once (got {list(names)}); choose from {', '.join(DETECTORS.list())}")
    options = dict(options or {})
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise ConfigError(f"options given for detector(s) {unknown} that are not run; run them (--detector) or "
                          "drop the options")
    out = {}
    for name in names:
        fixed = ("embeddings", *KNN_ARGS) if uses_neighbours(name) else ("embeddings", "seed", "reference")
        out[name] = DETECTORS.typed(name, options.get(name), skip=fixed)
    return out


def reference_sets(n: int, size: int | None, seed: int, min_size: int = 1) -> list[Tensor]:
    """Sample numbers of each reference set: one set of all ``n`` (``size`` None or >= n), else a seeded
    permutation split into round(n / size) near-equal sets, never smaller than ``min_size``."""
    if size is None or size >= n:
        return [torch.arange(n)]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return list(torch.tensor_split(perm, max(1, min(round(n / size), n // min_size))))


def _score_set(x: Tensor, names: Sequence[str], typed: dict[str, dict], *, k: int, seed: int, chunk_size: int,
               device: str | torch.device | None, reference: Tensor | None = None) -> dict[str, Tensor]:
    knn = [n for n in names if uses_neighbours(n)]
    nb = ref_nb = None
    if knn and reference is None:
        nb = nearest(x, check_k(k, x.shape[0]) + 1, chunk_size=chunk_size, device=device)
    elif knn:
        nb = nearest_in(x, reference, k + 1, chunk_size=chunk_size, device=device)
        ref_nb = nearest(reference, k + 1, chunk_size=chunk_size, device=device)
    out = {}
    for name in names:
        fixed: dict[str, Any] = ({"k": k, "neighbors": nb, "reference_neighbors": ref_nb, "chunk_size": chunk_size}
                                 if name in knn else {"seed": seed, "reference": reference})
        out[name] = DETECTORS.get(name)(x, **fixed, **typed[name]).detach().double().cpu()
    return out


def _check_reference(x: Tensor, reference: Tensor, k: int, reference_size: int | None) -> Tensor:
    ref = check_embeddings(reference)
    if reference_size is not None:
        raise ConfigError("give a dedicated reference set or reference_size (random reference sets), not both")
    if ref.shape[1] != x.shape[1]:
        raise ConfigError(f"reference embeddings have {ref.shape[1]} dimensions, the samples {x.shape[1]}; embed "
                          "both with the same model and embedding")
    check_int("reference samples", ref.shape[0], low=k + 2, fix=f"k = {k} needs a reference of at least {k + 2}")
    return ref


def score_embeddings(embeddings: Tensor, names: Sequence[str], *, k: int, seed: int = 0,
                     options: Mapping[str, Mapping[str, Any]] | None = None, reference_size: int | None = None,
                     reference: Tensor | None = None, chunk_size: int = DEFAULT_CHUNK,
                     device: str | torch.device | None = None) -> dict[str, Tensor]:
    """Per-sample scores (N,) of ``embeddings`` (N, D) by each detector in ``names`` (float64, on the CPU).
    The nearest-neighbour detectors share one exact search per reference set (on ``device``); isolation forest
    takes ``seed``, which also seeds the split into reference sets of ``reference_size`` (None: one set).
    ``reference`` (R, D): a dedicated reference set instead (e.g. a trusted clean set's embeddings).

    Example::

        scores = score_embeddings(emb, ["dao", "kdist", "iforest"], k=16, seed=0)
        scores = score_embeddings(emb, ["dao"], k=16, reference=clean_emb)
    """
    x = check_embeddings(embeddings)
    typed = detector_options(names, options)
    check_seed("seed", seed)
    n = x.shape[0]
    if reference is not None:
        ref = _check_reference(x, reference, k, reference_size)
        return _score_set(x, names, typed, k=k, seed=seed, chunk_size=chunk_size, device=device, reference=ref)
    check_k(k, n)
    if reference_size is not None:
        check_int("reference_size", reference_size, low=k + 2, fix="a reference set must hold k + 2 samples")
    out = {name: torch.empty(n, dtype=torch.float64) for name in names}
    for ids in reference_sets(n, reference_size, seed, min_size=k + 2):
        part = _score_set(x[ids.to(x.device)], names, typed, k=k, seed=seed, chunk_size=chunk_size, device=device)
        for name, s in part.items():
            out[name][ids] = s
    return out
