"""Sanity checks before a robustness evaluation, in the spirit of AutoAttack's flags.

Croce & Hein 2020 ("Reliable evaluation of adversarial robustness...", ICML) and the AutoAttack
code warn when an evaluation is likely to overestimate robustness: the model returns probabilities
instead of logits (CE saturates, gradients vanish), the model is randomized (dropout left on,
stochastic defenses), or input gradients are zero (gradient masking, non-differentiable steps).
Here each check raises a ConfigError naming the fix, or warns with ``on_fail="warn"``.

Example::

    >>> run_checks(model, x[:64], y[:64])          # before eval; raises on a softmax/dropout model
"""
from __future__ import annotations

import warnings
from typing import Callable, Literal

import torch
from torch import Tensor, nn

from mmrobust.attacks.losses import margin_loss
from mmrobust.errors import ConfigError
from mmrobust.reports.sanity import bad_gradients, randomized_model

LogitsFn = Callable[[Tensor], Tensor]
OnFail = Literal["raise", "warn"]


class AttackCheckWarning(UserWarning):
    """A sanity check failed and ``on_fail="warn"`` was chosen."""


def _fail(msg: str, on_fail: OnFail) -> None:
    if on_fail == "raise":
        raise ConfigError(msg)
    warnings.warn(msg, AttackCheckWarning, stacklevel=3)


def check_logits(logits_fn: LogitsFn, x: Tensor, *, on_fail: OnFail = "raise", tol: float = 1e-5) -> int:
    """Outputs must be (B, C) logits, not probabilities; returns C."""
    with torch.no_grad():
        out = logits_fn(x)
    if out.dim() != 2 or out.shape[1] < 2:
        raise ConfigError(f"the model must return (B, C) logits with C >= 2, got shape {tuple(out.shape)}")
    if not torch.isfinite(out).all():
        _fail("the model returns NaN or infinite logits; fix the model before attacking it", on_fail)
    in_unit = bool(out.min() > -tol) and bool(out.max() < 1 + tol)
    if in_unit and bool(((out.sum(dim=1) - 1).abs() < tol).all()):
        _fail("the model output looks like probabilities (rows in [0, 1] summing to 1); return the logits "
              "before softmax, or CE/DLR attacks see vanishing gradients and overestimate robustness", on_fail)
    return int(out.shape[1])


def check_deterministic(logits_fn: LogitsFn, x: Tensor, *, on_fail: OnFail = "raise", tol: float = 1e-5) -> None:
    """Two forward passes on the same input must agree (up to ``tol`` relative to the logit scale)."""
    with torch.no_grad():
        a, b = logits_fn(x), logits_fn(x)
    diff = float((a - b).abs().max())
    scale = float(a.abs().max()) + 1e-12
    if diff > tol * max(scale, 1.0) or not torch.equal(a.argmax(1), b.argmax(1)):
        _fail((randomized_model(diff) or randomized_model(float("inf")))[0], on_fail)  # NaN diff: NaN logits


def check_eval_mode(model: object, *, on_fail: OnFail = "raise") -> None:
    """An nn.Module with dropout or batch-norm layers must be in eval mode while it is attacked."""
    if not isinstance(model, nn.Module):
        return
    stateful = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm)
    training = sorted({type(m).__name__ for m in model.modules() if isinstance(m, stateful) and m.training})
    if training:
        _fail(f"the model has {', '.join(training)} layers in training mode (random or batch-dependent "
              "outputs, running statistics updated by the attack); call model.eval() first", on_fail)


def check_gradients(logits_fn: LogitsFn, x: Tensor, y: Tensor, *, on_fail: OnFail = "raise") -> None:
    """Every sample must have a nonzero, finite input gradient of the margin loss (which does not saturate)."""
    x_req = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = logits_fn(x_req)
        grad = None
        if out.requires_grad:
            (grad,) = torch.autograd.grad(margin_loss(out, y).sum(), x_req, allow_unused=True)
    if grad is None:
        raise ConfigError("the model output has no gradient w.r.t. the input; do not run the forward "
                          "under torch.no_grad() or detach the images inside the model")
    flat = grad.reshape(len(grad), -1)
    nan = ~torch.isfinite(flat).all(dim=1)
    zero = ~nan & (flat.abs().sum(dim=1) == 0)
    for msg in bad_gradients(int(zero.sum()), int(nan.sum()), len(flat)):
        _fail(msg, on_fail)


def check_target_classes(n_classes: int, attacks: tuple[str, ...] | list[str], n_target_classes: int) -> None:
    """DLR needs >= 3 classes, targeted DLR >= 4; APGD-T uses at most C - 1 targets."""
    if "apgd-dlr" in attacks and n_classes < 3:
        raise ConfigError(f"'apgd-dlr' needs at least 3 classes (the model has {n_classes}); use 'apgd-ce'")
    if "apgd-t" in attacks and n_classes < 4:
        raise ConfigError(f"'apgd-t' needs at least 4 classes (the model has {n_classes}); drop it from "
                          "the attack list or use 'apgd-ce'")
    if "apgd-t" in attacks and n_target_classes > n_classes - 1:
        warnings.warn(f"apgd-t: {n_target_classes} target classes requested but only {n_classes - 1} "
                      "exist; using all of them", AttackCheckWarning, stacklevel=2)


def run_checks(
    logits_fn: LogitsFn,
    x: Tensor,
    y: Tensor,
    *,
    attacks: tuple[str, ...] | list[str] = (),
    n_target_classes: int = 9,
    on_fail: OnFail = "raise",
) -> int:
    """All checks on a (small) batch: eval mode, logits, determinism, gradients, classes. Returns C."""
    check_eval_mode(logits_fn, on_fail=on_fail)
    n_classes = check_logits(logits_fn, x, on_fail=on_fail)
    check_deterministic(logits_fn, x, on_fail=on_fail)
    check_gradients(logits_fn, x, y, on_fail=on_fail)
    check_target_classes(n_classes, attacks, n_target_classes)
    return n_classes
