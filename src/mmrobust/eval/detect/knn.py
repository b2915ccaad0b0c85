"""Exact nearest neighbours of every row of an embedding matrix, in blocks of rows.

The poisoned-pair detectors (Huang et al., ICLR 2025) score each sample by its k nearest other samples.
:func:`nearest` finds them exactly with no index structure: for a block of ``chunk_size`` rows it forms
their squared Euclidean distances to all N rows with one matmul, ``|a|^2 + |b|^2 - 2 a.b``, sets the
sample's own column to +inf (a sample is never its own neighbour) and keeps the ``m`` smallest per row.
The kept distances are then recomputed directly as ``|a - b|`` (no cancellation, as ``torch.cdist``'s
``donot_use_mm_for_euclid_dist`` mode the reference code uses for LID), so memory is
O(N * m + chunk_size * N) and the result does not depend on ``chunk_size``. Example::

    nb = nearest(torch.randn(1000, 64), 17)     # nb.dist (1000, 17) ascending, nb.idx (1000, 17)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from mmrobust.errors import DataError
from mmrobust.values import check_int

Tensor = torch.Tensor
DEFAULT_CHUNK = 1024


@dataclass(frozen=True)
class Neighbors:
    """The ``m`` nearest other rows of every row: ``dist`` (N, m) Euclidean distances in ascending order and
    ``idx`` (N, m) their row numbers (never the row itself)."""

    dist: Tensor
    idx: Tensor

    @property
    def m(self) -> int:
        return int(self.dist.shape[1])

    def first(self, m: int) -> "Neighbors":
        """The ``m`` nearest only (``m`` <= :attr:`m`)."""
        check_int("neighbours asked of a neighbour table", m, low=1, high=self.m)
        return Neighbors(self.dist[:, :m], self.idx[:, :m])


def check_embeddings(embeddings: Tensor) -> Tensor:
    """``embeddings`` if it is a finite (N, D) floating tensor with N >= 2; a one-line DataError otherwise."""
    if not isinstance(embeddings, Tensor) or embeddings.ndim != 2 or not embeddings.is_floating_point():
        shape = tuple(embeddings.shape) if isinstance(embeddings, Tensor) else type(embeddings).__name__
        raise DataError(f"embeddings must be a floating (N, D) tensor, got {shape}")
    if embeddings.shape[0] < 2 or embeddings.shape[1] < 1:
        raise DataError(f"embeddings of shape {tuple(embeddings.shape)}: need at least 2 samples of 1 dimension")
    if not bool(torch.isfinite(embeddings).all()):
        raise DataError("embeddings hold NaN or inf values; the model's weights or inputs are broken")
    return embeddings


def check_k(k: int, n: int) -> int:
    """``k`` neighbours of ``n`` samples: the detectors read the k nearest and the (k+1)-th, so 1 <= k <= n - 2."""
    return check_int("k", k, low=1, high=max(1, n - 2),
                     fix=f"k nearest neighbours and one more must exist among the other {n - 1} samples")


def nearest(embeddings: Tensor, m: int, *, chunk_size: int = DEFAULT_CHUNK, dtype: torch.dtype = torch.float64,
            device: str | torch.device | None = None) -> Neighbors:
    """The ``m`` nearest other rows of every row of ``embeddings`` (N, D), exactly, by Euclidean distance.

    Computed in ``dtype`` (float64: distances of near neighbours keep their digits) on ``device`` (default:
    the embeddings' own), ``chunk_size`` rows at a time; returns tensors on that device."""
    x = check_embeddings(embeddings).to(device=device or embeddings.device, dtype=dtype)
    check_int("neighbours per sample", m, low=1, high=x.shape[0] - 1, fix=f"only {x.shape[0] - 1} other samples exist")
    return _search(x, x, m, chunk_size, own=True)


def nearest_in(queries: Tensor, reference: Tensor, m: int, *, chunk_size: int = DEFAULT_CHUNK,
               dtype: torch.dtype = torch.float64, device: str | torch.device | None = None) -> Neighbors:
    """The ``m`` nearest rows of ``reference`` (R, D) to every row of ``queries`` (N, D), exactly: a dedicated
    reference set (Huang et al., ICLR 2025, README of their code), so no query is excluded from it; ``idx``
    numbers rows of ``reference``. Same precision and blocking as :func:`nearest`."""
    x = check_embeddings(queries).to(device=device or queries.device, dtype=dtype)
    ref = check_embeddings(reference).to(device=x.device, dtype=dtype)
    if ref.shape[1] != x.shape[1]:
        raise DataError(f"reference embeddings have {ref.shape[1]} dimensions, the queries {x.shape[1]}; embed both "
                        "with the same model and --embedding")
    check_int("neighbours per sample", m, low=1, high=ref.shape[0], fix=f"the reference holds {ref.shape[0]} samples")
    return _search(x, ref, m, chunk_size, own=False)


def _search(x: Tensor, ref: Tensor, m: int, chunk_size: int, *, own: bool) -> Neighbors:
    """Blocked exact search of the ``m`` nearest rows of ``ref`` for each row of ``x`` (``own``: x is ref, and a
    row is never its own neighbour)."""
    check_int("chunk_size", chunk_size, low=1)
    sq_x, sq_r = (x * x).sum(1), (ref * ref).sum(1)
    dists, idxs = [], []
    for start in range(0, x.shape[0], chunk_size):
        block = x[start:start + chunk_size]                                   # (c, D)
        c = block.shape[0]
        d2 = (sq_x[start:start + c, None] + sq_r[None, :] - 2.0 * (block @ ref.T)).clamp_min_(0)  # (c, R)
        if own:
            rows = torch.arange(c, device=x.device)
            d2[rows, start + rows] = float("inf")                              # never its own neighbour
        idx = torch.topk(d2, m, dim=1, largest=False, sorted=True).indices     # (c, m)
        del d2
        dist = (block[:, None, :] - ref[idx]).norm(dim=2)                      # (c, m), exact |a - b|
        dist, order = dist.sort(dim=1, stable=True)
        dists.append(dist)
        idxs.append(idx.gather(1, order))
    return Neighbors(torch.cat(dists), torch.cat(idxs))
