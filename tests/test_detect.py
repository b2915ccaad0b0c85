"""Poisoned-pair detectors (Huang et al., ICLR 2025): each equals a naive implementation of its formula (full
distance matrix, Python loops) on fixed random embeddings; the blocked kNN equals the unblocked one; a planted
tight cluster is found; invariants (shapes, finite, self excluded, k checked) and one-line errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmrobust.errors import ConfigError, DataError
from mmrobust.eval.detect import (dao, detection_metrics, isolation_forest, kdist, lid, nearest, score_embeddings,
                                  slof, top_order)
from mmrobust.eval.detect.knn import nearest_in
from mmrobust.registry import DETECTORS

pytest.importorskip("sklearn")
EPS = 1e-4


def _embeddings(n: int = 60, d: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _naive(e: np.ndarray, k: int) -> dict[str, list[float]]:
    """The formulas of the module docstring, written out: r_i = sorted distances to the other samples,
    rho = r_{k+1}, N_k = the k nearest others."""
    n = len(e)
    dist = [[math.sqrt(sum((a - b) ** 2 for a, b in zip(e[i], e[j]))) for j in range(n)] for i in range(n)]
    others = [sorted((dist[i][j], j) for j in range(n) if j != i) for i in range(n)]
    rho = [others[i][k][0] for i in range(n)]
    near = [[j for _, j in others[i][:k]] for i in range(n)]
    lids = [-k / sum(math.log(others[i][t][0] / rho[i] + EPS) for t in range(k)) for i in range(n)]
    return {"kdist": rho, "lid": lids,
            "slof": [sum(rho[i] / rho[o] for o in near[i]) / k for i in range(n)],
            "dao_log": [sum(lids[o] * math.log(rho[i] / rho[o]) for o in near[i]) / k for i in range(n)],
            "dao_power": [math.log(sum((rho[i] / rho[o]) ** lids[o] for o in near[i]) / k) for i in range(n)]}


@pytest.mark.parametrize("k", [1, 5, 16])
def test_each_detector_equals_its_formula(k):
    x = _embeddings()
    want = _naive(x.numpy(), k)
    got = {"kdist": kdist(x, k=k), "lid": lid(x, k=k), "slof": slof(x, k=k), "dao_log": dao(x, k=k),
           "dao_power": dao(x, k=k, form="power")}
    for name, values in got.items():
        assert values.shape == (60,) and values.dtype == torch.float64
        torch.testing.assert_close(values, torch.tensor(want[name], dtype=torch.float64), rtol=1e-9, atol=1e-11,
                                   msg=name)


def test_blocked_nearest_neighbours_equal_one_block_and_a_sort():
    x = _embeddings(97, 5, seed=1)
    whole = nearest(x, 9, chunk_size=97)
    for chunk in (1, 7, 50):
        part = nearest(x, 9, chunk_size=chunk)
        assert torch.equal(part.idx, whole.idx) and torch.equal(part.dist, whole.dist)
    full = torch.cdist(x, x).fill_diagonal_(float("inf")).sort(dim=1)
    assert torch.equal(whole.idx, full.indices[:, :9])
    torch.testing.assert_close(whole.dist, full.values[:, :9], rtol=0, atol=1e-12)
    assert not (whole.idx == torch.arange(97)[:, None]).any()  # a sample is never its own neighbour
    assert (whole.dist.diff(dim=1) >= 0).all()


def test_float32_embeddings_are_searched_in_float64():
    x = _embeddings().float()
    torch.testing.assert_close(dao(x, k=8), dao(x.double(), k=8), rtol=0, atol=0)


def _planted(n_poison: int, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Five clean classes (100 samples each, spread 0.3 in 16-D around centres at radius 3) and one tight
    cluster (spread 0.05) of ``n_poison`` samples around a sixth centre: what a trigger does to the poisoned pairs."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(6, 16, generator=g)
    centres = 3 * centres / centres.norm(dim=1, keepdim=True)
    clean = torch.cat([c + 0.3 * torch.randn(100, 16, generator=g) for c in centres[:5]])
    poison = centres[5] + 0.05 * torch.randn(n_poison, 16, generator=g)
    return torch.cat([clean, poison]), np.r_[np.zeros(500, bool), np.ones(n_poison, bool)]


def test_a_planted_cluster_smaller_than_k_is_found():
    x, poisoned = _planted(10)
    scores = score_embeddings(x, ["dao", "kdist", "slof", "iforest"], k=16, seed=0)
    for name, s in scores.items():
        m = detection_metrics(s.numpy(), poisoned)
        assert m["auroc"] > 0.95 and m["n_poisoned"] == 10, (name, m)
        assert torch.isfinite(s).all() and s.shape == (510,)
    assert detection_metrics(scores["dao"].numpy(), poisoned)["precision_at_n"] == 1.0


def test_a_larger_cluster_needs_reference_sets_smaller_than_k_over_the_rate():
    # 40 poisons outnumber k = 16: over all samples they are each other's neighbours and look dense; in
    # reference sets of 150 (about 11 poisons each, the paper's random batches) they stand out again.
    x, poisoned = _planted(40)
    whole = score_embeddings(x, ["kdist", "dao"], k=16)
    split = score_embeddings(x, ["kdist", "dao"], k=16, reference_size=150, seed=0)
    assert detection_metrics(whole["kdist"].numpy(), poisoned)["auroc"] < 0.1
    assert detection_metrics(split["kdist"].numpy(), poisoned)["auroc"] > 0.95
    assert detection_metrics(split["dao"].numpy(), poisoned)["auroc"] > 0.95
    again = score_embeddings(x, ["kdist"], k=16, reference_size=150, seed=0)["kdist"]
    assert torch.equal(again, split["kdist"])


def _naive_against(q: np.ndarray, ref: np.ndarray, k: int) -> dict[str, list[float]]:
    """The formulas with a dedicated reference set, written out: a query's N_k and rho among the reference
    samples; a reference sample's rho and LID among the *other* reference samples."""
    def dist(a, b):
        return math.sqrt(sum((u - v) ** 2 for u, v in zip(a, b)))

    own = _naive(ref, k)
    rho_r, lid_r = own["kdist"], own["lid"]
    out: dict[str, list[float]] = {"kdist": [], "lid": [], "slof": [], "dao_log": [], "dao_power": []}
    for x in q:
        r = sorted((dist(x, o), j) for j, o in enumerate(ref))
        rho, near = r[k][0], [j for _, j in r[:k]]
        out["kdist"].append(rho)
        out["lid"].append(-k / sum(math.log(r[t][0] / rho + EPS) for t in range(k)))
        out["slof"].append(sum(rho / rho_r[o] for o in near) / k)
        out["dao_log"].append(sum(lid_r[o] * math.log(rho / rho_r[o]) for o in near) / k)
        out["dao_power"].append(math.log(sum((rho / rho_r[o]) ** lid_r[o] for o in near) / k))
    return out


