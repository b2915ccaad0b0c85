"""Run MMR against an adapter (through the response cache), then score and write the report.

``run_mmr`` asks every question of every valid pair once: answers already in the cache are reused
(so an interrupted run resumes where it stopped), new answers are appended the moment they
arrive, errors are recorded per item and retried on the next run. ``score_responses`` re-scores a
saved per-item file under any parser without calling a model.
"""
from __future__ import annotations

import json
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from mmrobust.benchmarks.mmr.cache import ResponseCache, cache_key, file_sha256
from mmrobust.benchmarks.mmr.dataset import MMRDataset, MMRItem
from mmrobust.benchmarks.mmr.options import parse_options
from mmrobust.benchmarks.mmr.prompts import build_prompt, get_prompt
from mmrobust.benchmarks.mmr.report import write_mmr_report
from mmrobust.benchmarks.mmr.scoring import compute_metrics, parse_records
from mmrobust.errors import DataError
from mmrobust.models.mllm.base import MLLM, GenerationParams, GenRequest
from mmrobust.registry import PARSERS

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class RunSettings:
    """What a run asks and how it scores: prompt variant, parser, decoding, bootstrap."""

    prompt: str = "official"
    parser: str = "official"
    params: GenerationParams = field(default_factory=GenerationParams)
    n_boot: int = 1000
    seed: int = 0


def _requests(dataset: MMRDataset, prompt: str, model_id: dict, pdict: dict
              ) -> tuple[list[GenRequest], list[str], dict[str, str]]:
    """The request and cache key of every paired item (+ image hashes, computed once per file)."""
    variant = get_prompt(prompt)
    shas: dict[str, str] = {}
    reqs: list[GenRequest] = []
    keys: list[str] = []
    for item in dataset.paired_items():
        text = build_prompt(item, variant)
        sha = shas.setdefault(item.image, file_sha256(item.image))
        keys.append(cache_key(model=model_id, prompt=text, params=pdict, image_sha256=sha))
        reqs.append(GenRequest(item.uid, text, item.image, {"id": item.id, "question_type": item.question_type}))
    return reqs, keys, shas


def collect_responses(
    dataset: MMRDataset, adapter: MLLM, *, cache: ResponseCache, prompt: str = "official",
    params: GenerationParams = GenerationParams(), progress: Progress | None = None,
) -> tuple[list[dict], dict[str, int]]:
    """One row per paired item with ``response`` or ``error``; plus call statistics."""
    model_id, pdict = adapter.identity(), params.as_dict()
    reqs, keys, shas = _requests(dataset, prompt, model_id, pdict)
    first: dict[str, int] = {}
    for i, k in enumerate(keys):
        if k not in cache:
            first.setdefault(k, i)  # identical requests share one call
    todo = sorted(first.values())
    errors: dict[str, str] = {}
    with closing(adapter.generate([reqs[i] for i in todo], params)) as results:
        for done, (j, res) in enumerate(results, start=1):
            i = todo[j]
            if res.ok:  # cached the moment it arrives: a kill loses only the calls in flight
                cache.put(keys[i], {"model": model_id, "params": pdict, "prompt": reqs[i].prompt,
                                    "image_sha256": shas[reqs[i].image_path], "uid": reqs[i].uid,
                                    "response": res.text, "attempts": res.attempts,
                                    "latency_s": round(res.latency_s, 4)})
            else:
                errors[keys[i]] = res.error or "unknown error"
            if progress is not None:
                progress(done, len(todo))
    rows = [_row(item, key, cache, errors, prompt) for item, key in zip(dataset.paired_items(), keys)]
    stats = {"n_requests": len(reqs), "n_cached_before": sum(1 for k in keys if k not in first),
             "n_new_calls": len(todo), "n_errors": sum(r["error"] is not None for r in rows)}
    return rows, stats


def _row(item: MMRItem, key: str, cache: ResponseCache, errors: dict[str, str], prompt: str) -> dict:
    hit = cache.get(key)
    return {"uid": item.uid, "id": item.id, "question_type": item.question_type, "category": item.category,
            "level": item.level, "ground_truth": item.ground_truth, "options": dict(item.options),
            "image": item.image, "prompt_variant": prompt, "cache_key": key,
            "response": hit["response"] if hit else None,
            "error": None if hit else errors.get(key, "not answered (interrupted?)")}


