"""MLLM benchmarks by name (``registry.BENCHMARKS``): what `mmrobust bench run NAME --data D` loads and how
it is scored, on the shared harness (lmms-eval's ``--tasks``, for mmrobust's harness tasks).

A benchmark is a loader ``load(data, settings) -> MLLMTask`` registered with :func:`benchmark` under a
name, with its frozen settings dataclass (a :class:`HarnessSettings` subclass: parser, decoding, bootstrap,
cache, plus its own fields). Each lives in one file of :mod:`mmrobust.eval.benchmarks`, whose modules are
all imported on the registry's first lookup, so a new benchmark is exactly one new file there::

    @benchmark("count-shapes")
    def count_shapes(data: str, settings: HarnessSettings) -> CountShapes:
        # the first docstring line is what `mmrobust bench list` shows
        return CountShapes(Path(data))

A benchmark whose record needs more than :func:`run_task` gives (MMR's prompt and pairing fields) passes
its own ``evaluate`` (an ``eval.contract`` evaluation function) and a loader returning that function's data.
"""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

from mmrobust.eval.mllm.harness import HarnessSettings, Progress, run_task
from mmrobust.eval.mllm.task import MLLMTask
from mmrobust.registry import BENCHMARKS, summary
from mmrobust.reports.contract import Record
from mmrobust.values import option_slots, typed_options

L = TypeVar("L", bound=Callable[..., Any])
Evaluate = Callable[..., Record]  # (adapter, loaded data, settings, *, out_dir, progress, config) -> Record


def evaluate_task(model: Any, task: MLLMTask, settings: HarnessSettings, *, out_dir: str | Path,
                  progress: Progress | None = None, config: dict | None = None) -> Record:
    """The default evaluation of a benchmark: ask ``task``'s questions through ``model`` (an MLLM adapter)
    with the response cache, score them, and return the record (its config holds every setting)."""
    record = run_task(task, model, out_dir=out_dir, settings=settings.harness(), progress=progress, config=config)
    record.config["settings"] = asdict(settings)
    return record


@dataclass(frozen=True)
class Benchmark:
    """A registered benchmark: its loader from ``--data``, settings dataclass and evaluation function."""

    name: str
    load: Callable[[str, Any], Any]
    settings: type = HarnessSettings
    evaluate: Evaluate = evaluate_task

    @property
    def description(self) -> str:
        """The first line of the loader's docstring."""
        return summary(self.load, default=self.name)

    def own_settings(self) -> list[str]:
        """The settings fields beyond the harness's (parser, params, n_boot, seed, cache)."""
        harness = {f.name for f in dataclasses.fields(HarnessSettings)}
        return [f.name for f in dataclasses.fields(self.settings) if f.name not in harness]


def benchmark(name: str, *, settings: type = HarnessSettings, evaluate: Evaluate = evaluate_task
              ) -> Callable[[L], L]:
    """Register ``load(data: str, settings) -> MLLMTask`` (or, with ``evaluate``, that function's data) as
    the benchmark ``name`` with its ``settings`` dataclass."""
    if not (isinstance(settings, type) and issubclass(settings, HarnessSettings)):
        raise TypeError(f"benchmark {name!r}: settings must be a HarnessSettings subclass, got {settings!r}")

    def deco(load: L) -> L:
        BENCHMARKS.register(name)(Benchmark(name, load, settings, evaluate))
        return load

    return deco


def benchmark_settings(name: str, values: Mapping[str, Any] | None = None) -> Any:
    """The settings of benchmark ``name``: its defaults, overridden by ``values`` (text is typed by the
    field's default, e.g. ``"3"`` for an int); unknown keys are a one-line ConfigError naming the accepted."""
    spec: Benchmark = BENCHMARKS.get(name)
    typed = typed_options(f"benchmark {name!r}", option_slots(spec.settings), values)
    return spec.settings(**typed)


def run_benchmark(name: str, model: Any, data: str, *, out_dir: str | Path, settings: Any = None,
                  progress: Progress | None = None, config: dict | None = None) -> Record:
    """Load benchmark ``name``'s questions from ``data``, ask them through ``model`` (an MLLM adapter),
    score, and return the record (not yet written: ``write_record(out_dir, record)``).

    ``settings``: the benchmark's settings dataclass, or a dict for :func:`benchmark_settings`.
    """
    spec: Benchmark = BENCHMARKS.get(name)
    if not isinstance(settings, spec.settings):
        settings = benchmark_settings(name, settings)
    loaded = spec.load(data, settings)
    return spec.evaluate(model, loaded, settings, out_dir=out_dir, progress=progress,
                         config={"benchmark": name, "data": str(data), **(config or {})})