@pytest.mark.parametrize("k", [1, 5, 16])
def test_each_detector_against_a_dedicated_reference_equals_its_formula(k):
    q, ref = _embeddings(40, seed=2), _embeddings(50, seed=3)
    want = _naive_against(q.numpy(), ref.numpy(), k)
    nb, ref_nb = nearest_in(q, ref, k + 1), nearest(ref, k + 1)
    tables = {"neighbors": nb, "reference_neighbors": ref_nb}
    got = {"kdist": kdist(q, k=k, **tables), "lid": lid(q, k=k, **tables), "slof": slof(q, k=k, **tables),
           "dao_log": dao(q, k=k, **tables), "dao_power": dao(q, k=k, form="power", **tables)}
    for name, values in got.items():
        assert values.shape == (40,)
        torch.testing.assert_close(values, torch.tensor(want[name], dtype=torch.float64), rtol=1e-9, atol=1e-11,
                                   msg=name)
    scored = score_embeddings(q, ["dao", "slof"], k=k, reference=ref)
    torch.testing.assert_close(scored["dao"], got["dao_log"], rtol=0, atol=0)


def test_nearest_in_a_reference_equals_a_sort_and_keeps_equal_rows():
    q, ref = _embeddings(33, 5, seed=4), _embeddings(70, 5, seed=5)
    got = nearest_in(q, ref, 6, chunk_size=7)
    full = torch.cdist(q, ref).sort(dim=1)
    assert torch.equal(got.idx, full.indices[:, :6])
    torch.testing.assert_close(got.dist, full.values[:, :6], rtol=0, atol=1e-12)
    same = nearest_in(ref[:3], ref, 1)  # a query that is also in the reference finds itself at distance 0
    assert same.idx[:, 0].tolist() == [0, 1, 2] and float(same.dist.abs().max()) < 1e-12


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_cluster_outnumbering_k_is_found_against_a_clean_reference(seed):
    # 40 poisons of 540, more than k = 16: over all samples they are each other's neighbours and look dense;
    # against a held-out clean set (new samples of the same five classes) they sit far from everything.
    x, poisoned = _planted(40, seed=seed)
    centres = torch.randn(6, 16, generator=torch.Generator().manual_seed(seed))  # _planted's first draw
    centres = 3 * centres / centres.norm(dim=1, keepdim=True)
    g = torch.Generator().manual_seed(seed + 100)  # other noise: no held-out sample equals an audited one
    held_out = torch.cat([c + 0.3 * torch.randn(60, 16, generator=g) for c in centres[:5]])
    assert float(torch.cdist(x, held_out).min()) > 1e-3
    whole = score_embeddings(x, ["dao"], k=16)["dao"]
    against = score_embeddings(x, ["dao", "kdist", "slof"], k=16, reference=held_out)
    assert detection_metrics(whole.numpy(), poisoned)["auroc"] < 0.9
    for name, sc in against.items():
        m = detection_metrics(sc.numpy(), poisoned)
        assert m["auroc"] > 0.99 and m["precision_at_n"] > 0.95, (name, m)


