"""Adaptive attacks: EOT (averaged loss and gradient; recovers the attack on a noisy model where plain APGD is
fooled), BPDA (the gradient passes a non-differentiable step), and the defense-in-the-loop composition."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from _attacks_models import synthetic_data, tiny_convnet
from mmrobust.attacks import AttackCheckWarning, bpda, eot, through_defense
from mmrobust.attacks.ops import loss_and_grad
from mmrobust.errors import ConfigError
from mmrobust.registry import ATTACKS


class NoisyInput(nn.Module):
    """A randomized defense: Gaussian noise added to the input at every forward pass (its own generator)."""

    def __init__(self, net: nn.Module, sigma: float, seed: int) -> None:
        super().__init__()
        self.net, self.sigma, self.gen = net, sigma, torch.Generator().manual_seed(seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x + self.sigma * torch.randn(x.shape, generator=self.gen))


def _cycling_closure(weights: list[torch.Tensor]):
    """loss_k(x) = <w_k, x> per sample, k cycling through ``weights`` call by call (a known 'randomness')."""
    calls = {"n": 0}

    def loss(x):
        w = weights[calls["n"] % len(weights)]
        calls["n"] += 1
        return (x * w).reshape(len(x), -1).sum(1), (w.reshape(len(x), -1).sum(1) > 0)

    return loss


def test_eot_returns_the_mean_loss_its_gradient_and_success_only_when_every_draw_succeeds():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 2, 2)
    ws = [torch.randn(4, 3, 2, 2) for _ in range(5)]
    loss, grad = loss_and_grad(lambda z: eot(_cycling_closure(ws), 5)(z)[0], x)
    torch.testing.assert_close(loss, torch.stack([(x * w).reshape(4, -1).sum(1) for w in ws]).mean(0))
    torch.testing.assert_close(grad, torch.stack(ws).mean(0))
    _, success = eot(_cycling_closure(ws), 5)(x)
    votes = torch.stack([w.reshape(4, -1).sum(1) > 0 for w in ws]).all(0)
    assert success.tolist() == votes.tolist()
    with torch.no_grad():  # without a graph: the mean loss only
        plain = eot(_cycling_closure(ws), 5)(x)[0]
    torch.testing.assert_close(plain, loss)


def test_eot_of_one_sample_is_the_closure_and_bad_counts_are_refused():
    closure = _cycling_closure([torch.ones(1, 1)])
    assert eot(closure, 1) is closure
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ConfigError, match="eot_samples"):
            eot(closure, bad)
    model = tiny_convnet(0)
    x, y = synthetic_data(model, 4, seed=0)
    with pytest.raises(ConfigError, match="eot_samples"):
        ATTACKS.get("apgd-ce")(model, x, y, eps=1 / 255, steps=2, eot_samples=0)


@pytest.mark.parametrize("name", ["pgd", "apgd-ce", "apgd-dlr", "apgd-t", "autoattack"])
def test_every_registered_attack_takes_eot_samples(name):
    model = NoisyInput(tiny_convnet(1), 0.05, seed=0).eval()
    x, y = synthetic_data(tiny_convnet(1), 6, seed=1)
    if name == "autoattack":  # its checks warn about the randomized model instead of refusing it
        with pytest.warns(AttackCheckWarning, match="not deterministic"):
            res = ATTACKS.get(name)(model, x, y, eps=4 / 255, steps=3, eot_samples=3, seed=0,
                                    attack_kwargs={"apgd-t": {"n_target_classes": 2}})
    else:
        res = ATTACKS.get(name)(model, x, y, eps=4 / 255, steps=3, eot_samples=3, seed=0)
    assert res.config["eot_samples"] == 3
    assert float((res.x_adv - x).abs().max()) <= 4 / 255 + 1e-6 and res.x_adv.min() >= 0 and res.x_adv.max() <= 1


def test_eot_recovers_the_attack_on_a_model_with_random_input_noise():
    """Plain APGD follows one noisy gradient per step and keeps iterates that fooled one lucky draw; APGD on the
    EOT loss (20 draws per step) leaves clearly fewer points robust, on average over three models and data sets."""
    plain, averaged = [], []
    for seed in range(3):
        net = tiny_convnet(seed)
        x, y = synthetic_data(net, 100, seed=seed)
        noisy = NoisyInput(net, 0.1, seed=seed).eval()
        kw = dict(eps=2 / 255, steps=20, seed=0)
        plain.append(ATTACKS.get("apgd-ce")(noisy, x, y, **kw).robust_accuracy)
        averaged.append(ATTACKS.get("apgd-ce")(noisy, x, y, eot_samples=20, **kw).robust_accuracy)
    assert sum(averaged) / 3 < sum(plain) / 3 - 0.05, (plain, averaged)


# --- BPDA ------------------------------------------------------------------------------------------------------


def _quantize(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x * 8) / 8  # zero gradient almost everywhere


def test_bpda_keeps_the_forward_value_and_passes_the_identity_gradient():
    x = torch.rand(3, 3, 4, 4, requires_grad=True)
    v = torch.randn(3, 3, 4, 4)
    out = bpda(_quantize)(x)
    torch.testing.assert_close(out, _quantize(x.detach()))
    (g,) = torch.autograd.grad((out * v).sum(), x)
    torch.testing.assert_close(g, v)  # identity on the backward pass
    (g0,) = torch.autograd.grad((_quantize(x) * v).sum(), x)
    assert float(g0.abs().max()) == 0.0  # without BPDA, nothing passes


def test_bpda_with_an_approximation_uses_its_gradient():
    x = torch.rand(2, 3, 4, 4, requires_grad=True)
    out = bpda(_quantize, approx=lambda z: 2 * z)(x)
    torch.testing.assert_close(out, _quantize(x.detach()))
    (g,) = torch.autograd.grad(out.sum(), x)
    torch.testing.assert_close(g, torch.full_like(x, 2.0))
    with pytest.raises(ConfigError, match="shape"):
        bpda(_quantize, approx=lambda z: z.mean(1))(x)


def test_attack_through_a_quantizing_defense_needs_bpda():
    model = tiny_convnet(0)
    x, y = synthetic_data(model, 60, seed=0)
    kw = dict(eps=8 / 255, steps=10, seed=0)
    masked = ATTACKS.get("apgd-ce")(through_defense(model, _quantize), x, y, **kw)  # zero gradients
    crossed = ATTACKS.get("apgd-ce")(through_defense(model, _quantize, backward="bpda"), x, y, **kw)
    assert crossed.clean_accuracy == masked.clean_accuracy
    assert crossed.robust_accuracy < masked.robust_accuracy - 0.2


def test_through_defense_checks_its_backward():
    with pytest.raises(ConfigError, match="through, bpda"):
        through_defense(lambda z: z, _quantize, backward="straight")
    with pytest.raises(ConfigError, match="only with backward='bpda'"):
        through_defense(lambda z: z, _quantize, approx=lambda z: z)
    x = torch.rand(2, 3, 4, 4, requires_grad=True)
    (g,) = torch.autograd.grad(through_defense(lambda z: z.sum((1, 2, 3)), lambda z: 3 * z)(x).sum(), x)
    torch.testing.assert_close(g, torch.full_like(x, 3.0))  # "through": autograd sees the defense itself
