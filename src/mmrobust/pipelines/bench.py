"""`mmrobust bench run|list` as typed library functions: any registered MLLM benchmark
(``registry.BENCHMARKS``, :mod:`mmrobust.eval.benchmarks`) against any MLLM adapter, through the shared
harness (response cache, resume, parsers, bootstrap CIs); the record is written to ``out_dir``.

With ``challenge`` templates, every first answer is then challenged (:mod:`mmrobust.eval.challenge`): the
challenge record ``results_challenge.json`` is written beside the benchmark's, from the same cache.

Example::

    run_bench_job(BenchJob(benchmark="mmr", data="data/mmr", adapter="scripted", model="random",
                           out_dir="runs/bench-mmr", settings={"limit": 5}, challenge={"templates": "are-you-sure"}))
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
    challenge: Any = None  # ChallengeSettings, a dict of its fields, or None: no challenge

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
    """Check the settings, build the adapter, load and ask the questions, score, write the record; returns it.
    With challenge templates, the written challenge record is returned under ``"challenge"`` too."""
    from mmrobust.eval.mllm.benchmark import benchmark_settings, run_benchmark
    from mmrobust.models.mllm import adapter_options, build_adapter
    from mmrobust.pipelines.mmr import public_options
    from mmrobust.reports.contract import write_record

    settings = job.settings if isinstance(job.settings, BENCHMARKS.get(job.benchmark).settings) else \
        benchmark_settings(job.benchmark, job.settings)
    options = adapter_options(job.adapter, job.adapter_options)
    challenge = _challenge(job, settings)  # refused here, before the model loads or any call
    adapter = build_adapter(job.adapter, model=job.model, options=options)
    config = {"adapter": job.adapter, "adapter_args": public_options(options)}
    record = run_benchmark(job.benchmark, adapter, job.data, out_dir=job.out_dir, settings=settings,
                           progress=progress, config=config)
    written = write_record(job.out_dir, record)
    if challenge is not None:
        from mmrobust.eval.challenge import run_challenge

        task, ch = challenge
        result = run_challenge(task, adapter, ch, out_dir=job.out_dir, settings=settings.harness(), progress=progress,
                               config={"benchmark": job.benchmark, "data": str(job.data), **config})
        written["challenge"] = write_record(job.out_dir, result)
    return written


def _challenge(job: BenchJob, settings: Any) -> tuple[Any, Any] | None:
    """(the benchmark's task, the ChallengeSettings) of a job with challenge templates, checked (templates
    fill every question, the adapter holds a conversation); None without templates."""
    from mmrobust.errors import ConfigError
    from mmrobust.eval.challenge import ChallengeSettings, plan_challenge
    from mmrobust.eval.mllm.benchmark import benchmark_task
    from mmrobust.models.mllm import takes_history
    from mmrobust.registry import MLLM_ADAPTERS
    from mmrobust.values import option_slots, typed_options

    ch = job.challenge
    if ch is not None and not isinstance(ch, (ChallengeSettings, dict)):
        raise ConfigError(f"challenge must be a ChallengeSettings or a dict of its fields, got {type(ch).__name__}")
    if ch is not None and not isinstance(ch, ChallengeSettings):
        ch = ChallengeSettings(**typed_options("challenge", option_slots(ChallengeSettings), ch))
    if ch is None or not ch.templates:
        return None
    if not takes_history(MLLM_ADAPTERS.get(job.adapter)):
        raise ConfigError(f"adapter {job.adapter!r} cannot hold a conversation (multi_turn); challenge with hf, "
                          "openai or scripted")
    task = benchmark_task(job.benchmark, job.data, settings)
    plan_challenge(task, ch)
    return task, ch
