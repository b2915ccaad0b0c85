"""Auto-PGD (APGD): PGD with momentum and an automatic step-size schedule.

Paper: Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks" (ICML). Cross-checked against the authors' code (fra31/auto-attack,
PyPI ``pyautoattack``) for the checkpoint schedule and the step-size conditions.

Algorithm (per sample, budget N iterations, rho = 0.75, momentum alpha = 0.75):
  x0 = random point on the eps-sphere (clamped to [0, 1]); eta = 2 * eps.
  z = P(x_k + eta * d(grad)),  x_{k+1} = P(x_k + alpha (z - x_k) + (1 - alpha)(x_k - x_{k-1}))
  (alpha = 1 on the first step; P = eps-ball then [0, 1]; d = sign for l-inf, unit l2 for l2).
  Checkpoints: the first after 0.22 N iterations, then each window 0.03 N shorter, never below
  0.06 N. At a checkpoint eta is halved, and the iterate reset to the best point so far, if
    1. the loss increased in at most rho * window of the window's steps, or
    2. eta was not halved at the previous checkpoint and the best loss has not improved since.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from mmrobust.attacks.eot import eot, eot_predictions
from mmrobust.attacks.losses import LogitLoss, dlr_targeted_loss, get_logit_loss
from mmrobust.attacks.ops import (
    canonical_norm,
    check_eps,
    clamp_box,
    input_grad,
    normalize_grad,
    per_sample,
    project_to_threat,
)
from mmrobust.errors import ConfigError

# loss_fn(x_adv) -> loss (B,), or (loss (B,), success (B,) bool) where success marks points that
# are already adversarial at x_adv (e.g. misclassified); APGD then keeps such an iterate per point.
APGDLossFn = Callable[[Tensor], "Tensor | tuple[Tensor, Tensor]"]
LogitsFn = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class APGDOutput:
    """Result of :func:`apgd`; all per sample."""

    x_adv: Tensor  # a successful iterate where ``success``, else the highest-loss iterate
    x_best: Tensor  # the highest-loss iterate
    loss_best: Tensor  # (B,) loss at x_best
    success: Tensor  # (B,) bool; all False when loss_fn reports no success


def checkpoints(steps: int) -> list[tuple[int, int]]:
    """APGD checkpoints as (0-based iteration after which to check, window length).

    p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06) (fractions of ``steps``),
    with the integer rounding of the reference code.
    """
    window = max(int(0.22 * steps), 1)
    shrink, smallest = max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    out, i = [], -1
    while i + window < steps:
        i += window
        out.append((i, window))
        window = max(window - shrink, smallest)
    return out


def _init_point(x: Tensor, eps: float, norm: str, generator: torch.Generator | None) -> Tensor:
    """AutoAttack's start: a random direction scaled onto the eps-sphere, then clamped to [0, 1]."""
    device = generator.device if generator is not None else x.device
    if norm == "linf":
        t = 2.0 * torch.rand(x.shape, generator=generator, device=device, dtype=x.dtype) - 1.0
    else:
        t = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
    t = t.to(x.device)
    scale = t.reshape(len(t), -1).abs().amax(1) if norm == "linf" else t.reshape(len(t), -1).norm(dim=1)
    return clamp_box(x + eps * t / (per_sample(scale, t) + 1e-12))


