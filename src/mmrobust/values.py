"""The one text-to-value converter: option strings from the CLI, ``--set``, ``--opt`` and trigger
parameters become typed values here, and nowhere else.

``parse_value("4/255")`` infers the type (bool, None, int, float, a fraction, else the text);
``parse_value("4/255", like=0.0)`` converts to the type of an example value (a field default) and
raises a one-line ConfigError naming the expected type when it cannot.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Any

import yaml

from mmrobust.errors import ConfigError

_MISSING = object()


def _number(text: str) -> float:
    """'1e-3', '0.5' and '4/255' alike (a fraction only where there is a slash)."""
    t = text.strip()
    return float(Fraction(t)) if "/" in t else float(t)


def _infer(text: str) -> Any:
    t = text.strip()
    if t.lower() in ("true", "false"):
        return t.lower() == "true"
    if t.lower() in ("none", "null"):
        return None
    for conv in (int, _number):
        try:
            return conv(t)
        except (ValueError, ZeroDivisionError):
            continue
    return text


def _like(value: Any, like: Any) -> Any:
    """``value`` (text or already typed) as the type of ``like``; raises ValueError/TypeError."""
    if isinstance(like, bool):
        out = yaml.safe_load(value) if isinstance(value, str) else value
        if isinstance(out, bool):
            return out
        raise ValueError(value)
    if isinstance(like, (int, float)):
        if isinstance(value, bool):
            raise TypeError(value)
        if isinstance(value, str):
            value = _number(value) if isinstance(like, float) else int(value.strip())
        if isinstance(like, float) and isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, int):
            return value
        raise TypeError(value)
    if isinstance(like, str):
        if isinstance(value, str):
            return value
        raise TypeError(value)
    if isinstance(like, tuple):
        items = yaml.safe_load(value) if isinstance(value, str) else value
        items = list(items) if isinstance(items, (list, tuple)) else [items]
        return tuple(_like(v if not isinstance(v, str) else v, like[0]) if like else v for v in items)
    out = yaml.safe_load(value) if isinstance(value, str) else value
    if like is None or isinstance(out, type(like)):
        return out
    raise TypeError(value)


def parse_value(value: Any, like: Any = _MISSING, *, name: str = "value") -> Any:
    """Convert ``value`` (usually text) to the type of ``like``, or infer a type when ``like`` is not given.

    Example::

        parse_value("3")                     # 3
        parse_value("4/255", like=0.1)       # 0.01568...
        parse_value("x", like=1, name="size")  # ConfigError: size: expected an int like 1, got 'x'
    """
    if like is _MISSING:
        return _infer(value) if isinstance(value, str) else value
    try:
        return _like(value, like)
    except (ValueError, TypeError, ZeroDivisionError, yaml.YAMLError):
        kind = type(like).__name__
        article = "an" if kind[0] in "aeiou" else "a"
        raise ConfigError(f"{name}: expected {article} {kind} like {like!r}, got {value!r}") from None


SEED_MAX = 2**63 - 1  # what torch and numpy generators accept


def _bounds(low: float | None, high: float | None, low_open: bool = False, high_open: bool = False) -> str:
    if low is not None and high is not None:
        hi = "2**63 - 1" if high == SEED_MAX else f"{high:g}"
        return f"in {'(' if low_open else '['}{low:g}, {hi}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    return f"{'<' if high_open else '<='} {high:g}" if high is not None else ""


def check_int(name: str, value: Any, *, low: int | None = None, high: int | None = None, fix: str = "") -> int:
    """``value`` if it is an integer (not a bool) in [low, high]; a one-line ConfigError naming ``name``
    and ``fix`` otherwise. The one range check of integer settings in library code."""
    if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low) or (
            high is not None and value > high):
        where = _bounds(low, high)
        raise ConfigError(f"{name} must be an integer{' ' + where if where else ''}, got {value!r}"
                          + (f"; {fix}" if fix else ""))
    return value


def check_number(name: str, value: Any, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, fix: str = "") -> float:
    """``value`` as a float if it is a finite number in the given range (open ends excluded); a one-line
    ConfigError naming ``name`` and ``fix`` otherwise."""
    import math

    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and (
        low is None or value > low or (value == low and not low_open)) and (
        high is None or value < high or (value == high and not high_open))
    if not ok:
        where = _bounds(low, high, low_open, high_open)
        raise ConfigError(f"{name} must be a finite number{' ' + where if where else ''}, got {value!r}"
                          + (f"; {fix}" if fix else ""))
    return float(value)


def check_seed(name: str, value: Any, fix: str = "") -> int:
    """A seed: an integer in [0, 2**63 - 1]."""
    return check_int(name, value, low=0, high=SEED_MAX, fix=fix)
