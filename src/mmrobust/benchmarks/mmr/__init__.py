"""MMR: paired straightforward / leading questions for multimodal LLMs (Liu et al. 2024,
"Seeing Clearly, Answering Incorrectly"), with RA and MR per category, level and pooled.

Typical use::

    from mmrobust.benchmarks.mmr import load_mmr, run_mmr, RunSettings
    from mmrobust.registry import MLLM_ADAPTERS

    data = load_mmr("path/to/MMR-benchmark.json")
    model = MLLM_ADAPTERS.create("openai", model="Qwen/Qwen2-VL-7B-Instruct", base_url="http://127.0.0.1:8000/v1")
    record = run_mmr(data, model, out_dir="runs/mmr-qwen", settings=RunSettings(parser="official"))
"""
from mmrobust.benchmarks.mmr.cache import ResponseCache, cache_key
from mmrobust.benchmarks.mmr.dataset import CATEGORIES, LEVELS, MMRDataset, MMRItem, load_mmr
from mmrobust.benchmarks.mmr.hub import VERSIONS, load_hub_version
from mmrobust.benchmarks.mmr.options import ParsedOptions, parse_options
from mmrobust.benchmarks.mmr.pairing import Pair, pair_by_id
from mmrobust.benchmarks.mmr.parsing import get_parser, parse_lenient, parse_official, parse_strict
from mmrobust.benchmarks.mmr.prompts import PROMPTS, build_prompt, get_prompt
from mmrobust.benchmarks.mmr.report import format_table, plot_categories
from mmrobust.benchmarks.mmr.runner import (
    RunSettings, collect_responses, load_response_rows, run_mmr, score_and_write, score_responses,
)
from mmrobust.benchmarks.mmr.scoring import compute_metrics, parse_records
from mmrobust.benchmarks.mmr.synthetic import generate_mmr_world

__all__ = [
    "CATEGORIES", "LEVELS", "PROMPTS", "VERSIONS", "MMRDataset", "MMRItem", "Pair", "ParsedOptions",
    "ResponseCache", "RunSettings", "build_prompt", "cache_key", "collect_responses", "compute_metrics",
    "format_table", "generate_mmr_world", "get_parser", "get_prompt", "load_hub_version", "load_mmr",
    "load_response_rows", "pair_by_id", "parse_lenient", "parse_official", "parse_options", "parse_records",
    "parse_strict", "plot_categories", "run_mmr", "score_and_write", "score_responses",
]
