"""Local density / dimensionality scores of embeddings: k-distance, LID (MLE), SLOF and DAO.

Huang, Erfani, Li, Ma & Bailey, "Detecting Backdoor Samples in Contrastive Language Image Pretraining",
ICLR 2025 (https://arxiv.org/abs/2502.01385; code github.com/HanxunH/Detect-CLIP-Backdoor-Samples): a
poisoned pair sits in a far sparser neighbourhood of the poisoned CLIP's embedding space than clean ones,
so local outlier scores find it. Every score here is per sample, (N,), higher = more suspicious.

Notation, as the reference code computes it (``backdoor_sample_detector/*.py``): for a sample x, let
r_1(x) <= r_2(x) <= ... be its Euclidean distances to the *other* samples, N_k(x) its k nearest other
samples and rho(x) = r_{k+1}(x) the radius of the ball that holds them (the code's ``a[:, k]`` after
removing x itself). Then

- k-distance:  kdist(x) = rho(x)
- LID by MLE (Levina & Bickel 2004 with k + 1 neighbours; Amsaleg et al. 2015):
  LID(x) = -k / sum_{i=1..k} log(r_i(x) / rho(x) + eps), eps = 1e-4 as in the reference (guards log 0)
- SLOF (simplified LOF, Schubert et al. 2014):  SLOF(x) = 1/k sum_{o in N_k(x)} rho(x) / rho(o)
- DAO (dimensionality-aware outlier score, Anderberg et al., SDM 2024), the paper's main detector:
  DAO(x) = 1/k sum_{o in N_k(x)} (rho(x) / rho(o)) ** LID(o)

DAO is returned in one of two forms (``form``): ``"log"`` (default), 1/k sum_o LID(o) * log(rho(x) / rho(o)),
what the reference code computes (its ``scores = lid_k * torch.log(...)``; the power form is the line it
left commented out) and so what gave the paper's tables; ``"power"``, the formula above, returned as its
logarithm (log-sum-exp: same ranking, never overflows). Defaults: k = 16 (the reference's
``extract_bd_scores.py --k`` and README; its LID detector used k = 64 there).

Where the reference code differs (checked by hand on fixed embeddings; README, Protocol notes): its
neighbours' LID and k-distance come from a distance matrix that still holds each neighbour's zero distance
to itself (so LID(o) gets a log(1e-4) term and rho(o) is r_k(o), not r_{k+1}(o)), and it looks neighbours up
with indices into rows whose self column was removed (shifted by one past the query's own row). Here query
and neighbours use the same N_k, rho and LID; with those two slips corrected the reference agrees to 1e-12.
A dedicated reference set (their README: "dedicated reference sets can also be used"; ``reference_neighbors``)
changes only where neighbours come from: N_k(x) and rho(x) are searched among the reference samples, and
rho(o), LID(o) of a neighbour o among the other reference samples. A trusted clean set as the reference is
what a defender who holds one (CleanCLIP's and PAR's threat model) can use when poisons are too many to be
outnumbered in random batches.

Degenerate ties are kept finite: distances in denominators are floored at ``FLOOR`` and a LID whose log-sum is
not negative is capped at k / FLOOR (the reference returns negative or inf and maps nan/inf to 1000 afterwards).
"""
from __future__ import annotations

import math

import torch

from mmrobust.errors import ConfigError
from mmrobust.eval.detect.knn import DEFAULT_CHUNK, Neighbors, check_embeddings, check_k, nearest
from mmrobust.registry import DETECTORS
from mmrobust.values import check_number

Tensor = torch.Tensor
DEFAULT_K = 16
LID_EPS = 1e-4  # the reference's guard inside log(r_i / rho + eps)
FLOOR = 1e-12  # smallest distance (and negative log-sum) divided by: duplicates give large finite scores
DAO_FORMS = ("log", "power")


def neighbourhood(embeddings: Tensor | None, k: int, neighbors: Neighbors | None = None,
                  chunk_size: int = DEFAULT_CHUNK) -> Neighbors:
    """The k nearest other samples of each sample and the (k+1)-th (k + 1 columns): from ``neighbors`` when
    given (computed once for several detectors), else searched in ``embeddings``."""
    if neighbors is None:
        if embeddings is None:
            raise ConfigError("give embeddings or a neighbour table")
        x = check_embeddings(embeddings)
        return nearest(x, check_k(k, x.shape[0]) + 1, chunk_size=chunk_size)
    check_k(k, neighbors.dist.shape[0])
    if neighbors.m < k + 1:
        raise ConfigError(f"the neighbour table holds {neighbors.m} neighbours; k = {k} needs {k + 1}")
    return neighbors.first(k + 1)


