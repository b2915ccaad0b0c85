"""Build a registered Task from its name, a model and task options (no string branches)."""
from __future__ import annotations

import inspect
from typing import Any

from mmrobust.data.datasets import ClassInfo
from mmrobust.errors import ConfigError
from mmrobust.models.clip import CLIPModel
from mmrobust.registry import TASKS


def task_options(name: str) -> dict[str, Any]:
    """Keyword options a task accepts, with defaults (for --help and config validation)."""
    sig = inspect.signature(TASKS.get(name).__init__)
    return {p.name: p.default for p in sig.parameters.values()
            if p.kind == p.KEYWORD_ONLY and p.name != "classes"}


def build_task(name: str, model: CLIPModel, *, classes: ClassInfo | None = None, **options: Any) -> Any:
    """Instantiate task ``name`` on ``model``. Tasks that classify (``needs_classes``) get the class
    names and templates; unknown options fail with the valid list."""
    cls = TASKS.get(name)
    allowed = task_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"task {name!r} has no option(s) {unknown}; it accepts {sorted(allowed) or 'none'}")
    kwargs = {k: v for k, v in options.items() if v is not None}
    if getattr(cls, "needs_classes", False):
        if classes is None:
            raise ConfigError(f"task {name!r} needs class names: pass --classes classes.json (and --label-col)")
        kwargs["classes"] = classes
    return cls(model, **kwargs)