def _evaluate(loss_fn: APGDLossFn, x_adv: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(loss, success, input gradient) at x_adv; only the input gets a gradient."""
    x_req = x_adv.detach().requires_grad_(True)
    with torch.enable_grad():
        out = loss_fn(x_req)
        loss, success = out if isinstance(out, tuple) else (out, None)
        grad = input_grad(loss, x_req)
    if success is None:
        success = torch.zeros(x_adv.shape[0], dtype=torch.bool, device=x_adv.device)
    return loss.detach(), success.detach().bool(), grad


class _Run:
    """State of one APGD run over a batch (iterates, best point, step sizes, loss history)."""

    def __init__(self, loss_fn: APGDLossFn, x: Tensor, x0: Tensor, eps: float, steps: int) -> None:
        self.loss_fn, self.x = loss_fn, x
        self.x_adv, self.x_prev = x0, x0.clone()
        loss, success, self.grad = _evaluate(loss_fn, x0)
        self.x_best, self.grad_best, self.loss_best = x0.clone(), self.grad.clone(), loss.clone()
        self.success, self.x_found = success.clone(), x0.clone()
        self.eta = torch.full((x.shape[0],), 2.0 * eps, device=x.device, dtype=x.dtype)
        self.hist = torch.empty(steps + 1, x.shape[0], device=x.device, dtype=loss.dtype)
        self.hist[0] = loss  # hist[k] = loss at the k-th iterate
        self.reduced_last = torch.ones_like(self.success)  # the reference counts "reduced" at p_0
        self.loss_best_last = loss.clone()

    def step(self, i: int, eps: float, norm: str, alpha: float) -> None:
        """One momentum step (alpha = 1 on the first), then loss, success and best-point bookkeeping."""
        a = 1.0 if i == 0 else alpha
        eta = per_sample(self.eta, self.x)
        z = project_to_threat(self.x_adv + eta * normalize_grad(self.grad, norm), self.x, eps, norm)
        moved = self.x_adv + a * (z - self.x_adv) + (1.0 - a) * (self.x_adv - self.x_prev)
        self.x_prev, self.x_adv = self.x_adv, project_to_threat(moved, self.x, eps, norm)
        loss, success, self.grad = _evaluate(self.loss_fn, self.x_adv)
        self.hist[i + 1] = loss
        self.x_found = torch.where(per_sample(success, self.x), self.x_adv, self.x_found)
        self.success |= success
        better = loss > self.loss_best
        self.x_best = torch.where(per_sample(better, self.x), self.x_adv, self.x_best)
        self.grad_best = torch.where(per_sample(better, self.x), self.grad, self.grad_best)
        self.loss_best = torch.where(better, loss, self.loss_best)

    def checkpoint(self, i: int, window: int, rho: float) -> None:
        """Halve eta (and restart from the best point) where condition 1 or 2 holds."""
        h = self.hist[i + 1 - window : i + 2]  # the window's iterates and the one before it
        increases = (h[1:] > h[:-1]).sum(0)
        # condition 1 (the reference code uses <=, the paper <; at the first checkpoint the
        # reference compares the first step's loss with 0, we compare it with the start's loss)
        reduce = increases.to(self.eta.dtype) <= rho * window
        reduce |= ~self.reduced_last & (self.loss_best_last >= self.loss_best)  # condition 2
        self.reduced_last, self.loss_best_last = reduce, self.loss_best.clone()
        self.eta = torch.where(reduce, self.eta / 2.0, self.eta)
        self.x_adv = torch.where(per_sample(reduce, self.x), self.x_best, self.x_adv)
        self.grad = torch.where(per_sample(reduce, self.x), self.grad_best, self.grad)

    def output(self) -> APGDOutput:
        x_adv = torch.where(per_sample(self.success, self.x), self.x_found, self.x_best)
        return APGDOutput(x_adv.detach(), self.x_best.detach(), self.loss_best, self.success)


def apgd(
    loss_fn: APGDLossFn,
    x: Tensor,
    *,
    eps: float,
    norm: str = "linf",
    steps: int = 100,
    restarts: int = 1,
    rho: float = 0.75,
    alpha: float = 0.75,
    generator: torch.Generator | None = None,
    x_init: Tensor | None = None,
) -> APGDOutput:
    """APGD (Croce & Hein 2020) maximizing a per-sample loss closure inside the eps-ball around x.

    Threat model: white-box, l-inf or l2, images in [0, 1]. Defaults follow AutoAttack: 100 steps,
    rho 0.75, momentum 0.75, initial step 2 * eps. Restarts rerun the whole batch from new random
    points and keep, per sample, a successful iterate if any run found one, else the highest loss.

    ``loss_fn(x_adv)`` returns the (B,) loss to maximize, or ``(loss, success)`` with a (B,) bool
    marking points already adversarial (the logits attacks pass ``argmax != y`` from the same
    forward pass, so success costs nothing extra). ``x_init`` starts the first run there (projected
    into the threat set; RobustVLM's warm start from an earlier pass) instead of at a random point.

    Example::

        >>> out = apgd(lambda xa: F.cross_entropy(model(xa), y, reduction="none"), x, eps=4/255)
        >>> x_adv, loss = out.x_adv, out.loss_best
    """
    norm, eps = canonical_norm(norm), check_eps(eps)
    if steps < 1 or restarts < 1:
        raise ConfigError(f"APGD needs steps >= 1 and restarts >= 1, got steps={steps}, restarts={restarts}")
    x = x.detach()
    best: APGDOutput | None = None
    for k in range(restarts):
        start = (project_to_threat(x_init.detach(), x, eps, norm) if k == 0 and x_init is not None
                 else _init_point(x, eps, norm, generator))
        run = _Run(loss_fn, x, start, eps, steps)
        schedule = dict(checkpoints(steps))
        for i in range(steps):
            run.step(i, eps, norm, alpha)
            if i in schedule:
                run.checkpoint(i, schedule[i], rho)
        best = run.output() if best is None else _merge(best, run.output())
    assert best is not None
    return best


def _merge(old: APGDOutput, new: APGDOutput) -> APGDOutput:
    """Combine two runs per sample: success wins (first found is kept), then the higher loss."""
    take_new_adv = new.success & ~old.success
    better = new.loss_best > old.loss_best
    x_best = torch.where(per_sample(better, old.x_best), new.x_best, old.x_best)
    x_adv = torch.where(per_sample(take_new_adv, x_best), new.x_adv, old.x_adv)
    x_adv = torch.where(per_sample(old.success | new.success, x_best), x_adv, x_best)
    loss = torch.where(better, new.loss_best, old.loss_best)
    return APGDOutput(x_adv, x_best, loss, old.success | new.success)


def _logit_closure(logits_fn: LogitsFn, loss: Callable[[Tensor], Tensor], y: Tensor) -> APGDLossFn:
    """loss_fn for :func:`apgd` from a logits function: (loss on logits, misclassified) per sample."""

    def closure(x_adv: Tensor) -> tuple[Tensor, Tensor]:
        logits = logits_fn(x_adv)
        return loss(logits), logits.detach().argmax(dim=1) != y

    return closure


def apgd_logits(
    logits_fn: LogitsFn,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    loss: str = "ce",
    norm: str = "linf",
    steps: int = 100,
    restarts: int = 1,
    rho: float = 0.75,
    generator: torch.Generator | None = None,
    eot_samples: int = 1,
    x_init: Tensor | None = None,
) -> Tensor:
    """APGD-CE / APGD-DLR (Croce & Hein 2020) on a classifier, as AutoAttack runs them.

    Only points still correctly classified are attacked, and each restart only reruns the points
    no earlier restart has broken. ``eot_samples`` > 1 averages every step over that many forward
    passes (:func:`~mmrobust.attacks.eot.eot`); a point then counts as broken only when all of them are
    wrong. ``x_init`` (B, C, H, W) warm-starts the first restart there instead of at a random point,
    projected onto the eps-ball around ``x`` and [0, 1] (Tramer et al. 2020: start the adaptive attack from
    a transfer attack's images); a start that is already adversarial is kept, and so is, per image, a start
    right on fewer of ``eot_samples`` fresh passes than the attack's image. Returns adversarial images: a
    misclassified iterate where one was found, the highest-loss iterate of the last restart otherwise, the
    clean image where the clean prediction is already wrong.

    Example::

        >>> x_adv = apgd_logits(model, x, y, eps=8/255, loss="dlr", generator=make_generator(0, x.device))
    """
    loss_on_logits: LogitLoss = get_logit_loss(loss)
    x, x_adv = x.detach(), x.detach().clone()
    robust = (eot_predictions(logits_fn, x, eot_samples)[1] == y).any(dim=0)  # right on some pass: attack it
    for k in range(restarts):
        idx = robust.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        y_sub = y[idx]
        closure = eot(_logit_closure(logits_fn, lambda z, t=y_sub: loss_on_logits(z, t), y_sub), eot_samples)
        start = x_init[idx] if x_init is not None and k == 0 else None
        out = apgd(closure, x[idx], eps=eps, norm=norm, steps=steps, rho=rho, generator=generator, x_init=start)
        x_adv[idx] = out.x_adv
        robust[idx[out.success]] = False
    if x_init is None:
        return x_adv
    return _no_weaker_than_start(logits_fn, x_adv, project_to_threat(x_init.detach(), x, eps, norm), y, eot_samples)


def _no_weaker_than_start(logits_fn: LogitsFn, x_adv: Tensor, start: Tensor, y: Tensor, eot_samples: int) -> Tensor:
    """Per image, the warm start where it fools more of ``eot_samples`` fresh passes than the attack's image: APGD
    keeps its highest-loss iterate, and on a randomized model a higher mean loss need not mean fewer right passes
    (the warm start must never make the attack weaker than its start, Tramer et al. 2020)."""
    right = lambda z: (eot_predictions(logits_fn, z, eot_samples)[1] == y).sum(0)  # noqa: E731
    return torch.where(per_sample(right(start) < right(x_adv), x_adv), start, x_adv)


def apgd_targeted(
    logits_fn: LogitsFn,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    norm: str = "linf",
    steps: int = 100,
    n_target_classes: int = 9,
    restarts: int = 1,
    rho: float = 0.75,
    generator: torch.Generator | None = None,
    eot_samples: int = 1,
) -> Tensor:
    """APGD-T (Croce & Hein 2020): APGD on the targeted DLR loss, one run per target class.

    Targets are the 2nd, 3rd, ... highest clean logits (at most C - 1 of them); each target
    attacks only points no earlier target has broken. Needs at least 4 classes.

    Example::

        >>> x_adv = apgd_targeted(model, x, y, eps=8/255, n_target_classes=9)
    """
    x, x_adv = x.detach(), x.detach().clone()
    clean_logits, passes = eot_predictions(logits_fn, x, eot_samples)  # one pass without EOT
    if clean_logits.shape[1] < 4:
        raise ConfigError(
            f"APGD-T needs at least 4 classes (the model has {clean_logits.shape[1]}); use 'apgd-ce' instead"
        )
    robust = (passes == y).any(dim=0)
    for rank in range(2, min(n_target_classes, clean_logits.shape[1] - 1) + 2):
        for _ in range(restarts):
            idx = robust.nonzero().squeeze(1)
            if idx.numel() == 0:
                return x_adv
            y_sub = y[idx]
            target = clean_logits[idx].sort(dim=1).indices[:, -rank]  # rank-th highest clean logit
            loss = lambda z, t=y_sub, tt=target: dlr_targeted_loss(z, t, tt)  # noqa: E731
            out = apgd(eot(_logit_closure(logits_fn, loss, y_sub), eot_samples), x[idx], eps=eps, norm=norm,
                       steps=steps, rho=rho, generator=generator)
            x_adv[idx] = out.x_adv
            robust[idx[out.success]] = False
    return x_adv
