"""TTC (test-time counterattacks, Xing et al. CVPR 2025) as a defense: the counterattack's budget, box and weights
against the paper's formulas, its gradient for an adaptive attack, clean accuracy of a trained model, and the
DefendedCLIP wrapper behind the DEFENSES registry."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from mmrobust.defenses import DefendedCLIP, TTCSettings, counterattack, step_weights
from mmrobust.errors import ConfigError
from mmrobust.models import create_clip
from mmrobust.registry import DEFENSES


@pytest.fixture(scope="module")
def micro():
    return create_clip("mmrobust-micro", seed=0)


def _images(n: int = 8, seed: int = 0) -> torch.Tensor:
    """Random 16 px images with saturated corners, so the [0, 1] box clips some of the counterattack."""
    x = torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
    x[:, :, :4, :4] = 1.0
    x[:, :, -4:, -4:] = 0.0
    return x


def test_step_weights_follow_the_reference_formula():
    ratio = torch.tensor([0.05, 0.2, 0.5])  # below, at and above tau = 0.2
    w = step_weights(ratio, tau=0.2, beta=2.0, steps=2)
    k = torch.arange(3.0)
    soft = torch.exp(2.0 * k) / torch.exp(2.0 * k).sum()  # exp(sign * k * beta) normalized, sign = +1
    torch.testing.assert_close(w[0], soft)
    torch.testing.assert_close(w[1:], torch.tensor([[1.0, 0, 0], [1.0, 0, 0]]))  # sign <= 0: delta_0 only


def test_counterattack_stays_in_budget_and_box_and_moves_the_embedding(micro):
    x, s = _images(), TTCSettings(tau=0.0035)  # the untrained micro CLIP's taus lie around 0.002-0.005
    init = (2 * torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) - 1) * s.eps
    out = counterattack(micro.encode_image, x, s, init=init)
    assert float((out - x).abs().max()) <= s.eps + 1e-6
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    noise_only = counterattack(micro.encode_image, x, TTCSettings(steps=0), init=init)
    torch.testing.assert_close(noise_only, (x + init).clamp(0, 1))  # the paper's random-noise baseline
    with torch.no_grad():
        ref = micro.encode_image(x)
        moved = (micro.encode_image(out) - ref).norm(dim=-1)
        by_noise = (micro.encode_image(noise_only) - ref).norm(dim=-1)
        ratio = by_noise / ref.norm(dim=-1)
    countered = ratio < s.tau
    assert countered.any() and not countered.all()
    assert bool((moved[countered] > by_noise[countered]).all())  # the counterattack pushes the embedding away
    torch.testing.assert_close(out[~countered], noise_only[~countered])  # sensitive images: noise only


def test_counterattack_equals_a_per_image_oracle(micro):
    """The paper's steps written out image by image: signed steps on ||f(x+d) - f(x)||^2, clipped to the budget
    and the box, then the tau-thresholded mix of the iterates."""
    x, s = _images(4, seed=2), TTCSettings(steps=3, beta=1.0, tau=0.0035)  # the micro CLIP's taus: ~0.002-0.005
    init = (2 * torch.rand(x.shape, generator=torch.Generator().manual_seed(3)) - 1) * s.eps
    out = counterattack(micro.encode_image, x, s, init=init)
    branches = set()
    for i in range(len(x)):
        xi = x[i:i + 1]
        d = torch.max(torch.min(init[i:i + 1], 1 - xi), -xi)
        with torch.no_grad():
            f0 = micro.encode_image(xi)
            tau = ((micro.encode_image(xi + d) - f0).norm() / f0.norm()).item()
        iterates = [d]
        for _ in range(s.steps):
            dd = d.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(((micro.encode_image(xi + dd) - f0) ** 2).sum(), dd)
            d = torch.max(torch.min((d + s.step_size * g.sign()).clamp(-s.eps, s.eps), 1 - xi), -xi)
            iterates.append(d)
        branches.add(tau < s.tau)
        if tau < s.tau:
            w = [torch.exp(torch.tensor(s.beta * k)) for k in range(s.steps + 1)]
            mixed = sum(wk * dk for wk, dk in zip(w, iterates)) / sum(w)
        else:
            mixed = iterates[0]
        torch.testing.assert_close(out[i:i + 1], (xi + mixed).clamp(0, 1), atol=1e-6, rtol=0)
    assert branches == {True, False}  # both the counterattack and the noise-only branch were checked


def test_the_gradient_through_the_counterattack_is_exact_inside_the_box(micro):
    """sign(grad) and the tau test are piecewise constant, so d(defended image)/dx is the identity where no
    clipping to the box is active: an attack through the defense sees the classifier's own gradient."""
    x = (0.2 + 0.6 * torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(4))).requires_grad_(True)
    v = torch.randn(4, 3, 16, 16)
    out = counterattack(micro.encode_image, x, TTCSettings(), generator=torch.Generator().manual_seed(0))
    (g,) = torch.autograd.grad((out * v).sum(), x)
    torch.testing.assert_close(g, v)


