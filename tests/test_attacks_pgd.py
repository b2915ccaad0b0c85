"""PGD: equivalence with torchattacks, threat-model invariants, momentum rule, no side effects."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from _attacks_models import synthetic_data, tiny_convnet
from mmrobust.attacks import lp_norm, make_generator, pgd
from mmrobust.errors import ConfigError
from mmrobust.registry import ATTACKS

EPS = 4 / 255


@pytest.fixture(scope="module")
def setup():
    model = tiny_convnet(0)
    x, y = synthetic_data(model, 64, seed=1)
    return model, x, y


def _ce(model, y):
    return lambda xa: F.cross_entropy(model(xa), y, reduction="none")


@pytest.mark.parametrize("eps,alpha,steps", [(4 / 255, 1 / 255, 10), (8 / 255, 2 / 255, 7)])
def test_linf_pgd_equals_torchattacks(setup, eps, alpha, steps):
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = setup
    ref = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=False)(x, y)
    ours = pgd(_ce(model, y), x, eps=eps, step_size=alpha, steps=steps, random_start=False)
    diff = (ref - ours).abs().max().item()
    assert diff <= 1e-6, f"max abs difference to torchattacks.PGD: {diff}"
    assert (ours != x).any()  # the comparison is not vacuous


@pytest.mark.parametrize("norm,eps,step", [("linf", EPS, 1 / 255), ("l2", 0.25, 0.05)])
def test_inside_ball_and_box_and_loss_goes_up(setup, norm, eps, step):
    model, x, y = setup
    loss_fn = _ce(model, y)
    x_adv = pgd(loss_fn, x, eps=eps, step_size=step, steps=10, norm=norm, generator=make_generator(0, "cpu"))
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (lp_norm(x_adv - x, norm) <= eps + 1e-6).all()
    with torch.no_grad():
        clean, adv = loss_fn(x), loss_fn(x_adv)
    assert adv.mean() > clean.mean()
    kw = dict(eps=eps, step_size=step, steps=10, norm=norm, random_start=False)
    last, best = pgd(loss_fn, x, **kw), pgd(loss_fn, x, return_best=True, **kw)
    with torch.no_grad():
        assert (loss_fn(best) >= clean).all()  # the clean point is the first iterate
        assert (loss_fn(best) >= loss_fn(last)).all()  # the last iterate is a candidate too


def test_same_seed_same_result(setup):
    model, x, y = setup
    run = lambda seed: pgd(_ce(model, y), x, eps=EPS, step_size=1 / 255, steps=3, generator=make_generator(seed, "cpu"))
    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


def test_no_side_effects_on_the_model(setup):
    model, x, y = setup
    model.train()  # no dropout/BN here, so train mode does not change the outputs
    try:
        x_adv = pgd(_ce(model, y), x, eps=EPS, step_size=1 / 255, steps=2, momentum=0.9)
        assert model.training
        assert all(p.grad is None for p in model.parameters())
        assert not x_adv.requires_grad and x_adv.grad_fn is None
    finally:
        model.eval()


def test_sign_momentum_follows_fare_rule():
    # f(x) = -||x - c||^2 per sample, gradient 2 (c - x): a naive loop of the FARE reference rule
    g = torch.Generator().manual_seed(3)
    x, c = torch.rand(4, 3, 4, 4, generator=g), torch.rand(4, 3, 4, 4, generator=g)
    loss_fn = lambda xa: -((xa - c) ** 2).flatten(1).sum(1)
    eps, step, m = 0.1, 0.02, 0.9
    out = pgd(loss_fn, x, eps=eps, step_size=step, steps=5, random_start=False, momentum=m)
    xa, v = x.clone(), torch.zeros_like(x)
    for _ in range(5):
        v = (m * v + (2 * (c - xa)).sign()).sign()
        xa = torch.clamp(x + torch.clamp(xa + step * v - x, -eps, eps), 0, 1)
    torch.testing.assert_close(out, xa, atol=1e-7, rtol=0)


def test_generic_closure_embedding_loss(setup):
    # FARE-style inner loss: squared l2 between embeddings of the perturbed and the clean image
    model, x, _ = setup
    with torch.no_grad():
        ref = model(x)
    loss_fn = lambda xa: ((model(xa) - ref) ** 2).sum(1)
    x_adv = pgd(loss_fn, x, eps=EPS, step_size=1 / 255, steps=5, generator=make_generator(0, "cpu"))
    with torch.no_grad():
        assert (loss_fn(x_adv) > 0).all()


def test_reduced_loss_is_a_clear_error(setup):
    model, x, y = setup
    with pytest.raises(ConfigError, match="per-sample"):
        pgd(lambda xa: F.cross_entropy(model(xa), y), x, eps=EPS, step_size=1 / 255, steps=1)


def test_registered_pgd_result(setup):
    model, x, y = setup
    res = ATTACKS.get("pgd")(model, x, y, eps=EPS, steps=5, seed=0)
    assert res.attack == "pgd" and res.config["step_size"] == pytest.approx(2.5 * EPS / 5)
    assert res.robust.shape == (len(x),) and res.robust_accuracy < res.clean_accuracy
    assert (lp_norm(res.x_adv - x, "linf") <= EPS + 1e-6).all()
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        ATTACKS.get("pgd")(model, x * 255, y, eps=EPS)
