"""APGD: paper schedule and step-size conditions, invariants, and agreement with pyautoattack."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from _attacks_models import synthetic_data, tiny_convnet
from mmrobust.attacks import apgd, checkpoints, lp_norm, make_generator
from mmrobust.attacks.apgd import _Run
from mmrobust.errors import ConfigError
from mmrobust.registry import ATTACKS

EPS = 1 / 255  # about half of the tiny model's points survive APGD-CE at this eps


@pytest.fixture(scope="module")
def setup():
    model = tiny_convnet(0)
    x, y = synthetic_data(model, 200, seed=0)
    return model, x, y


@pytest.mark.parametrize("steps", [100, 200])
def test_checkpoints_follow_the_paper(steps):
    # Croce & Hein 2020: p0 = 0, p1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)
    p = [0, 22]  # in percent of the budget
    while p[-1] + max(p[-1] - p[-2] - 3, 6) < 100:
        p.append(p[-1] + max(p[-1] - p[-2] - 3, 6))
    expected = [q * steps // 100 for q in p[1:]]
    assert [i + 1 for i, _ in checkpoints(steps)] == expected
    windows = [w for _, w in checkpoints(steps)]
    assert windows == [b - a for a, b in zip([0] + expected[:-1], expected)]


def test_step_size_conditions():
    # four points, window 4: (a) loss rose in 4/4 steps, (b) in 2/4 (<= rho * 4 = 3: condition 1),
    # (c) rose 4/4 but no new best since the last checkpoint and not halved then (condition 2),
    # (d) like (c) but halved at the last checkpoint.
    x = torch.full((4, 1, 2, 2), 0.5)
    run = _Run(lambda xa: (xa**2).flatten(1).sum(1), x, x.clone(), eps=0.1, steps=8)
    run.hist[0:5] = torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1], [2, 0, 2, 2], [3, 1, 3, 3], [4, 0, 4, 4.0]])
    run.loss_best = torch.tensor([4.0, 1.0, 4.0, 4.0])
    run.loss_best_last = torch.tensor([3.0, 1.0, 4.0, 4.0])
    run.reduced_last = torch.tensor([False, False, False, True])
    run.checkpoint(3, 4, rho=0.75)
    assert run.eta.tolist() == pytest.approx([0.2, 0.1, 0.1, 0.2])
    assert run.reduced_last.tolist() == [False, True, True, False]


@pytest.mark.parametrize("norm,eps", [("linf", EPS), ("l2", 0.1)])
def test_invariants(setup, norm, eps):
    model, x, y = setup
    x, y = x[:48], y[:48]
    loss_fn = lambda xa: F.cross_entropy(model(xa), y, reduction="none")
    out = apgd(loss_fn, x, eps=eps, norm=norm, steps=20, generator=make_generator(0, "cpu"))
    for xa in (out.x_adv, out.x_best):
        assert xa.min() >= 0 and xa.max() <= 1
        assert (lp_norm(xa - x, norm) <= eps + 1e-6).all()
    with torch.no_grad():
        clean = loss_fn(x)
        torch.testing.assert_close(loss_fn(out.x_best), out.loss_best, atol=1e-5, rtol=1e-5)
    assert (out.loss_best >= clean).all()
    again = apgd(loss_fn, x, eps=eps, norm=norm, steps=20, generator=make_generator(0, "cpu"))
    assert torch.equal(again.x_adv, out.x_adv)


def test_successful_points_are_misclassified(setup):
    model, x, y = setup
    res = ATTACKS.get("apgd-ce")(model, x, y, eps=EPS, steps=20, seed=0)
    with torch.no_grad():
        pred = model(res.x_adv).argmax(1)
    assert torch.equal(res.robust, (pred == y) & res.clean_correct)
    assert 0 < res.robust_accuracy < res.clean_accuracy


@pytest.mark.parametrize("norm,eps", [("linf", EPS), ("l2", 0.1)])
def test_apgd_ce_matches_pyautoattack(setup, norm, eps):
    pyautoattack = pytest.importorskip("pyautoattack")
    model, x, y = setup
    ours = ATTACKS.get("apgd-ce")(model, x, y, eps=eps, norm=norm, steps=100, seed=0).robust_accuracy
    ref_norm = {"linf": "Linf", "l2": "L2"}[norm]
    ref = pyautoattack.AutoAttack(model, norm=ref_norm, eps=eps, version="custom", attacks=["apgd-ce"], seed=0)
    ref.apgd.n_restarts = 1  # AutoAttack's standard setting (its 'custom' default is 5)
    x_ref, _ = ref.run_standard_evaluation(x, y, batch_size=len(x))
    with torch.no_grad():
        theirs = (model(x_ref).argmax(1) == y).float().mean().item()
    assert 0.1 < theirs < 0.9, "the comparison needs a model that is neither broken nor robust"
    assert abs(ours - theirs) <= 0.01, f"APGD-CE {norm} robust accuracy: ours {ours:.3f}, pyautoattack {theirs:.3f}"


def test_apgd_dlr_runs_and_is_bounded(setup):
    model, x, y = setup
    res = ATTACKS.get("apgd-dlr")(model, x[:32], y[:32], eps=EPS, steps=10, seed=0, restarts=2)
    assert res.config["restarts"] == 2 and res.robust_accuracy <= res.clean_accuracy
    assert (lp_norm(res.x_adv - x[:32], "linf") <= EPS + 1e-6).all()


def test_apgd_t_needs_four_classes():
    model = tiny_convnet(0, n_classes=3)
    x, y = synthetic_data(model, 8)
    with pytest.raises(ConfigError, match="4 classes"):
        ATTACKS.get("apgd-t")(model, x, y, eps=EPS, steps=2)
