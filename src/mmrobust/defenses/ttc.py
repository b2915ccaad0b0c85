"""Test-time counterattacks (TTC) as a defense of a CLIP image tower.

Paper: Xing, Zhao & Sebe 2025, "CLIP is Strong Enough to Fight Back: Test-time Counterattacks towards Zero-shot
Adversarial Robustness of CLIP" (CVPR); definition and defaults from the authors' code
(github.com/Sxing2/CLIP-Test-time-Counterattacks, ``tau_thres_weighted_counterattacks``), written anew here.

Threat model of the paper: the attacker does not see the defense (adversarial images are made on the plain CLIP,
then counterattacked). The counterattack, per image x with embedding f(x) (not normalized):

1. delta_0 ~ U[-eps, eps]^d, clipped so that x + delta_0 stays in [0, 1];
2. tau = ||f(x + delta_0) - f(x)|| / ||f(x)||, the embedding's sensitivity to that random noise (adversarial
   images are "falsely stable": small tau);
3. ``steps`` signed-gradient steps maximizing ||f(x + delta) - f(x)||^2: delta_k = clip(delta_{k-1} + alpha *
   sign(grad), -eps, eps), then clipped to the [0, 1] box;
4. if tau < tau_thres: delta = sum_k w_k delta_k with w = softmax(beta * k), k = 0..steps (later steps weigh
   more); else delta = delta_0 (the image only gets the random noise);
5. classify x + delta.

Defaults (the paper's and the code's): eps 4/255, 2 steps of 1/255, tau_thres 0.2, beta 2; ``steps=0`` is the
paper's random-noise (RN) baseline. The counterattack draws fresh noise at every call, so a defended model is
randomized: evaluate it adaptively with EOT (:mod:`mmrobust.attacks.eot`). The gradient of the defended model
(``backward="through"``) is exact almost everywhere: sign(grad) and the tau test are piecewise constant in x,
so the input reaches the output through x + delta and the box clipping. The code's AFT variant (tau from the
original CLIP's tower while another tower is defended) is not reproduced: tau comes from the defended tower.

Example::

    >>> defended = DEFENSES.build("ttc", {"steps": "2"}, model=clip, seed=0)
    >>> logits = classifier.logits(defended, images)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from mmrobust.attacks.ops import clamp_box, make_generator, random_delta
from mmrobust.defenses.defended import DefendedCLIP
from mmrobust.models.clip import CLIPModel
from mmrobust.registry import DEFENSES
from mmrobust.values import check_int, check_number

Encoder = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class TTCSettings:
    """Budget and weighting of the counterattack (defaults: the paper's)."""

    eps: float = 4 / 255  # l-inf budget of the counterattack
    steps: int = 2  # signed-gradient steps (0: random noise only, the paper's RN baseline)
    step_size: float = 1 / 255
    tau: float = 0.2  # threshold on the embedding's relative change under the random start
    beta: float = 2.0  # weight of step k is proportional to exp(beta * k)

    def __post_init__(self) -> None:
        check_number("eps", self.eps, low=0, high=1, fix="the counterattack budget in [0,1] units, e.g. 4/255")
        check_int("steps", self.steps, low=0, fix="e.g. --defense-opt steps=2")
        check_number("step_size", self.step_size, low=0, high=1, fix="e.g. --defense-opt step_size=1/255")
        check_number("tau", self.tau, low=0, fix="e.g. --defense-opt tau=0.2")
        check_number("beta", self.beta, fix="e.g. --defense-opt beta=2")


def step_weights(ratio: Tensor, *, tau: float, beta: float, steps: int) -> Tensor:
    """(B, steps + 1) weights of delta_0..delta_steps: softmax(beta * k) where ratio < tau, else delta_0 only."""
    k = torch.arange(steps + 1, device=ratio.device, dtype=ratio.dtype)
    soft = torch.softmax(beta * k, dim=0).expand(len(ratio), -1)
    hard = torch.zeros_like(soft)
    hard[:, 0] = 1.0
    return torch.where((ratio < tau)[:, None], soft, hard)


def _embedding_gradient(encode: Encoder, x0: Tensor, delta: Tensor, ref: Tensor) -> tuple[Tensor, Tensor]:
    """Gradient of ||f(x0 + delta) - f(x0)||^2 w.r.t. delta (per sample), and f(x0 + delta)."""
    d = delta.detach().requires_grad_(True)
    with torch.enable_grad():
        emb = encode(x0 + d)
        (grad,) = torch.autograd.grad((emb - ref).pow(2).sum(), d)
    return grad, emb.detach()


def counterattack(encode: Encoder, x: Tensor, settings: TTCSettings = TTCSettings(), *,
                  generator: torch.Generator | None = None, init: Tensor | None = None) -> Tensor:
    """The counterattacked images x + delta (B, C, H, W) in [0, 1] (see the module docstring).

    ``encode`` maps [0, 1] images to embeddings (not normalized). ``init`` fixes delta_0 (drawn from
    ``generator`` if None). The result depends on x differentiably through x + delta and the box clipping;
    the inner gradients are taken on a detached copy (their sign has zero derivative).
    """
    s = settings
    if s.eps <= 0:
        return x
    x0 = x.detach()
    noise = random_delta(x0, s.eps, "linf", generator) if init is None else init.to(x0)
    delta = torch.clamp(noise, min=-x, max=1 - x)  # x + delta in [0, 1]
    if s.steps == 0:
        return clamp_box(x + delta)
    with torch.no_grad():
        ref = encode(x0)
    deltas, ratio = [delta], None
    for _ in range(s.steps):
        grad, emb = _embedding_gradient(encode, x0, delta, ref)
        if ratio is None:  # tau of the paper: the embedding's relative change under the random start
            ratio = (emb - ref).norm(dim=-1) / ref.norm(dim=-1)
        delta = torch.clamp(delta + s.step_size * grad.sign(), -s.eps, s.eps)
        delta = torch.clamp(delta, min=-x, max=1 - x)
        deltas.append(delta)
    assert ratio is not None
    weights = step_weights(ratio, tau=s.tau, beta=s.beta, steps=s.steps)  # (B, steps + 1)
    mixed = torch.einsum("bk,bk...->b...", weights.to(x.dtype), torch.stack(deltas, dim=1))
    return clamp_box(x + mixed)  # a convex mix of points in the box; the clamp only removes rounding


@torch.no_grad()
def noise_sensitivity(encode: Encoder, x: Tensor, eps: float, generator: torch.Generator | None = None) -> Tensor:
    """(B,) tau of the paper, ||f(x + delta_0) - f(x)|| / ||f(x)|| for one random start delta_0."""
    delta = torch.clamp(random_delta(x, eps, "linf", generator), min=-x, max=1 - x)
    ref = encode(x)
    return (encode(x + delta) - ref).norm(dim=-1) / ref.norm(dim=-1)


class Counterattack:
    """TTC as a callable on images, drawing its random starts from its own seeded generator."""

    def __init__(self, clip: CLIPModel, settings: TTCSettings, *, seed: int = 0) -> None:
        self.clip, self.settings, self.seed = clip, settings, seed
        self._generator: torch.Generator | None = None

    def _gen(self, device: torch.device) -> torch.Generator:
        if self._generator is None or self._generator.device != device:
            self._generator = make_generator(self.seed, device)
        return self._generator

    def __call__(self, x: Tensor) -> Tensor:
        return counterattack(self.clip.encode_image, x, self.settings, generator=self._gen(x.device))

    def stats(self, x: Tensor) -> dict[str, float]:
        """How TTC sees a batch: the median tau and the share of images counterattacked (tau < threshold)."""
        ratio = noise_sensitivity(self.clip.encode_image, x.detach(), self.settings.eps, self._gen(x.device))
        counter = float((ratio < self.settings.tau).float().mean()) if self.settings.steps else 0.0
        return {"tau_median": float(ratio.median()), "counterattacked": counter}


@DEFENSES.register("ttc")
def ttc(model: CLIPModel, *, eps: float = 4 / 255, steps: int = 2, step_size: float = 1 / 255, tau: float = 0.2,
        beta: float = 2.0, seed: int = 0, backward: str = "through") -> DefendedCLIP:
    """Test-time counterattacks (Xing et al., CVPR 2025): ``model`` defended by TTC at test time.

    Defaults: the paper's (eps 4/255, 2 steps of 1/255, tau 0.2, beta 2). ``seed`` seeds the random starts;
    ``backward`` is how an attack's gradient crosses the defense ("through" or "bpda").

    Example::

        >>> defended = ttc(clip, steps=2)              # or DEFENSES.build("ttc", {"steps": "2"}, model=clip)
    """
    settings = TTCSettings(eps=eps, steps=steps, step_size=step_size, tau=tau, beta=beta)
    config: dict[str, Any] = {"name": "ttc", **asdict(settings), "seed": seed}
    return DefendedCLIP(model, Counterattack(model, settings, seed=seed), config=config, backward=backward)


def _check_options(values: dict[str, Any]) -> None:
    """Refuse bad option values when the defense is named (before any model is loaded)."""
    TTCSettings(**{k: v for k, v in values.items() if k in TTCSettings.__dataclass_fields__})


ttc.check_options = _check_options  # type: ignore[attr-defined]  # called by Registry.typed
