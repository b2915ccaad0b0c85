"""Expectation over Transformation (EOT): attack a randomized model through its expected loss.

Paper: Athalye, Carlini & Wagner 2018, "Obfuscated Gradients Give a False Sense of Security" (ICML), sec. 4.3
(after Athalye et al. 2018, "Synthesizing Robust Adversarial Examples"). A defense that draws randomness at
every forward pass (random noise, random resizing, a counterattack's random start) shows a plain attack one
random gradient per step; the attack then follows noise and the defense looks robust. EOT maximizes
E_r[loss(x; r)] instead, whose gradient is the average of ``samples`` gradients, each with a fresh draw.

:func:`eot` wraps any per-sample loss closure (what :func:`~mmrobust.attacks.pgd.pgd` and
:func:`~mmrobust.attacks.apgd.apgd` take); the registered attacks take it as the option ``eot_samples``.
Memory stays that of one forward pass: each draw's graph is freed once its gradient is taken, and the
returned loss carries the averaged gradient.

Example::

    >>> loss = eot(lambda xa: F.cross_entropy(noisy_model(xa), y, reduction="none"), samples=20)
    >>> x_adv = pgd(loss, x, eps=4/255, step_size=1/255, steps=50)
    >>> res = ATTACKS.get("apgd-ce")(noisy_model, x, y, eps=4/255, eot_samples=20)
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from mmrobust.errors import ConfigError

# loss_fn(x) -> loss (B,), or (loss (B,), success (B,) bool) as APGD's closures return
Closure = Callable[[Tensor], "Tensor | tuple[Tensor, Tensor]"]


def check_eot_samples(samples: int) -> int:
    """EOT needs a whole number of draws, at least 1 (1 = no EOT)."""
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ConfigError(f"eot_samples must be an integer >= 1 (1: no EOT), got {samples!r}; e.g. "
                          "--attack-opt eot_samples=20")
    return samples


def eot(loss_fn: Closure, samples: int) -> Closure:
    """``loss_fn`` averaged over ``samples`` calls (each call draws the model's randomness anew).

    The loss returned is the mean loss per sample; its gradient w.r.t. the input is the mean of the
    draws' gradients (Athalye et al. 2018). Where ``loss_fn`` also returns a per-sample success flag,
    a point counts as a success only when every draw succeeded: APGD then keeps no iterate that fooled
    a lucky draw or a bare majority, and goes on raising the mean loss of a point the defense still gets
    right some of the time. ``samples=1`` returns ``loss_fn`` itself.
    """
    samples = check_eot_samples(samples)
    if samples == 1:
        return loss_fn

    def averaged(x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        track = torch.is_grad_enabled() and x.requires_grad
        total = grad = votes = None
        for _ in range(samples):
            out = loss_fn(x)
            loss, success = out if isinstance(out, tuple) else (out, None)
            if track and loss.requires_grad:
                (g,) = torch.autograd.grad(loss.sum(), x, allow_unused=True)
                if g is not None:
                    grad = g if grad is None else grad + g
            total = loss.detach() if total is None else total + loss.detach()
            if success is not None:
                hit = success.detach().to(total.dtype)
                votes = hit if votes is None else votes + hit
        mean = total / samples
        if grad is not None:  # value: the mean loss; gradient w.r.t. x: the mean gradient, sample by sample
            mean = mean + ((x - x.detach()) * (grad / samples)).reshape(len(x), -1).sum(1)
        return mean if votes is None else (mean, votes >= samples)

    return averaged


def eot_predictions(logits_fn: Callable[[Tensor], Tensor], x: Tensor, samples: int) -> tuple[Tensor, Tensor]:
    """(logits averaged over ``samples`` forward passes (B, C), each pass's predictions (samples, B)), without a
    graph: how an attack with EOT decides which points are still right and which classes to target."""
    with torch.no_grad():
        outs = [logits_fn(x) for _ in range(check_eot_samples(samples))]
    return torch.stack(outs).mean(0), torch.stack([o.argmax(dim=1) for o in outs])
