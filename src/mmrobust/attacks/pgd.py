"""Projected gradient descent (ascent) over a per-sample loss closure.

Paper: Madry, Makelov, Schmidt, Tsipras, Vladu 2018, "Towards Deep Learning Models Resistant to
Adversarial Attacks" (ICLR). Optional sign-momentum as in the FARE reference implementation
(Schlarmann, Singh, Croce, Hein 2024, "Robust CLIP", ICML).
"""
from __future__ import annotations

import torch
from torch import Tensor

from mmrobust.attacks.ops import (
    LossFn,
    canonical_norm,
    check_eps,
    clamp_box,
    loss_and_grad,
    normalize_grad,
    per_sample,
    project_to_threat,
    random_delta,
)
from mmrobust.errors import ConfigError


def pgd(
    loss_fn: LossFn,
    x: Tensor,
    *,
    eps: float,
    step_size: float,
    steps: int,
    norm: str = "linf",
    random_start: bool = True,
    generator: torch.Generator | None = None,
    return_best: bool = False,
    momentum: float | None = None,
    start: Tensor | None = None,
) -> Tensor:
    """PGD (Madry et al. 2018): maximize ``loss_fn`` inside the ``norm`` ball of radius eps around x.

    Threat model: white-box, l-inf or l2 ball of radius eps, images in [0, 1]. Each step:
    x <- Proj(x + step_size * d), d = sign(grad) (l-inf) or grad / ||grad||_2 (l2), Proj = onto the
    eps-ball, then clamp to [0, 1].

    Args:
        loss_fn: ``x_adv -> (B,)`` per-sample loss to maximize (wrap a loss to minimize in a minus).
        x: clean images (B, ...) in [0, 1].
        eps, step_size: in [0, 1] image units (e.g. 4/255 and 1/255).
        steps: number of gradient steps.
        random_start: start from a uniform point of the eps-ball (l2: uniform in the ball).
        generator: source of the random start; None draws from torch's global RNG.
        return_best: return the highest-loss iterate per sample (one extra forward), not the last.
        momentum: if set (e.g. 0.9), sign-momentum as in the FARE reference: v <- normalize(m * v +
            normalize(grad)), step along v, with normalize = sign (l-inf) or unit l2 norm.
        start: a starting perturbation (B, ...) inside the eps-ball drawn by the caller (e.g. seeded per
            sample), used instead of ``random_start``.

    Returns detached adversarial images. Only input gradients are computed, so parameter
    ``.grad`` fields and the model's train/eval mode are left alone.

    Example::

        >>> loss = lambda xa: F.cross_entropy(model(xa), y, reduction="none")
        >>> x_adv = pgd(loss, x, eps=4/255, step_size=1/255, steps=10)
    """
    norm, eps = canonical_norm(norm), check_eps(eps)
    if steps < 0 or step_size < 0:
        raise ConfigError(f"PGD needs steps >= 0 and step_size >= 0, got {steps} and {step_size}")
    x = x.detach()
    if start is not None:
        x_adv = clamp_box(x + start.to(x.device, x.dtype))
    else:
        x_adv = clamp_box(x + random_delta(x, eps, norm, generator)) if random_start else x.clone()
    velocity = torch.zeros_like(x) if momentum is not None else None
    best_x, best_loss = x_adv.clone(), None
    for _ in range(steps):
        loss, grad = loss_and_grad(loss_fn, x_adv)
        if return_best:
            best_x, best_loss = _keep_best(best_x, best_loss, x_adv, loss)
        direction = normalize_grad(grad, norm)
        if velocity is not None:
            velocity = normalize_grad(momentum * velocity + direction, norm)
            direction = velocity
        x_adv = project_to_threat(x_adv + step_size * direction, x, eps, norm)
    if return_best:  # the last iterate is a candidate too
        with torch.no_grad():
            x_adv, _ = _keep_best(best_x, best_loss, x_adv, loss_fn(x_adv).detach())
    return x_adv.detach()


def _keep_best(best_x: Tensor, best_loss: Tensor | None, x_new: Tensor, loss: Tensor) -> tuple[Tensor, Tensor]:
    """Per sample, keep whichever of (best_x, x_new) has the higher loss (ties keep the older)."""
    if best_loss is None:
        return x_new.clone(), loss.clone()
    better = loss > best_loss
    return torch.where(per_sample(better, x_new), x_new, best_x), torch.where(better, loss, best_loss)
