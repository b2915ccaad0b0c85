"""MMR: paired straightforward / leading questions for multimodal LLMs (Liu et al. 2024,
"Seeing Clearly, Answering Incorrectly"), with RA and MR per category, level and pooled; one task
on the shared MLLM harness (``mmrobust.eval.mllm``).

Typical use::

    from mmrobust.eval.mmr import load_mmr, run_mmr, RunSettings
    from mmrobust.models.mllm import build_adapter

    data = load_mmr("path/to/MMR-benchmark.json")
    model = build_adapter("openai", model="Qwen/Qwen2-VL-7B-Instruct", base_url="http://127.0.0.1:8000/v1")
    record = run_mmr(data, model, out_dir="runs/mmr-qwen", settings=RunSettings(parser="official"))

Pairing is by id by default; ``RunSettings(pairing="reference")`` pairs rows by file position as
the leaderboard's scorer does (``reference``), with every correction listed in the results.
"""
from mmrobust.eval.mllm.cache import ResponseCache, cache_key
from mmrobust.eval.mllm.options import ParsedOptions, parse_options
from mmrobust.eval.mllm.parsing import get_parser, parse_lenient, parse_official, parse_strict
from mmrobust.eval.mmr.dataset import CATEGORIES, LEVELS, MMRDataset, MMRItem, load_mmr
from mmrobust.eval.mmr.hub import VERSIONS, load_hub_version
from mmrobust.eval.mmr.pairing import PAIRING_MODES, Pair, check_pairing, pair_by_id
from mmrobust.eval.mmr.prompts import PROMPTS, build_prompt, get_prompt
from mmrobust.eval.mmr.reference import KNOWN_FILES, PositionPairs, known_file, pair_by_position
from mmrobust.eval.mmr.report import format_table, mmr_tables, plot_categories
from mmrobust.eval.mmr.scoring import compute_metrics, parse_records
from mmrobust.eval.mmr.task import (
    MMRTask, RunSettings, evaluate_mmr, load_response_rows, mmr_task, read_response_file, run_mmr, score_responses,
)

__all__ = [
    "CATEGORIES", "KNOWN_FILES", "LEVELS", "PAIRING_MODES", "PROMPTS", "VERSIONS", "MMRDataset", "MMRItem", "MMRTask",
    "Pair", "ParsedOptions", "PositionPairs", "ResponseCache", "RunSettings", "build_prompt", "cache_key",
    "check_pairing", "compute_metrics", "evaluate_mmr", "format_table", "get_parser", "get_prompt", "known_file",
    "load_hub_version", "load_mmr", "load_response_rows", "mmr_tables", "mmr_task", "pair_by_id", "pair_by_position",
    "parse_lenient", "parse_official", "parse_options", "parse_records", "parse_strict", "plot_categories",
    "read_response_file", "run_mmr", "score_responses",
]