def test_isolation_forest_fits_on_the_reference():
    x, ref = _embeddings(50), _embeddings(80, seed=6)
    a = isolation_forest(x, seed=0, reference=ref)
    assert a.shape == (50,) and not torch.equal(a, isolation_forest(x, seed=0))
    forest = pytest.importorskip("sklearn.ensemble").IsolationForest(random_state=0).fit(ref.float().numpy())
    torch.testing.assert_close(a, torch.from_numpy(-forest.score_samples(x.float().numpy())).double())


def test_reference_sets_cover_every_sample_once_and_hold_k_plus_2():
    from mmrobust.eval.detect.run import reference_sets

    for n, size, least in ((1000, 100, 18), (530, 150, 18), (19, 18, 18), (50, 100, 18)):
        sets = reference_sets(n, size, seed=0, min_size=least)
        assert sorted(torch.cat(sets).tolist()) == list(range(n)) and min(map(len, sets)) >= min(n, least)
        assert max(map(len, sets)) - min(map(len, sets)) <= 1
    assert [len(s) for s in reference_sets(530, 150, seed=0, min_size=18)] == [133, 133, 132, 132]


def test_lid_estimates_the_intrinsic_dimension():
    g = torch.Generator().manual_seed(0)
    for d, lo, hi in ((2, 1.6, 2.5), (8, 5.0, 9.0)):
        x = torch.zeros(2000, 16, dtype=torch.float64)
        x[:, :d] = torch.rand(2000, d, generator=g, dtype=torch.float64)
        assert lo < float(lid(x, k=16).median()) < hi, d


def test_duplicates_give_finite_scores():
    x = torch.cat([_embeddings(30), torch.zeros(20, 8, dtype=torch.float64)])  # 20 identical samples
    for name in ("dao", "kdist", "lid", "slof"):
        assert torch.isfinite(DETECTORS.get(name)(x, k=4)).all(), name
    assert torch.isfinite(dao(x, k=4, form="power")).all()


def test_isolation_forest_is_seeded_and_flags_the_far_point():
    x = torch.cat([_embeddings(200), torch.full((1, 8), 8.0, dtype=torch.float64)])
    a, b = isolation_forest(x, seed=3), isolation_forest(x, seed=3)
    assert torch.equal(a, b) and not torch.equal(a, isolation_forest(x, seed=4))
    assert int(a.argmax()) == 200


def test_metrics_against_hand_counts():
    scores = np.array([0.9, 0.8, 0.8, 0.1, 0.5])
    poisoned = np.array([True, False, True, False, False])
    m = detection_metrics(scores, poisoned)
    assert m["auroc"] == pytest.approx(5.5 / 6) and m["precision_at_n"] == 0.5  # top 2: rows 0 and 1 (a tie: 1 first)
    assert m["ap"] == pytest.approx((1 + 2 / 3) / 2)
    assert list(top_order(scores)) == [0, 1, 2, 4, 3]
    assert detection_metrics(scores, np.zeros(5, bool))["auroc"] is None


@pytest.mark.parametrize("call,message", [
    (lambda x: dao(x, k=0), "k must be an integer in [1, 58]"),
    (lambda x: kdist(x, k=59), "k must be an integer in [1, 58]"),
    (lambda x: slof(x, k=2.5), "k must be an integer"),
    (lambda x: dao(x, form="mean"), "dao form 'mean' is not one of log, power"),
    (lambda x: lid(x[:1]), "need at least 2 samples"),
    (lambda x: kdist(x.new_full((5, 3), float("nan")), k=1), "NaN or inf"),
    (lambda x: kdist(x[:, 0], k=1), "must be a floating (N, D) tensor"),
    (lambda x: score_embeddings(x, ["dao", "dao"], k=4), "give each detector once"),
    (lambda x: score_embeddings(x, ["dao"], k=4, options={"lid": {"eps": "0"}}), "not run"),
    (lambda x: score_embeddings(x, ["dao"], k=4, options={"dao": {"k": "3"}}), "has no option(s) ['k']"),
    (lambda x: score_embeddings(x, ["dao"], k=4, options={"dao": {"form": "3"}}), "dao form '3'"),
    (lambda x: score_embeddings(x, ["dao"], k=4, reference_size=5), "reference_size must be an integer"),
    (lambda x: score_embeddings(x, ["daoo"], k=4), "did you mean 'dao'?"),
    (lambda x: score_embeddings(x, ["dao"], k=4, reference=x, reference_size=30), "not both"),
    (lambda x: score_embeddings(x, ["dao"], k=4, reference=x[:, :3]), "reference embeddings have 3 dimensions"),
    (lambda x: score_embeddings(x, ["dao"], k=4, reference=x[:5]), "reference samples must be an integer"),
    (lambda x: slof(x, k=4, reference_neighbors=nearest(x, 5)), "needs the queries' neighbours"),
    (lambda x: nearest_in(x, x[:4], 5), "the reference holds 4 samples"),
])
def test_bad_arguments_are_one_line_errors(call, message):
    with pytest.raises((ConfigError, DataError)) as e:
        call(_embeddings())
    assert message in str(e.value) and "\n" not in str(e.value)
