"""`key=value` overrides of a settings dataclass (the demo's ``--set``), typed by the field defaults."""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence, TypeVar

import yaml

from mmrobust.errors import ConfigError
from mmrobust.values import Slot, option_slots, option_value

S = TypeVar("S")


def apply_overrides(settings: S, assignments: Sequence[str]) -> S:
    """A copy of dataclass ``settings`` with each ``key=value`` applied; values are YAML scalars or
    lists, a dotted key reaches into a dict field (``trigger_params.pattern=noise``).

    Example::

        apply_overrides(BackdoorDemo(), ["finetune_lr=1e-3", "trigger_params.location=random"])
    """
    fields = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}  # type: ignore[arg-type]
    slots = option_slots(type(settings))
    changes: dict[str, Any] = {}
    for item in assignments:
        key, sep, text = item.partition("=")
        head, _, sub = key.strip().partition(".")
        if not sep or head not in fields:
            raise ConfigError(f"--set {item!r}: use key=value with a key among {sorted(fields)}")
        if sub:
            if not isinstance(fields[head], dict):
                raise ConfigError(f"--set {item!r}: {head} is not a dict, drop '.{sub}'")
            current = changes.setdefault(head, dict(fields[head]))
            current[sub] = yaml.safe_load(text) if text.strip() else None
        else:
            hint = slots[head].annotation
            changes[head] = option_value("--set", head, text, Slot(default=fields[head], annotation=hint))
    return dataclasses.replace(settings, **changes)  # type: ignore[type-var]
