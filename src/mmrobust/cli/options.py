"""Command-line options derived from settings dataclasses.

A settings dataclass (``TrainConfig``, ``RobustSettings``, ...) is the one source of a setting's name,
default and help (:func:`mmrobust.values.setting`); :func:`add_settings` turns its fields into options
and :func:`settings_from` turns the parsed options back into the dataclass, so no default or help is
typed twice. ``tests/test_cli_defaults.py`` checks every command's defaults against its dataclasses.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import typing
from typing import Any, Callable, Iterable

from mmrobust.cli.common import key_values
from mmrobust.reports.protocol import eps_label
from mmrobust.values import Slot, example_of, option_slots, parse_value

SETTINGS_ATTR = "_mmrobust_settings"  # on a parser: the (dataclass, field names) its options come from


def flag_of(f: dataclasses.Field) -> str:
    """The option spelling of a field: its ``flag`` metadata, else ``--`` + the name with dashes."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def text_to(like: Any, name: str, *, optional: bool = False) -> Callable[[str], Any]:
    """An argparse type converting text to the type of ``like`` (``4/255`` and ``1e-3`` for floats); with
    ``optional``, ``none`` gives None."""
    def parse(text: str) -> Any:
        if optional and text.strip().lower() in ("none", "null"):
            return None
        try:
            return parse_value(text, like=like, name=name)
        except Exception as e:  # noqa: BLE001 - a ConfigError, shown by argparse as one line
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = type(like).__name__
    return parse


def _shown(value: Any) -> str:
    """A default as a user would type it: ``4/255`` for a whole number of 1/255 steps, lists comma-joined."""
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return ",".join(_shown(v) for v in value)
    if isinstance(value, float) and 0 < value < 1:
        return eps_label(value)  # 4/255 for a whole number of 1/255 steps, else the number
    return f"{value:g}" if isinstance(value, float) else str(value)


def _help(f: dataclasses.Field, default: Any) -> str:
    text, shown = f.metadata.get("help", ""), _shown(default)
    return f"{text} (default: {shown})" if text else f"default: {shown}"


def add_settings(parser: argparse.ArgumentParser | Any, cls: type, *, only: Iterable[str] | None = None,
                 skip: Iterable[str] = (), types: dict[str, Callable[[str], Any]] | None = None,
                 choices: dict[str, Iterable[Any]] | None = None,
                 owner: argparse.ArgumentParser | None = None) -> None:
    """One option per init field of settings dataclass ``cls`` (those in ``only``, minus ``skip``), with
    the field's default and help; booleans become flags (``--x`` for a False default, ``--no-x`` for a
    True one), dict fields repeatable ``KEY=VALUE`` options. ``types`` overrides a field's text parser,
    ``choices`` restricts its values. ``parser`` may be an argument group of ``owner`` (the parser that
    records which dataclasses its options come from, :func:`settings_of`)."""
    slots = option_slots(cls)
    wanted = set(only) if only is not None else None
    owner = owner or parser
    record = getattr(owner, SETTINGS_ATTR, None) or []
    names = []
    for f in dataclasses.fields(cls):
        if not f.init or f.name in set(skip) or (wanted is not None and f.name not in wanted):
            continue
        default = slots[f.name].default
        _add_one(parser, f, default, slots[f.name].annotation, (types or {}).get(f.name),
                 (choices or {}).get(f.name))
        names.append(f.name)
    record.append((cls, tuple(names)))
    setattr(owner, SETTINGS_ATTR, record)


def _add_one(parser: Any, f: dataclasses.Field, default: Any, hint: Any, parse: Callable | None,
             choices: Iterable[Any] | None) -> None:
    required = default is dataclasses.MISSING or default is inspect.Parameter.empty
    default = None if required else default
    flag = flag_of(f)
    help_text = f"(required) {f.metadata.get('help', '')}" if required else _help(f, default)
    if isinstance(default, bool):
        flag = f.metadata.get("flag") or ("--no-" if default else "--") + f.name.replace("_", "-")
        parser.add_argument(flag, dest=f.name, action="store_false" if default else "store_true",
                            default=default, help=f.metadata.get("help", ""))
    elif isinstance(default, dict):
        parser.add_argument(flag, dest=f.name, action="append", metavar="KEY=VALUE", default=None,
                            help=f"{f.metadata.get('help', '')} (repeatable)")
    else:
        optional = default is None or type(None) in typing.get_args(hint)
        like = example_of(Slot(default, hint))  # None: no type to go by, the text stays text
        parse = parse or (str if like is None or isinstance(like, str) else text_to(like, flag, optional=optional))
        parser.add_argument(flag, dest=f.name, type=parse, default=default, help=help_text,
                            metavar=None if choices is not None else flag[2:].upper().replace("-", "_"),
                            choices=list(choices) if choices is not None else None)


def settings_from(args: argparse.Namespace, cls: type, **fixed: Any) -> Any:
    """``cls`` built from the parsed options that :func:`add_settings` added for it (a repeatable
    ``KEY=VALUE`` option becomes a dict) and the ``fixed`` values the command computes itself."""
    slots, values = option_slots(cls), {}
    for f in dataclasses.fields(cls):
        if f.init and f.name not in fixed and hasattr(args, f.name):
            v = getattr(args, f.name)
            if isinstance(slots[f.name].default, dict):
                if v is None:
                    continue  # not given: the field's own default (a factory's dict, not an empty one)
                v = key_values(v) if isinstance(v, list) else dict(v)
            values[f.name] = v
    return cls(**values, **fixed)


def settings_of(parser: argparse.ArgumentParser) -> list[tuple[type, tuple[str, ...]]]:
    """The settings dataclasses (and their fields) a parser's options were derived from."""
    return list(getattr(parser, SETTINGS_ATTR, None) or [])
