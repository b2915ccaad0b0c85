"""The shared harness for MLLM benchmarks: tasks (questions, prompt, scorer), the append-only
response cache with resume, registered answer parsers, bootstrap CIs and per-group tables.

A new benchmark is one :class:`MLLMTask` subclass; :func:`run_task` runs it through any adapter.
"""
from mmrobust.eval.mllm.cache import ResponseCache, cache_key, file_sha256
from mmrobust.eval.mllm.harness import (
    HarnessSettings, build_record, collect_responses, parse_rows, rescore, run_task, score_rows,
)
from mmrobust.eval.mllm.task import MLLMTask, Question, bootstrap_mean

__all__ = ["HarnessSettings", "MLLMTask", "Question", "ResponseCache", "bootstrap_mean", "build_record",
           "cache_key", "collect_responses", "file_sha256", "parse_rows", "rescore", "run_task", "score_rows"]
