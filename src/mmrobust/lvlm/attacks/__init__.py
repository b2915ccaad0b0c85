"""White-box LVLM attacks for `mmrobust lvlm eval --attack NAME`, by name (``registry.LVLM_ATTACKS``).

Every module of this package is imported on the registry's first lookup and registers its attack with
:func:`lvlm_attack`, so a new attack is one new file here. An attack is called as::

    x_adv, record = attack(model, processor, images, prompts, references, eps=..., steps=..., seed=...,
                           max_new_tokens=..., **options)

``images`` (B, 3, H, W) in [0, 1] at the tower's resolution, one prompt and a list of reference answers
per image; it returns images inside the l-inf ``eps``-ball and [0, 1], and a record with per-image
``clean_loss`` / ``final_loss`` (the attacked loss at the clean and the returned image).

Example (``mmrobust/lvlm/attacks/noise.py``)::

    @lvlm_attack("noise", protocol="uniform-noise")
    def noise(model, processor, images, prompts, references, *, eps, steps, seed, max_new_tokens=20):
        # seeded uniform noise in the eps-ball, clipped to [0, 1]; a record with clean_loss / final_loss
        ...
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Mapping, TypeVar

from mmrobust.registry import LVLM_ATTACKS, import_modules, summary
from mmrobust.values import option_slots, typed_options

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class LVLMAttack:
    """A registered LVLM attack: its function, the ``protocol`` label records carry (two records compare
    equal only under the same label), and the keyword ``options`` a user may set (``--attack-arg``)."""

    name: str
    fn: Callable[..., Any]
    protocol: str
    options: tuple[str, ...] = ()

    @property
    def description(self) -> str:
        """The first line of the function's docstring."""
        return summary(self.fn, default=self.name)

    def check_options(self, options: Mapping[str, Any] | None) -> dict[str, Any]:
        """``options`` (values may be text, as from ``--attack-arg key=value``) checked against ``options``
        and typed by the function's defaults; a one-line ConfigError otherwise."""
        slots = option_slots(self.fn)
        return typed_options(f"LVLM attack {self.name!r}", {k: slots[k] for k in self.options}, options)


def lvlm_attack(name: str, *, protocol: str | None = None, options: tuple[str, ...] = ()) -> Callable[[F], F]:
    """Register ``fn(model, processor, images, prompts, references, *, eps, steps, seed, max_new_tokens,
    **options) -> (x_adv, record)`` as the LVLM attack ``name`` (``protocol``: its label in records,
    default ``name``; ``options``: the keyword parameters users may set)."""

    def deco(fn: F) -> F:
        params = inspect.signature(fn).parameters
        missing = [k for k in options if k not in params or params[k].default is inspect.Parameter.empty]
        if missing:
            raise ValueError(f"LVLM attack {name!r}: options {missing} are not keyword parameters with defaults")
        LVLM_ATTACKS.register(name)(LVLMAttack(name, fn, protocol or name, tuple(options)))
        return fn

    return deco


import_modules(__name__, __path__)

__all__ = ["LVLMAttack", "lvlm_attack"]
