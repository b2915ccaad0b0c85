"""`key=value` overrides of a settings dataclass (the demo's ``--set``), typed by the field defaults."""
from __future__ import annotations

import dataclasses
from fractions import Fraction
from typing import Any, Sequence, TypeVar

import yaml

from mmrobust.errors import ConfigError

S = TypeVar("S")


def _coerce(key: str, text: str, default: Any) -> Any:
    """Parse ``text`` as the type of ``default`` (floats accept 1e-3 and 4/255; tuples take YAML lists)."""
    try:
        if isinstance(default, bool):
            value = yaml.safe_load(text)
            if isinstance(value, bool):
                return value
        elif isinstance(default, float):
            return float(Fraction(text.strip()))  # 1e-3, 0.5 and 4/255 alike
        elif isinstance(default, int):
            return int(text)
        elif isinstance(default, str):
            return text
        elif isinstance(default, tuple):
            value = yaml.safe_load(text)
            items = value if isinstance(value, list) else [value]
            if default and isinstance(default[0], float):
                return tuple(float(Fraction(str(v))) for v in items)
            return tuple(type(default[0])(v) if default else v for v in items)
        else:
            value = yaml.safe_load(text)
            if default is None or isinstance(value, type(default)):
                return value
    except (ValueError, TypeError, ZeroDivisionError, yaml.YAMLError):
        pass
    raise ConfigError(f"--set {key}={text}: expected a {type(default).__name__} like {default!r}")


def apply_overrides(settings: S, assignments: Sequence[str]) -> S:
    """A copy of dataclass ``settings`` with each ``key=value`` applied; values are YAML scalars or
    lists, a dotted key reaches into a dict field (``trigger_params.pattern=noise``).

    Example::

        apply_overrides(BackdoorDemo(), ["finetune_lr=1e-3", "trigger_params.location=random"])
    """
    fields = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}  # type: ignore[arg-type]
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
            changes[head] = _coerce(key, text, fields[head])
    return dataclasses.replace(settings, **changes)  # type: ignore[type-var]
