"""`mmrobust bench run|list` as typed library functions: any registered MLLM benchmark
(``registry.BENCHMARKS``, :mod:`mmrobust.eval.benchmarks`) against any MLLM adapter, through the shared
harness (response cache, resume, parsers, bootstrap CIs); the record is written to ``out_dir``.

Example::

    run_bench_job(BenchJob(benchmark="mmr", data="data/mmr", adapter="scripted", model="random",
                           out_dir="runs/bench-mmr", settings={"limit": 5}))
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from mmrobust.registry import BENCHMARKS


@dataclass(frozen=True)
class BenchJob:
    """One benchmark run: the benchmark's name and ``data`` (file, folder or spec its loader reads), the
    adapter (name, model, options checked against its signature), and the benchmark's settings (a dict,
    text values typed by the settings dataclass, or the dataclass itself)."""

    benchmark: str
    data: str
    adapter: str
    model: str
    out_dir: str
    adapter_options: dict[str, Any] = field(default_factory=dict)
    settings: Any = None

    def __post_init__(self) -> None:
        BENCHMARKS.get(self.benchmark)  # unknown names: one line with suggestions, before anything runs


def list_benchmarks(pattern: str = "*") -> list[dict[str, Any]]:
    """Every registered benchmark matching ``pattern``: name, description, its own settings."""
    out = []
    for name in BENCHMARKS.list(pattern):
        spec = BENCHMARKS.get(name)
        out.append({"name": name, "description": spec.description, "settings": spec.own_settings()})
    return out


def run_bench_job(job: BenchJob, *, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Check the settings, build the adapter, load and ask the questions, score, write the record; returns it."""
    from mmrobust.eval.mllm.benchmark import benchmark_settings, run_benchmark
    from mmrobust.models.mllm import adapter_options, build_adapter
    from mmrobust.pipelines.mmr import public_options
    from mmrobust.reports.contract import write_record

    settings = job.settings if isinstance(job.settings, BENCHMARKS.get(job.benchmark).settings) else \
        benchmark_settings(job.benchmark, job.settings)
    options = adapter_options(job.adapter, job.adapter_options)
    adapter = build_adapter(job.adapter, model=job.model, options=options)
    record = run_benchmark(job.benchmark, adapter, job.data, out_dir=job.out_dir, settings=settings,
                           progress=progress, config={"adapter": job.adapter, "adapter_args": public_options(options)})
    return write_record(job.out_dir, record)
