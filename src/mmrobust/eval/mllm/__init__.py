"""The shared harness for MLLM benchmarks: tasks (questions, prompt, scorer), the append-only
response cache with resume, registered answer parsers, bootstrap CIs and per-group tables.

A new benchmark is one :class:`MLLMTask` subclass; :func:`run_task` runs it through any adapter, and one
file in :mod:`mmrobust.eval.benchmarks` registering its loader with :func:`benchmark` makes it
`mmrobust bench run NAME`.
"""
from mmrobust.eval.mllm.benchmark import (
    Benchmark, benchmark, benchmark_settings, benchmark_task, evaluate_task, run_benchmark,
)
from mmrobust.eval.mllm.cache import ResponseCache, cache_key, file_sha256
from mmrobust.eval.mllm.harness import (
    HarnessSettings, build_record, collect_responses, parse_rows, rescore, run_task, score_rows,
)
from mmrobust.eval.mllm.task import MLLMTask, Question, bootstrap_mean

__all__ = ["Benchmark", "HarnessSettings", "MLLMTask", "Question", "ResponseCache", "benchmark", "benchmark_settings",
           "benchmark_task", "bootstrap_mean", "build_record", "cache_key", "collect_responses", "evaluate_task",
           "file_sha256", "parse_rows", "rescore", "run_benchmark", "run_task", "score_rows"]
