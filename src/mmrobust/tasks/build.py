"""Build a registered Task from its name, a model and task options (no string branches)."""
from __future__ import annotations

from typing import Any

from mmrobust.data.datasets import ClassInfo
from mmrobust.errors import ConfigError
from mmrobust.models.clip import CLIPModel
from mmrobust.registry import TASKS

_GIVEN = ("model", "classes")  # what build_task supplies itself, never a user option


def task_options(name: str) -> dict[str, Any]:
    """Keyword options a task accepts, with defaults (for --help and config validation)."""
    return {k: s.default for k, s in TASKS.slots(name, skip=_GIVEN).items()}


def task_option_values(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` (text from ``--opt`` or typed values) converted to the types of task ``name``'s
    options; a one-line ConfigError for an unknown name, a value of the wrong type (``tau=abc``,
    ``eps=4/0``) or one the task refuses (:meth:`Task.check_options`)."""
    return TASKS.typed(name, options, skip=_GIVEN)


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
