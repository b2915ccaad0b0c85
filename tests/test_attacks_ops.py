"""Oracle tests for the attack building blocks: projections, norms, random starts, logit losses."""
from __future__ import annotations

import math

import pytest
import torch

from mmrobust.attacks import (
    dlr_loss,
    dlr_targeted_loss,
    lp_norm,
    make_generator,
    margin_loss,
    normalize_grad,
    project_l2,
    project_linf,
    project_to_threat,
    random_delta,
)
from mmrobust.attacks.ops import canonical_norm, check_eps
from mmrobust.errors import ConfigError

EPS = 4 / 255


def _deltas(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(6, 3, 5, 5, generator=g) * 0.05
    d[0] = 0.0
    d[1] *= 1e-3  # well inside every ball
    return d


def test_project_linf_matches_elementwise_clamp():
    d = _deltas()
    out = project_linf(d, EPS)
    for i in range(len(d)):
        for v, p in zip(d[i].flatten().tolist(), out[i].flatten().tolist()):
            assert p == pytest.approx(min(max(v, -EPS), EPS), abs=1e-9)


def test_project_l2_matches_naive_rescaling():
    d = _deltas()
    out = project_l2(d, EPS)
    for i in range(len(d)):
        n = math.sqrt(sum(v * v for v in d[i].flatten().tolist()))
        expect = d[i] * (EPS / n if n > EPS else 1.0)
        torch.testing.assert_close(out[i], expect, atol=1e-7, rtol=1e-5)
    assert torch.equal(out[0], d[0])


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_project_to_threat_is_inside_ball_and_box_and_idempotent(norm):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(8, 3, 6, 6, generator=g)
    x_far = x + torch.randn(8, 3, 6, 6, generator=g)
    p = project_to_threat(x_far, x, EPS, norm)
    assert p.min() >= 0 and p.max() <= 1
    assert (lp_norm(p - x, norm) <= EPS + 1e-6).all()
    torch.testing.assert_close(project_to_threat(p, x, EPS, norm), p, atol=1e-7, rtol=0)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_random_delta_inside_ball_and_seeded(norm):
    like = torch.zeros(16, 3, 8, 8)
    a = random_delta(like, EPS, norm, make_generator(0, "cpu"))
    b = random_delta(like, EPS, norm, make_generator(0, "cpu"))
    c = random_delta(like, EPS, norm, make_generator(1, "cpu"))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert (lp_norm(a, norm) <= EPS + 1e-6).all()
    assert (lp_norm(a, norm) > 0).all()


def test_normalize_grad_directions():
    g = _deltas()[2:]
    assert torch.equal(normalize_grad(g, "linf"), g.sign())
    torch.testing.assert_close(lp_norm(normalize_grad(g, "l2"), "l2"), torch.ones(len(g)))


def test_norm_and_eps_validation():
    assert canonical_norm("Linf") == "linf" and canonical_norm("L2") == "l2" and canonical_norm("inf") == "linf"
    with pytest.raises(ConfigError, match="linf"):
        canonical_norm("l1")
    with pytest.raises(ConfigError, match="4/255"):
        check_eps(8)


def _naive_dlr(z: list[float], y: int) -> float:
    s = sorted(z, reverse=True)
    best_other = max(v for j, v in enumerate(z) if j != y)
    return -(z[y] - best_other) / (s[0] - s[2] + 1e-12)


def _naive_dlr_targeted(z: list[float], y: int, t: int) -> float:
    s = sorted(z, reverse=True)
    return -(z[y] - z[t]) / (s[0] - 0.5 * (s[2] + s[3]) + 1e-12)


def test_dlr_losses_match_naive_formulas():
    z = torch.tensor([[3.0, 1.0, -2.0, 0.5, 0.0], [0.1, 2.0, 1.5, -1.0, 4.0], [1.0, 1.0, 0.0, 2.0, -3.0]])
    y = torch.tensor([0, 2, 3])
    t = torch.tensor([1, 4, 0])
    got = dlr_loss(z, y)
    got_t = dlr_targeted_loss(z, y, t)
    for i in range(3):
        assert got[i].item() == pytest.approx(_naive_dlr(z[i].tolist(), int(y[i])), rel=1e-6)
        assert got_t[i].item() == pytest.approx(_naive_dlr_targeted(z[i].tolist(), int(y[i]), int(t[i])), rel=1e-6)
    margin = margin_loss(z, y)
    assert margin.tolist() == pytest.approx([-2.0, 2.5, -1.0])


def test_dlr_needs_enough_classes():
    with pytest.raises(ConfigError, match="C >= 3"):
        dlr_loss(torch.zeros(2, 2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ConfigError, match="C >= 4"):
        dlr_targeted_loss(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), torch.ones(2, dtype=torch.long))
