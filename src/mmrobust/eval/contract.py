"""One registry and one calling convention for every evaluation (CLIP and MLLM alike).

An evaluation is a function ``fn(model, data, settings, **io) -> Record`` registered with
:func:`evaluation` under the name users pick (``zeroshot``, ``backdoor``, ``retrieval``,
``robust``, ``mmr``, ...) together with its frozen settings dataclass. :func:`run_evaluation`
checks the settings (a dict is converted with unknown keys refused) and calls it; the caller
writes the returned :class:`~mmrobust.reports.contract.Record` with ``write_record``.

Example::

    record = run_evaluation("zeroshot", model=clip, data=dataset, settings={"batch_size": 64})
    write_record("runs/eval", record, name="zeroshot")
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from mmrobust.errors import ConfigError
from mmrobust.registry import EVALS
from mmrobust.reports.contract import Record


@dataclass(frozen=True)
class EvalSpec:
    """A registered evaluation: its name, settings dataclass and function."""

    name: str
    settings: type
    fn: Callable[..., Record]

    @property
    def description(self) -> str:
        return (self.fn.__doc__ or "").strip().splitlines()[0] if self.fn.__doc__ else ""


def evaluation(name: str, *, settings: type) -> Callable[[Callable[..., Record]], Callable[..., Record]]:
    """Register ``fn(model, data, settings, **io) -> Record`` as the evaluation ``name``."""

    def deco(fn: Callable[..., Record]) -> Callable[..., Record]:
        EVALS.register(name)(EvalSpec(name, settings, fn))
        return fn

    return deco


def make_settings(spec: EvalSpec, settings: Any = None) -> Any:
    """``settings`` as the evaluation's dataclass: None -> defaults, a dict -> checked field by field."""
    if settings is None:
        return spec.settings()
    if isinstance(settings, spec.settings):
        return settings
    if not isinstance(settings, dict):
        raise ConfigError(f"settings of evaluation {spec.name!r} must be a {spec.settings.__name__} or a dict")
    names = {f.name for f in dataclasses.fields(spec.settings)}
    unknown = sorted(set(settings) - names)
    if unknown:
        raise ConfigError(f"evaluation {spec.name!r} has no setting(s) {unknown}; it accepts {sorted(names)}")
    return spec.settings(**settings)


def run_evaluation(name: str, *, model: Any, data: Any, settings: Any = None, **io: Any) -> Record:
    """Run the registered evaluation ``name`` and return its record (not yet written)."""
    spec: EvalSpec = EVALS.get(name)
    return spec.fn(model, data, make_settings(spec, settings), **io)
