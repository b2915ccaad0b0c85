"""Build a registered Task from its name, a model and task options (no string branches)."""
from __future__ import annotations

import inspect
import typing
from typing import Any

from mmrobust.data.datasets import ClassInfo
from mmrobust.errors import ConfigError
from mmrobust.models.clip import CLIPModel
from mmrobust.registry import TASKS
from mmrobust.values import parse_value

_EXAMPLES: dict[Any, Any] = {float: 0.0, int: 0, str: "", bool: False}


def _parameters(name: str) -> dict[str, inspect.Parameter]:
    """The keyword-only options of task ``name``'s ``__init__`` (annotations evaluated where possible)."""
    init = TASKS.get(name).__init__
    try:
        sig = inspect.signature(init, eval_str=True)
    except (NameError, TypeError, SyntaxError):
        sig = inspect.signature(init)
    return {p.name: p for p in sig.parameters.values() if p.kind == p.KEYWORD_ONLY and p.name != "classes"}


def task_options(name: str) -> dict[str, Any]:
    """Keyword options a task accepts, with defaults (for --help and config validation)."""
    return {k: p.default for k, p in _parameters(name).items()}


def _example(param: inspect.Parameter) -> Any:
    """A value of the option's type to convert text to: its default, else one named by its annotation."""
    if param.default is not None and param.default is not param.empty:
        return param.default
    kinds = [t for t in (typing.get_args(param.annotation) or (param.annotation,)) if t is not type(None)]
    return _EXAMPLES.get(kinds[0]) if len(kinds) == 1 else None


def _convert(task: str, param: inspect.Parameter, value: Any) -> Any:
    if value is None:
        return None
    if param.default is None and isinstance(value, str) and value.strip().lower() in ("none", "null"):
        return None
    like = _example(param)
    if like is None:
        return parse_value(value)
    return parse_value(value, like=like, name=f"task {task!r} option {param.name}")


def task_option_values(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` (text from ``--opt`` or typed values) converted to the types of task ``name``'s
    options; a one-line ConfigError for an unknown name, a value of the wrong type (``tau=abc``,
    ``eps=4/0``) or one the task refuses (:meth:`Task.check_options`)."""
    params = _parameters(name)
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise ConfigError(f"task {name!r} has no option(s) {unknown}; it accepts {sorted(params) or 'none'}")
    values = {k: _convert(name, params[k], v) for k, v in options.items()}
    TASKS.get(name).check_options(values)
    return values


def build_task(name: str, model: CLIPModel, *, classes: ClassInfo | None = None, **options: Any) -> Any:
    """Instantiate task ``name`` on ``model``. Tasks that classify (``needs_classes``) get the class
    names and templates; unknown options fail with the valid list, wrong types and ranges with one line."""
    cls = TASKS.get(name)
    kwargs = {k: v for k, v in task_option_values(name, options).items() if v is not None}
    if getattr(cls, "needs_classes", False):
        if classes is None:
            raise ConfigError(f"task {name!r} needs class names: pass --classes classes.json (and --label-col)")
        kwargs["classes"] = classes
    return cls(model, **kwargs)