def test_ttc_keeps_the_clean_accuracy_of_a_trained_tiny_model():
    """A tiny conv encoder + linear head trained to 99% on smooth prototype classes: TTC at the paper's budget
    (4/255, 2 steps) loses at most a few points on clean images."""
    protos = torch.rand(10, 3, 4, 4, generator=torch.Generator().manual_seed(99))

    def data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        y = torch.randint(0, 10, (n,), generator=g)
        coarse = 0.5 * protos[y] + 0.5 * torch.rand(n, 3, 4, 4, generator=g)
        return nn.functional.interpolate(coarse, size=16, mode="bilinear", align_corners=False).clamp(0, 1), y

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        enc = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(512, 32))
        head = nn.Linear(32, 10)
    opt = torch.optim.Adam([*enc.parameters(), *head.parameters()], lr=1e-2)
    x, y = data(512, 0)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(head(enc(x)), y).backward()
        opt.step()
    xt, yt = data(256, 1)
    defended = counterattack(enc, xt, TTCSettings(), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        clean = float((head(enc(xt)).argmax(1) == yt).float().mean())
        after = float((head(enc(defended)).argmax(1) == yt).float().mean())
    assert clean > 0.9 and after >= clean - 0.05, (clean, after)


def test_defended_clip_is_a_clip_whose_image_tower_runs_ttc(micro):
    defended = DEFENSES.build("ttc", {"steps": "1", "eps": "2/255"}, model=micro, seed=5)
    assert isinstance(defended, DefendedCLIP) and defended.undefended is micro
    assert defended.name == micro.name and defended.image_size == micro.image_size
    assert defended.defense_config == {"name": "ttc", "eps": 2 / 255, "steps": 1, "step_size": 1 / 255, "tau": 0.2,
                                       "beta": 2.0, "seed": 5, "backward": "through"}
    tokens = micro.tokenize(["a photo of a star."])
    torch.testing.assert_close(defended.encode_text(tokens), micro.encode_text(tokens))
    x = _images(4)
    with torch.no_grad():
        a, b = defended.encode_image(x), defended.encode_image(x)
        again = DEFENSES.build("ttc", {"steps": "1", "eps": "2/255"}, model=micro, seed=5).encode_image(x)
    assert not torch.equal(a, b)  # a fresh random start at every call: a randomized model
    torch.testing.assert_close(a, again)  # but seeded
    assert set(defended.defense_stats(x)) == {"tau_median", "counterattacked"}


def test_bpda_through_ttc_passes_the_identity(micro):
    defended = DEFENSES.build("ttc", {}, model=micro, seed=0, backward="bpda")
    x = _images(2).requires_grad_(True)
    v = torch.randn(2, 3, 16, 16)
    (g,) = torch.autograd.grad((defended._step(x) * v).sum(), x)
    torch.testing.assert_close(g, v)


def test_defense_options_are_checked_when_named():
    with pytest.raises(ConfigError, match="no option"):
        DEFENSES.typed("ttc", {"stepz": "2"})
    with pytest.raises(ConfigError, match="steps must be an integer >= 0"):
        DEFENSES.typed("ttc", {"steps": "-1"})
    with pytest.raises(ConfigError, match="did you mean 'ttc'"):
        DEFENSES.get("tcc")