def run_mmr(
    dataset: MMRDataset, adapter: MLLM, *, out_dir: str | Path, settings: RunSettings = RunSettings(),
    cache_path: str | Path | None = None, progress: Progress | None = None, config: dict | None = None,
) -> dict[str, Any]:
    """Ask, score under ``settings.parser`` (plus a summary under every parser), write the report.

    Returns the results record written to ``out_dir/results.json``.
    """
    out = Path(out_dir)
    PARSERS.get(settings.parser)  # fail before any call if the parser name is wrong
    cache = ResponseCache(cache_path or out / "cache.jsonl")
    rows, stats = collect_responses(dataset, adapter, cache=cache, prompt=settings.prompt,
                                    params=settings.params, progress=progress)
    describe = getattr(adapter, "describe", adapter.identity)
    run_config = {"settings": asdict(settings), "model": describe(), "cache": str(cache.path),
                  "prompt_template": get_prompt(settings.prompt).template, **(config or {})}
    extra = {"dataset": dataset.source, "anomalies": list(dataset.anomalies), "quirks": dataset.quirks,
             "calls": {**stats, "cache_corrupt_lines": cache.n_corrupt_lines}}
    return score_and_write(rows, out_dir=out, parser=settings.parser, n_boot=settings.n_boot,
                           seed=settings.seed, config=run_config, extra=extra)


def score_and_write(
    rows: list[dict], *, out_dir: str | Path, parser: str, n_boot: int, seed: int,
    config: dict | None = None, extra: dict | None = None,
) -> dict[str, Any]:
    """Parse + score ``rows`` (also summarised under every registered parser) and write the report."""
    parsed = parse_records(rows, parser)
    metrics = compute_metrics(parsed, n_boot=n_boot, seed=seed)
    metrics["parser"] = parser
    by_parser = {}
    for name in PARSERS.list():
        m = metrics if name == parser else compute_metrics(parse_records(rows, name), n_boot=0, seed=seed)
        by_parser[name] = {k: m["overall"][k] for k in ("ra", "mr", "n_pairs", "n_unparseable")}
    metrics["by_parser"] = by_parser
    return write_mmr_report(out_dir, rows=parsed, metrics=metrics, config=config or {},
                            extra=extra or {}, seeds={"bootstrap": seed})


def load_response_rows(path: str | Path) -> list[dict]:
    """Rows from a saved per-item file: ours (``responses.jsonl``) or the reference answer JSONL
    (``question_id``, ``text``, ``groundtruth``, ``question_type``, ``prompt``)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"response file {p} not found; pass the responses.jsonl of a run")
    rows = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{p}:{n} is not JSON ({e}); fix or drop that line") from e
        rows.append(_normalize_row(raw, p, n))
    return rows


def _normalize_row(raw: dict, path: Path, n: int) -> dict:
    qid = raw.get("id", raw.get("question_id"))
    gt = raw.get("ground_truth", raw.get("groundtruth"))
    qtype = raw.get("question_type")
    if qid is None or gt is None or qtype is None:
        raise DataError(f"{path}:{n} lacks id/ground_truth/question_type; is this an MMR response file?")
    level, _, rest = str(qid).partition("/")
    options = raw.get("options")
    if options is None and raw.get("prompt"):
        options = parse_options(str(raw["prompt"]).split("\nAnswer with")[0]).as_dict()
    response = raw.get("response", raw.get("text"))
    return {"uid": raw.get("uid", f"{qid}|{qtype}"), "id": str(qid), "question_type": str(qtype).strip().upper(),
            "category": raw.get("category", f"{level}/{rest.split('/')[0]}" if rest else "unknown"),
            "level": raw.get("level", level if rest else "unknown"),
            "ground_truth": str(gt).strip().strip("().").upper(), "options": options or {},
            "response": response, "error": raw.get("error") or (None if response is not None else "no response")}


def score_responses(
    path: str | Path, *, out_dir: str | Path, parser: str = "official", n_boot: int = 1000, seed: int = 0,
) -> dict[str, Any]:
    """Re-score a saved response file offline under ``parser``; writes a fresh report to ``out_dir``."""
    PARSERS.get(parser)
    rows = load_response_rows(path)
    return score_and_write(rows, out_dir=out_dir, parser=parser, n_boot=n_boot, seed=seed,
                           config={"rescored_from": str(path), "parser": parser})