def tables(embeddings: Tensor | None, k: int, neighbors: Neighbors | None, reference_neighbors: Neighbors | None,
           chunk_size: int) -> tuple[Neighbors, Neighbors]:
    """The queries' table and the table of the samples its ``idx`` points at: the same one (one set, the
    default), or, for queries searched in a dedicated reference set (``neighbors`` from
    :func:`~mmrobust.eval.detect.knn.nearest_in`), the reference's own table (its k + 1 nearest other
    references), so rho(o) and LID(o) of a neighbour o come from the reference alone."""
    if reference_neighbors is not None and neighbors is None:
        raise ConfigError("reference_neighbors needs the queries' neighbours in that reference (neighbors=...)")
    nb = neighbourhood(embeddings, k, neighbors, chunk_size)
    if reference_neighbors is None:
        return nb, nb
    if reference_neighbors.m < k + 1:
        raise ConfigError(f"the reference's neighbour table holds {reference_neighbors.m} neighbours; k = {k} needs "
                          f"{k + 1}")
    return nb, reference_neighbors.first(k + 1)


def radius(nb: Neighbors) -> Tensor:
    """rho(x) = r_{k+1}(x) for a table of k + 1 neighbours: (N,)."""
    return nb.dist[:, -1]


def lid_mle(nb: Neighbors, eps: float = LID_EPS) -> Tensor:
    """LID(x) = -k / sum_{i<=k} log(r_i / rho + eps) for a table of k + 1 neighbours: (N,)."""
    k = nb.m - 1
    rho = radius(nb).clamp_min(FLOOR)[:, None]
    log_sum = torch.log(nb.dist[:, :k] / rho + eps).sum(1)                 # <= 0 unless r_i ~ rho
    return k / (-log_sum).clamp_min(FLOOR)


def _log_ratios(nb: Neighbors, ref: Neighbors) -> Tensor:
    """log(rho(x) / rho(o)) for each o in N_k(x): (N, k)."""
    log_rho_ref = torch.log(radius(ref).clamp_min(FLOOR))
    return torch.log(radius(nb).clamp_min(FLOOR))[:, None] - log_rho_ref[nb.idx[:, :-1]]


@DETECTORS.register("kdist")
def kdist(embeddings: Tensor | None = None, *, k: int = DEFAULT_K, neighbors: Neighbors | None = None,
          reference_neighbors: Neighbors | None = None, chunk_size: int = DEFAULT_CHUNK) -> Tensor:
    """k-distance (Huang et al., ICLR 2025): kdist(x) = rho(x) = r_{k+1}(x), the distance to the (k+1)-th
    nearest other sample; a poisoned pair's neighbourhood is sparse. Example: ``kdist(emb, k=16)`` -> (N,)."""
    return radius(neighbourhood(embeddings, k, neighbors, chunk_size))


@DETECTORS.register("lid")
def lid(embeddings: Tensor | None = None, *, k: int = DEFAULT_K, eps: float = LID_EPS,
        neighbors: Neighbors | None = None, reference_neighbors: Neighbors | None = None,
        chunk_size: int = DEFAULT_CHUNK) -> Tensor:
    """Local intrinsic dimensionality by MLE (Huang et al., ICLR 2025; Levina & Bickel 2004):
    LID(x) = -k / sum_{i=1..k} log(r_i(x) / r_{k+1}(x) + eps). Example: ``lid(emb, k=16)`` -> (N,)."""
    check_number("lid eps", eps, low=0.0)
    return lid_mle(neighbourhood(embeddings, k, neighbors, chunk_size), eps)


@DETECTORS.register("slof")
def slof(embeddings: Tensor | None = None, *, k: int = DEFAULT_K, neighbors: Neighbors | None = None,
         reference_neighbors: Neighbors | None = None, chunk_size: int = DEFAULT_CHUNK) -> Tensor:
    """Simplified local outlier factor (Huang et al., ICLR 2025; Schubert et al. 2014):
    SLOF(x) = 1/k sum_{o in N_k(x)} rho(x) / rho(o). Example: ``slof(emb, k=16)`` -> (N,)."""
    nb, ref = tables(embeddings, k, neighbors, reference_neighbors, chunk_size)
    rho_ref = radius(ref)
    return (radius(nb)[:, None] / rho_ref[nb.idx[:, :-1]].clamp_min(FLOOR)).mean(1)


@DETECTORS.register("dao")
def dao(embeddings: Tensor | None = None, *, k: int = DEFAULT_K, form: str = "log", eps: float = LID_EPS,
        neighbors: Neighbors | None = None, reference_neighbors: Neighbors | None = None,
        chunk_size: int = DEFAULT_CHUNK) -> Tensor:
    """Dimensionality-aware outlier score (DAO; Huang et al., ICLR 2025, after Anderberg et al. 2024):
    DAO(x) = 1/k sum_{o in N_k(x)} (rho(x) / rho(o)) ** LID(o). ``form="log"``: the reference code's
    1/k sum_o LID(o) log(rho(x) / rho(o)); ``form="power"``: log DAO(x). Example: ``dao(emb, k=16)`` -> (N,)."""
    if form not in DAO_FORMS:
        raise ConfigError(f"dao form {form!r} is not one of {', '.join(DAO_FORMS)}")
    check_number("dao eps", eps, low=0.0)
    nb, ref = tables(embeddings, k, neighbors, reference_neighbors, chunk_size)
    terms = lid_mle(ref, eps)[nb.idx[:, :-1]] * _log_ratios(nb, ref)     # (N, k): LID(o) log(rho(x)/rho(o))
    if form == "log":
        return terms.mean(1)
    return torch.logsumexp(terms, dim=1) - math.log(terms.shape[1])
