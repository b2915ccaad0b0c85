"""The one text-to-value converter: option strings from the CLI, ``--set``, ``--opt`` and trigger
parameters become typed values here, and nowhere else.

``parse_value("4/255")`` infers the type (bool, None, int, float, a fraction, else the text);
``parse_value("4/255", like=0.0)`` converts to the type of an example value (a field default) and
raises a one-line ConfigError naming the expected type when it cannot.
"""
from __future__ import annotations

import dataclasses
import inspect
import typing
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Iterable, Mapping

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


# --- options by name: one way to type and check the text options of anything built from a name ---------------

_EXAMPLES: dict[Any, Any] = {float: 0.0, int: 0, str: "", bool: False}
_EMPTY = inspect.Parameter.empty


@dataclass(frozen=True)
class Slot:
    """One option of a thing built by name: its default (``inspect.Parameter.empty`` when it has none) and
    type hint."""

    default: Any = _EMPTY
    annotation: Any = _EMPTY


def option_slots(obj: Any, *, skip: Iterable[str] = ()) -> dict[str, Slot]:
    """The options ``obj`` takes by keyword: a dataclass's init fields, else a function's or a class
    ``__init__``'s keyword parameters (``self`` and positional-only ones left out), minus ``skip``."""
    skip = set(skip) | {"self"}
    if dataclasses.is_dataclass(obj):
        try:
            hints = typing.get_type_hints(obj)
        except (NameError, TypeError):
            hints = {}
        return {f.name: Slot(_field_default(f), hints.get(f.name, f.type)) for f in dataclasses.fields(obj)
                if f.init and f.name not in skip}
    target = obj.__init__ if isinstance(obj, type) else obj
    try:
        sig = inspect.signature(target, eval_str=True)
    except (NameError, TypeError, SyntaxError):
        sig = inspect.signature(target)
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return {p.name: Slot(p.default, p.annotation) for p in sig.parameters.values()
            if p.kind in kinds and p.name not in skip}


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else _EMPTY


def example_of(slot: Slot) -> Any:
    """A value of the option's type to convert text to: its default, else one named by its type hint
    (``0.0`` for ``float | None``); None when neither says."""
    if slot.default is not None and slot.default is not _EMPTY:
        return slot.default
    hint = slot.annotation
    kinds = [t for t in (typing.get_args(hint) or (hint,)) if t is not type(None)]
    return _EXAMPLES.get(kinds[0]) if len(kinds) == 1 else None


def option_value(owner: str, key: str, value: Any, slot: Slot) -> Any:
    """``value`` (text from ``--opt key=value``, ``--set``, YAML, or already typed) as the type of option
    ``key`` of ``owner``: the type of its default, else of its type hint; ``none`` / ``null`` where the
    default is None; a one-line ConfigError naming ``owner`` and ``key`` when it cannot be converted."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() in ("none", "null") and (
            slot.default is None or slot.default is _EMPTY):
        return None
    like = example_of(slot)
    if like is not None:
        return parse_value(value, like=like, name=f"{owner} option {key}")
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"{owner} option {key}: cannot read {value!r}; give a number, true/false, text or "
                              "a JSON value") from None
    return parse_value(value)


def typed_options(owner: str, slots: Mapping[str, Slot], options: Mapping[str, Any] | None, *,
                  hint: str = "") -> dict[str, Any]:
    """``options`` checked against ``slots`` (an unknown name is a one-line ConfigError listing the valid
    ones, plus ``hint``) and each converted by :func:`option_value`."""
    opts = dict(options or {})
    unknown = sorted(set(opts) - set(slots))
    if unknown:
        raise ConfigError(f"{owner} has no option(s) {unknown}; it accepts {sorted(slots) or 'none'}{hint}")
    return {k: option_value(owner, k, v, slots[k]) for k, v in opts.items()}


def setting(default: Any = _EMPTY, help: str = "", *, flag: str | None = None, factory: Any = None) -> Any:
    """A settings-dataclass field carrying its own help text (and, when the command line spells it
    otherwise, its ``flag``): the one place a setting's name, default and meaning are written. The CLI
    derives its option from it (``mmrobust.cli.options.add_settings``).

    Example::

        @dataclass(frozen=True)
        class RobustSettings:
            batch_size: int = setting(250, "images attacked at once")
    """
    meta = {"help": help, **({"flag": flag} if flag else {})}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    if default is _EMPTY:  # a required setting
        return dataclasses.field(metadata=meta)
    return dataclasses.field(default=default, metadata=meta)
