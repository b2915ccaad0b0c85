"""Building blocks shared by the attacks: norms, projections, box clamp, random starts.

One coordinate system (DESIGN §6.4): images are float tensors in [0, 1] with a leading batch
dimension, eps is in the same [0, 1] units (4/255, not 4). Everything here is batched: a norm or
a projection is taken per sample over all non-batch dimensions.

Projection order follows PGD (Madry et al. 2018, "Towards Deep Learning Models Resistant to
Adversarial Attacks"): project the perturbation onto the eps-ball, then clamp the image to the
[0, 1] box. Because the clean image lies in the box, clamping moves every pixel towards it, so the
result stays inside the ball.
"""
from __future__ import annotations

from typing import Callable, Literal

import torch
from torch import Tensor

from mmrobust.errors import ConfigError

Norm = Literal["linf", "l2"]
_NORM_ALIASES = {"linf": "linf", "inf": "linf", "l_inf": "linf", "l2": "l2", "2": "l2"}


def canonical_norm(norm: str) -> Norm:
    """'Linf' / 'inf' / 'linf' -> 'linf'; 'L2' / '2' / 'l2' -> 'l2'; anything else is a ConfigError."""
    key = str(norm).strip().lower()
    if key not in _NORM_ALIASES:
        raise ConfigError(f"unsupported attack norm {norm!r}; use 'linf' or 'l2'")
    return _NORM_ALIASES[key]  # type: ignore[return-value]


def check_eps(eps: float) -> float:
    """eps must be a number in [0, 1] (image units); 8 instead of 8/255 is the usual mistake."""
    eps = float(eps)
    if not 0.0 <= eps <= 1.0:
        raise ConfigError(f"eps={eps:g} is outside [0, 1]; give eps in image units, e.g. 4/255 = {4 / 255:.5f}")
    return eps


def check_images(x: Tensor) -> None:
    """Attacks work on [0, 1] images; normalization belongs inside the model wrapper."""
    if x.dim() < 2:
        raise ConfigError(f"images must be batched (B, ...), got shape {tuple(x.shape)}")
    if not torch.is_floating_point(x):
        raise ConfigError(f"images must be a float tensor in [0, 1], got dtype {x.dtype}")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise ConfigError(
            f"images must lie in [0, 1] (got min {lo:.3f}, max {hi:.3f}); pass unnormalized images "
            "and normalize inside the model's forward"
        )


def per_sample(v: Tensor, like: Tensor) -> Tensor:
    """View a (B,) tensor as (B, 1, 1, ...) so it broadcasts against ``like``."""
    return v.view(-1, *([1] * (like.dim() - 1)))


def lp_norm(t: Tensor, norm: str) -> Tensor:
    """Per-sample l-inf or l2 norm over all non-batch dims: (B, ...) -> (B,)."""
    flat = t.reshape(t.shape[0], -1)
    if canonical_norm(norm) == "linf":
        return flat.abs().amax(dim=1)
    return flat.norm(p=2, dim=1)


def project_linf(delta: Tensor, eps: float) -> Tensor:
    """Project a batch of perturbations onto the l-inf ball of radius eps (elementwise clamp)."""
    return torch.clamp(delta, min=-eps, max=eps)


def project_l2(delta: Tensor, eps: float) -> Tensor:
    """Project a batch of perturbations onto the l2 ball of radius eps (rescale those outside)."""
    norms = lp_norm(delta, "l2")
    factor = torch.clamp(eps / (norms + 1e-12), max=1.0)
    return delta * per_sample(factor, delta)


def project(delta: Tensor, eps: float, norm: str) -> Tensor:
    """Project onto the ``norm`` ball of radius eps."""
    return project_linf(delta, eps) if canonical_norm(norm) == "linf" else project_l2(delta, eps)


def clamp_box(x: Tensor) -> Tensor:
    """Clamp images to the valid [0, 1] box."""
    return torch.clamp(x, 0.0, 1.0)


def project_to_threat(x_adv: Tensor, x: Tensor, eps: float, norm: str) -> Tensor:
    """Nearest valid image in the threat model: eps-ball around ``x`` first, then the [0, 1] box."""
    return clamp_box(x + project(x_adv - x, eps, norm))


def normalize_grad(grad: Tensor, norm: str) -> Tensor:
    """Steepest-ascent direction of unit ``norm`` size: sign for l-inf, g / ||g||_2 for l2."""
    if canonical_norm(norm) == "linf":
        return grad.sign()
    return grad / (per_sample(lp_norm(grad, "l2"), grad) + 1e-12)


def _rand(kind: str, shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Uniform [0, 1) or standard normal noise of ``shape`` on ``like``'s device, from ``generator``."""
    device = generator.device if generator is not None else like.device
    fn = torch.rand if kind == "uniform" else torch.randn
    return fn(shape, generator=generator, device=device, dtype=like.dtype).to(like.device)


def random_delta(like: Tensor, eps: float, norm: str, generator: torch.Generator | None = None) -> Tensor:
    """Random start: uniform in the l-inf box [-eps, eps]^d, or uniform in the l2 ball of radius eps.

    The l2 draw takes a Gaussian direction and radius eps * U^(1/d). Without a generator the draw
    comes from torch's global RNG (which is never seeded here).
    """
    if canonical_norm(norm) == "linf":
        return (2.0 * _rand("uniform", tuple(like.shape), like, generator) - 1.0) * eps
    direction = normalize_grad(_rand("normal", tuple(like.shape), like, generator), "l2")
    dim = like[0].numel()
    radius = _rand("uniform", (like.shape[0],), like, generator) ** (1.0 / dim) * eps
    return direction * per_sample(radius, like)


def make_generator(seed: int, device: torch.device | str) -> torch.Generator:
    """A fresh torch.Generator on ``device`` seeded with ``seed`` (no global RNG side effects)."""
    gen = torch.Generator(device=torch.device(device))
    gen.manual_seed(int(seed))
    return gen


LossFn = Callable[[Tensor], Tensor]


def loss_and_grad(loss_fn: LossFn, x_adv: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample loss (B,) at ``x_adv`` and its gradient w.r.t. the input only.

    Uses torch.autograd.grad on the input, so parameter ``.grad`` fields are never touched and
    the model's train/eval mode is left alone.
    """
    x_req = x_adv.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(x_req)
        grad = input_grad(loss, x_req)
    return loss.detach(), grad


def input_grad(loss: Tensor, x_req: Tensor) -> Tensor:
    """Gradient of ``loss.sum()`` w.r.t. the input alone, after checking the loss shape."""
    check_per_sample_loss(loss, x_req.shape[0])
    (grad,) = torch.autograd.grad(loss.sum(), x_req, allow_unused=True)
    if grad is None:
        raise ConfigError("loss_fn output does not depend on its input x_adv; compute the loss from the "
                          "x_adv passed in (not from a detached copy or the clean images)")
    return grad.detach()


def check_per_sample_loss(loss: Tensor, batch: int) -> None:
    """The loss closure must return one value per sample, shape (B,)."""
    if not isinstance(loss, Tensor) or loss.shape != (batch,):
        shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise ConfigError(
            f"loss_fn must return a per-sample loss of shape ({batch},), got {shape}; "
            "use reduction='none' and do not average over the batch"
        )
    if not loss.requires_grad:
        raise ConfigError(
            "loss_fn output does not depend on the input with gradients; do not wrap the model "
            "call in torch.no_grad() or detach its output inside loss_fn"
        )
