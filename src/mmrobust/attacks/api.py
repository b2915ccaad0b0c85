"""Uniform, registered attacks on a classifier: ``ATTACKS.get(name)(logits_fn, x, y, eps=...)``.

Every entry has the signature ``(logits_fn, x, y, *, eps, norm="linf", steps=..., seed=0, **kw)
-> AttackResult`` with images in [0, 1] and eps in [0, 1] units. ``logits_fn`` maps images to
(B, C) logits (normalization inside). Run :func:`mmrobust.attacks.checks.run_checks` once before
an evaluation ("autoattack" does so itself).

Names: "pgd" (Madry et al. 2018), "apgd-ce", "apgd-dlr", "apgd-t" (Croce & Hein 2020) and
"autoattack" (the worst case over a list of them, see :mod:`mmrobust.attacks.autoattack`).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from mmrobust.attacks.apgd import apgd_logits, apgd_targeted
from mmrobust.attacks.eot import check_eot_samples, eot
from mmrobust.attacks.losses import get_logit_loss
from mmrobust.attacks.ops import canonical_norm, check_eps, check_images, make_generator, per_sample
from mmrobust.attacks.pgd import pgd
from mmrobust.attacks.result import AttackResult
from mmrobust.errors import ConfigError
from mmrobust.registry import ATTACKS

LogitsFn = Callable[[Tensor], Tensor]


def validate_inputs(x: Tensor, y: Tensor, eps: float, norm: str) -> tuple[Tensor, float, str]:
    """Check images, labels, eps and norm once at the edge; returns (int64 labels, eps, norm)."""
    check_images(x)
    if y.dim() != 1 or y.shape[0] != x.shape[0] or y.is_floating_point() or y.is_complex():
        raise ConfigError(f"labels must be an integer tensor of shape ({x.shape[0]},), got "
                          f"{tuple(y.shape)} {y.dtype}")
    if y.device != x.device:
        raise ConfigError(f"images are on {x.device} but labels on {y.device}; move both to one device")
    return y.long(), check_eps(eps), canonical_norm(norm)


def predict(logits_fn: LogitsFn, x: Tensor, batch_size: int | None = None) -> Tensor:
    """Predicted classes (B,) without a graph, in chunks of ``batch_size`` (all at once if None)."""
    with torch.no_grad():
        chunks = x.split(batch_size) if batch_size else (x,)
        return torch.cat([logits_fn(c).argmax(dim=1) for c in chunks])


def finish(name: str, logits_fn: LogitsFn, x: Tensor, y: Tensor, x_adv: Tensor, config: dict[str, Any],
           broken_by: tuple[str, ...] | None = None, batch_size: int | None = None,
           clean_where_wrong: bool = True) -> AttackResult:
    """Evaluate clean and adversarial predictions; keep the clean image where it is already wrong (unless
    ``clean_where_wrong`` is False: a warm-started attack keeps its image, since on a randomized model one wrong
    clean pass does not make the clean image the better one)."""
    clean_ok = predict(logits_fn, x, batch_size) == y
    adv_ok = predict(logits_fn, x_adv, batch_size) == y
    x_adv = (torch.where(per_sample(clean_ok, x), x_adv, x) if clean_where_wrong else x_adv).detach()
    return AttackResult(x_adv, clean_ok, clean_ok & adv_ok, name, config, broken_by)


@ATTACKS.register("pgd")
def pgd_attack(logits_fn: LogitsFn, x: Tensor, y: Tensor, *, eps: float, norm: str = "linf",
               steps: int = 10, seed: int = 0, step_size: float | None = None, loss: str = "ce",
               random_start: bool = True, momentum: float | None = None,
               return_best: bool = False, eot_samples: int = 1) -> AttackResult:
    """PGD (Madry et al. 2018) on the CE (or "dlr", "margin") loss of a classifier.

    Defaults: 10 steps, step size 2.5 * eps / steps (Madry et al.), uniform random start. ``eot_samples``
    > 1 averages each step's loss and gradient over that many forward passes (EOT, for a randomized model).

    Example::

        >>> res = ATTACKS.get("pgd")(model, x, y, eps=4/255, steps=10, seed=0)
        >>> res.robust_accuracy
    """
    y, eps, norm = validate_inputs(x, y, eps, norm)
    step = 2.5 * eps / max(steps, 1) if step_size is None else float(step_size)
    logit_loss = get_logit_loss(loss)
    loss_fn = eot(lambda xa: logit_loss(logits_fn(xa), y), check_eot_samples(eot_samples))
    x_adv = pgd(loss_fn, x, eps=eps, step_size=step, steps=steps, norm=norm,
                random_start=random_start, generator=make_generator(seed, x.device),
                return_best=return_best, momentum=momentum)
    config = dict(eps=eps, norm=norm, steps=steps, seed=seed, step_size=step, loss=loss,
                  random_start=random_start, momentum=momentum, return_best=return_best, eot_samples=eot_samples)
    return finish("pgd", logits_fn, x, y, x_adv, config)


def _apgd_untargeted(name: str, loss: str) -> Callable[..., AttackResult]:
    def attack(logits_fn: LogitsFn, x: Tensor, y: Tensor, *, eps: float, norm: str = "linf",
               steps: int = 100, seed: int = 0, restarts: int = 1, rho: float = 0.75,
               eot_samples: int = 1, x_init: Tensor | None = None) -> AttackResult:
        y, eps, norm = validate_inputs(x, y, eps, norm)
        if x_init is not None and x_init.shape != x.shape:
            raise ConfigError(f"the warm start x_init has shape {tuple(x_init.shape)}, the images "
                              f"{tuple(x.shape)}; give one starting image per image")
        x_adv = apgd_logits(logits_fn, x, y, eps=eps, loss=loss, norm=norm, steps=steps, restarts=restarts,
                            rho=rho, generator=make_generator(seed, x.device), eot_samples=eot_samples,
                            x_init=None if x_init is None else x_init.to(x.device))
        config = dict(eps=eps, norm=norm, steps=steps, seed=seed, restarts=restarts, rho=rho, loss=loss,
                      eot_samples=eot_samples, warm_start=x_init is not None)
        return finish(name, logits_fn, x, y, x_adv, config, clean_where_wrong=x_init is None)

    attack.__name__ = name.replace("-", "_")
    attack.__doc__ = (
        f"APGD on the {loss.upper()} loss (Croce & Hein 2020), as in AutoAttack.\n\n"
        "Defaults: 100 steps, 1 restart (on points not yet broken), rho 0.75, momentum 0.75; eot_samples > 1\n"
        "averages loss and gradient over that many forward passes (EOT, Athalye et al. 2018); x_init (images like\n"
        "x) warm-starts the first restart there, projected onto the eps-ball of x (Tramer et al. 2020).\n\n"
        f"Example::\n\n    >>> res = ATTACKS.get({name!r})(model, x, y, eps=8/255, seed=0)\n"
    )
    return attack


apgd_ce_attack = ATTACKS.register("apgd-ce")(_apgd_untargeted("apgd-ce", "ce"))
apgd_dlr_attack = ATTACKS.register("apgd-dlr")(_apgd_untargeted("apgd-dlr", "dlr"))


@ATTACKS.register("apgd-t")
def apgd_t_attack(logits_fn: LogitsFn, x: Tensor, y: Tensor, *, eps: float, norm: str = "linf",
                  steps: int = 100, seed: int = 0, n_target_classes: int = 9, restarts: int = 1,
                  rho: float = 0.75, eot_samples: int = 1) -> AttackResult:
    """APGD-T (Croce & Hein 2020): targeted DLR loss against the top ``n_target_classes`` classes.

    Defaults as in AutoAttack's standard version: 9 targets, 1 restart each, 100 steps; ``eot_samples``
    as for "apgd-ce".

    Example::

        >>> res = ATTACKS.get("apgd-t")(model, x, y, eps=8/255, seed=0)
    """
    y, eps, norm = validate_inputs(x, y, eps, norm)
    x_adv = apgd_targeted(logits_fn, x, y, eps=eps, norm=norm, steps=steps, n_target_classes=n_target_classes,
                          restarts=restarts, rho=rho, generator=make_generator(seed, x.device),
                          eot_samples=eot_samples)
    config = dict(eps=eps, norm=norm, steps=steps, seed=seed, n_target_classes=n_target_classes,
                  restarts=restarts, rho=rho, eot_samples=eot_samples)
    return finish("apgd-t", logits_fn, x, y, x_adv, config)
