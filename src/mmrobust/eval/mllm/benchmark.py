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
its own ``evaluate`` (an ``eval.contract`` evaluation function) and a loader returning that function's data;
it also passes ``task`` (loaded data, settings -> the :class:`MLLMTask` that ``evaluate`` asks) when wrappers
that re-ask its questions, such as the challenge protocol (:mod:`mmrobust.eval.challenge`), may run it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

from mmrobust.errors import ConfigError
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
    task: Callable[[Any, Any], MLLMTask] | None = None  # (loaded data, settings) -> the task ``evaluate`` asks

    def make_task(self, loaded: Any, settings: Any) -> MLLMTask:
        """The :class:`MLLMTask` whose questions ``evaluate`` asks of ``loaded`` (what the loader returned);
        a one-line ConfigError for a benchmark registered with its own ``evaluate`` and no ``task``."""
        if self.task is not None:
            return self.task(loaded, settings)
        if self.evaluate is evaluate_task and isinstance(loaded, MLLMTask):
            return loaded
        raise ConfigError(f"benchmark {self.name!r} gives no task to re-ask (register it with task=...); "
                          "only benchmarks with right and wrong answers can be challenged")

    @property
    def description(self) -> str:
        """The first line of the loader's docstring."""
        return summary(self.load, default=self.name)

    def own_settings(self) -> list[str]:
        """The settings fields beyond the harness's (parser, params, n_boot, seed, cache)."""
        harness = {f.name for f in dataclasses.fields(HarnessSettings)}
        return [f.name for f in dataclasses.fields(self.settings) if f.name not in harness]


def benchmark(name: str, *, settings: type = HarnessSettings, evaluate: Evaluate = evaluate_task,
              task: Callable[[Any, Any], MLLMTask] | None = None) -> Callable[[L], L]:
    """Register ``load(data: str, settings) -> MLLMTask`` (or, with ``evaluate``, that function's data) as
    the benchmark ``name`` with its ``settings`` dataclass (and, with ``evaluate``, the ``task`` it asks)."""
    if not (isinstance(settings, type) and issubclass(settings, HarnessSettings)):
        raise TypeError(f"benchmark {name!r}: settings must be a HarnessSettings subclass, got {settings!r}")

    def deco(load: L) -> L:
        BENCHMARKS.register(name)(Benchmark(name, load, settings, evaluate, task))
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


def benchmark_task(name: str, data: str, settings: Any = None) -> MLLMTask:
    """The :class:`MLLMTask` benchmark ``name`` asks of ``data`` under ``settings`` (its dataclass or a dict),
    for wrappers that re-ask its questions (the challenge protocol); a one-line ConfigError for a benchmark
    that gives none (see :meth:`Benchmark.make_task`)."""
    spec: Benchmark = BENCHMARKS.get(name)
    if not isinstance(settings, spec.settings):
        settings = benchmark_settings(name, settings)
    if spec.task is None and spec.evaluate is not evaluate_task:  # refuse before loading the data
        spec.make_task(None, settings)
    return spec.make_task(spec.load(data, settings), settings)
