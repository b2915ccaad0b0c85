"""AutoAttack-style worst case: run attacks in sequence, each only on the points still robust.

Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks" (ICML). The standard AutoAttack ensemble is APGD-CE, APGD-T, FAB-T and
Square; the default here is its two gradient attacks ("apgd-ce" then "apgd-t"), which on
undefended and adversarially trained models account for almost all of its successes. Any
registered attack name may be listed (e.g. "pgd", "apgd-dlr").
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from torch import Tensor

from mmrobust.attacks.api import finish, predict, validate_inputs
from mmrobust.attacks.checks import run_checks
from mmrobust.attacks.eot import check_eot_samples
from mmrobust.attacks.result import AttackResult
from mmrobust.errors import ConfigError
from mmrobust.registry import ATTACKS

DEFAULT_ATTACKS = ("apgd-ce", "apgd-t")
LogitsFn = Callable[[Tensor], Tensor]


@ATTACKS.register("autoattack")
def autoattack(
    logits_fn: LogitsFn,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    norm: str = "linf",
    steps: int = 100,
    seed: int = 0,
    attacks: Sequence[str] = DEFAULT_ATTACKS,
    attack_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    batch_size: int | None = None,
    check: bool = True,
    check_size: int = 64,
    eot_samples: int = 1,
) -> AttackResult:
    """Worst case over ``attacks`` (default APGD-CE then APGD-T), as AutoAttack evaluates.

    Threat model: white-box, l-inf or l2 ball of radius eps, images in [0, 1]. Each attack runs
    only on points no earlier attack has broken, in chunks of ``batch_size`` (all at once if None),
    and every attack and chunk starts from ``seed`` (as AutoAttack reseeds). ``attack_kwargs``
    passes options per attack, e.g. ``{"apgd-t": {"n_target_classes": 3}}``. With ``check`` the
    sanity checks of :mod:`mmrobust.attacks.checks` run first on ``check_size`` points. ``eot_samples``
    > 1 is passed to every attack (EOT over a randomized model, Athalye et al. 2018); the checks then warn
    about the model's randomness instead of refusing it.

    Returns an AttackResult whose ``broken_by`` names the attack that broke each point ("clean"
    if misclassified without attack, "" if still robust).

    Example::

        >>> res = autoattack(model, x, y, eps=8/255, seed=0)
        >>> res.robust_accuracy, res.broken_by[:5]
    """
    y, eps, norm = validate_inputs(x, y, eps, norm)
    eot_samples = check_eot_samples(eot_samples)
    fns = _resolve(attacks, attack_kwargs)
    kwargs = {name: dict(attack_kwargs.get(name, {})) for name in attacks} if attack_kwargs else {}
    if check:
        n_t = int(kwargs.get("apgd-t", {}).get("n_target_classes", 9))
        run_checks(logits_fn, x[:check_size], y[:check_size], attacks=tuple(attacks), n_target_classes=n_t,
                   on_fail="warn" if eot_samples > 1 else "raise")
    x = x.detach()
    robust = predict(logits_fn, x, batch_size) == y
    broken = ["" if ok else "clean" for ok in robust.tolist()]
    x_adv = x.clone()
    eot_opt = {"eot_samples": eot_samples} if eot_samples > 1 else {}
    for name, fn in fns:
        for idx in _chunks(robust.nonzero().squeeze(1), batch_size):
            res = fn(logits_fn, x[idx], y[idx], eps=eps, norm=norm, steps=steps, seed=seed,
                     **{**eot_opt, **kwargs.get(name, {})})
            x_adv[idx] = res.x_adv
            fooled = idx[~res.robust]
            robust[fooled] = False
            for i in fooled.tolist():
                broken[i] = name
    config = dict(eps=eps, norm=norm, steps=steps, seed=seed, attacks=list(attacks),
                  attack_kwargs={k: dict(v) for k, v in kwargs.items()}, batch_size=batch_size, eot_samples=eot_samples)
    return finish("autoattack", logits_fn, x, y, x_adv, config, broken_by=tuple(broken), batch_size=batch_size)


def _resolve(attacks: Sequence[str], attack_kwargs: Mapping[str, Any] | None) -> list[tuple[str, Callable]]:
    if isinstance(attacks, str) or not attacks:
        raise ConfigError(f"attacks must be a non-empty list of attack names, got {attacks!r}")
    if "autoattack" in attacks:
        raise ConfigError("'autoattack' cannot be one of its own attacks; list e.g. ['apgd-ce', 'apgd-t']")
    extra = set(attack_kwargs or {}) - set(attacks)
    if extra:
        raise ConfigError(f"attack_kwargs names attacks not in the list: {sorted(extra)}")
    return [(name, ATTACKS.get(name)) for name in attacks]


def _chunks(idx: Tensor, batch_size: int | None) -> list[Tensor]:
    if idx.numel() == 0:
        return []
    if batch_size is None:
        return [idx]
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1 or None, got {batch_size}")
    return list(idx.split(batch_size))
