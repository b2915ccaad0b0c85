"""AutoAttack-style worst case: agreement with pyautoattack, attacks only robust points, registry."""
from __future__ import annotations

import pytest
import torch

from _attacks_models import synthetic_data, tiny_convnet
from mmrobust.attacks import AttackResult, autoattack, lp_norm
from mmrobust.attacks.api import finish
from mmrobust.errors import ConfigError
from mmrobust.registry import ATTACKS

EPS = 1 / 255
TARGETS = {"apgd-t": {"n_target_classes": 3}}  # 3 targets instead of 9 keeps the test fast


@pytest.fixture(scope="module")
def setup():
    model = tiny_convnet(0)
    x, y = synthetic_data(model, 200, seed=0)
    y = y.clone()
    y[:10] = (y[:10] + 1) % 10  # a few points wrong on clean images
    return model, x, y


@pytest.fixture(scope="module")
def worst(setup):
    model, x, y = setup
    return autoattack(model, x, y, eps=EPS, seed=0, attack_kwargs=TARGETS)


def test_worst_case_matches_pyautoattack(setup, worst):
    pyautoattack = pytest.importorskip("pyautoattack")
    model, x, y = setup
    ref = pyautoattack.AutoAttack(model, norm="Linf", eps=EPS, version="custom", attacks=["apgd-ce", "apgd-t"], seed=0)
    ref.apgd.n_restarts = 1
    ref.apgd_targeted.n_target_classes = 3
    x_ref, _ = ref.run_standard_evaluation(x, y, batch_size=len(x))
    with torch.no_grad():
        theirs = (model(x_ref).argmax(1) == y).float().mean().item()
    ours = worst.robust_accuracy
    assert 0.05 < theirs < 0.9, "the comparison needs a model that is neither broken nor robust"
    assert abs(ours - theirs) <= 0.01, f"worst-case robust accuracy: ours {ours:.3f}, pyautoattack {theirs:.3f}"


def test_worst_case_bookkeeping(setup, worst):
    model, x, y = setup
    assert worst.broken_by[:10] == ("clean",) * 10
    assert [b == "" for b in worst.broken_by] == worst.robust.tolist()
    assert {"apgd-ce", "apgd-t"} <= set(worst.broken_by)  # the targeted attack adds successes
    assert (lp_norm(worst.x_adv - x, "linf") <= EPS + 1e-6).all()
    assert worst.x_adv.min() >= 0 and worst.x_adv.max() <= 1
    ce_only = ATTACKS.get("apgd-ce")(model, x, y, eps=EPS, seed=0)
    assert worst.robust_accuracy < ce_only.robust_accuracy
    rows = worst.per_sample()
    assert rows[0] == {"id": 0, "clean_correct": False, "robust": False, "broken_by": "clean"}


def test_later_attacks_see_only_robust_points(setup, monkeypatch):
    model, x, y = setup
    seen: list[torch.Tensor] = []

    def spy(logits_fn, xs, ys, *, eps, norm, steps, seed):
        seen.append(xs)
        return finish("spy", logits_fn, xs, ys, xs.clone(), {})

    monkeypatch.setitem(ATTACKS._items, "test-spy", spy)
    res = autoattack(model, x, y, eps=EPS, steps=10, seed=0, attacks=["apgd-ce", "test-spy"], batch_size=64)
    ce_only = ATTACKS.get("apgd-ce")(model, x, y, eps=EPS, steps=10, seed=0)
    assert all(len(chunk) <= 64 for chunk in seen)
    assert torch.equal(torch.cat(seen), x[ce_only.robust])  # same seed, same per-point outcome
    assert torch.equal(res.robust, ce_only.robust)


def test_same_seed_same_result(setup):
    model, x, y = setup
    a = autoattack(model, x[:40], y[:40], eps=EPS, steps=10, seed=0, attack_kwargs=TARGETS)
    b = autoattack(model, x[:40], y[:40], eps=EPS, steps=10, seed=0, attack_kwargs=TARGETS)
    assert torch.equal(a.x_adv, b.x_adv) and a.broken_by == b.broken_by


@pytest.mark.parametrize("name", ["pgd", "apgd-ce", "apgd-dlr", "apgd-t", "autoattack"])
@pytest.mark.parametrize("norm,eps", [("linf", 2 / 255), ("l2", 0.2)])
def test_registered_attacks_share_one_signature(setup, name, norm, eps):
    model, x, y = setup
    res = ATTACKS.get(name)(model, x[:16], y[:16], eps=eps, norm=norm, steps=3, seed=1)
    assert isinstance(res, AttackResult) and res.x_adv.shape == x[:16].shape
    assert res.robust.dtype == torch.bool and res.robust.shape == (16,)
    assert (lp_norm(res.x_adv - x[:16], norm) <= eps + 1e-6).all()
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    assert res.config["eps"] == eps and res.config["seed"] == 1


def test_configuration_errors(setup):
    model, x, y = setup
    with pytest.raises(ConfigError, match="did you mean 'apgd-ce'"):
        autoattack(model, x[:4], y[:4], eps=EPS, attacks=["apgd_ce"])
    with pytest.raises(ConfigError, match="its own"):
        autoattack(model, x[:4], y[:4], eps=EPS, attacks=["apgd-ce", "autoattack"])
    with pytest.raises(ConfigError, match="probabilities"):
        autoattack(lambda xa: model(xa).softmax(1), x[:8], y[:8], eps=EPS, steps=2)
