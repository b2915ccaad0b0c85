"""The shared MLLM evaluation harness: ask a task's questions through any adapter, cache every
answer the moment it arrives (an interrupted run resumes without repeating a call), parse replies
with a registered parser, score, and return one results record.

Errors are recorded per question and retried on the next run; they are never turned into answers.
A question whose image is not a readable regular file is an error row and is never sent. Errors
and replies are redacted (the adapter's ``secrets()`` plus anything shaped like a credential)
before they reach the cache or the rows. :func:`rescore` re-scores saved per-sample rows under
any parser without calling a model.
"""
from __future__ import annotations

from contextlib import closing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from mmrobust.errors import ConfigError, DataError
from mmrobust.eval.mllm.cache import ResponseCache, cache_key, file_sha256
from mmrobust.eval.mllm.task import MLLMTask, Question
from mmrobust.models.mllm.base import MLLM, GenerationParams, GenRequest, secrets_of, takes_history
from mmrobust.registry import PARSERS
from mmrobust.values import check_int, check_seed
from mmrobust.reports.contract import Record
from mmrobust.reports.protocol import decoding_protocol, digest
from mmrobust.reports.sanity import collect, empty_questions, many_unparseable, pairs_dropped
from mmrobust.safety import redact

Progress = Callable[[int, int], None]
STATUSES = ("correct", "wrong", "unparseable", "error")


@dataclass(frozen=True)
class HarnessSettings:
    """How a run asks and scores: answer parser, decoding, bootstrap, and the response cache file
    (default: ``cache.jsonl`` in the run directory)."""

    parser: str = "official"
    params: GenerationParams = field(default_factory=GenerationParams)
    n_boot: int = 1000
    seed: int = 0
    cache: str | None = None

    def __post_init__(self) -> None:
        check_run_settings(params=self.params, n_boot=self.n_boot, seed=self.seed)

    def harness(self) -> "HarnessSettings":
        """Just the harness part of a task's settings (a subclass adds its own fields)."""
        return HarnessSettings(**{f.name: getattr(self, f.name) for f in fields(HarnessSettings)})


def check_run_settings(*, params: Any, n_boot: Any, seed: Any) -> None:
    """One-line ConfigErrors for settings no run can use (shared by every task's settings)."""
    if not isinstance(params, GenerationParams):
        raise ConfigError(f"params must be a GenerationParams, got {type(params).__name__}")
    check_int("n_boot (--bootstrap)", n_boot, low=0, fix="0 turns confidence intervals off")
    check_seed("seed", seed)


def _image_sha(path: str) -> tuple[str | None, str | None]:
    """(sha256, None) for a readable regular file, else (None, why): never opens a pipe."""
    try:
        return file_sha256(path), None
    except DataError as e:
        return None, f"image not sent: {e}"
    except OSError as e:
        return None, f"image not sent: cannot read {path} ({e.strerror or e})"


def _keys(questions: Sequence[Question], model_id: dict, pdict: dict
          ) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """The cache key of every question, image hashes (once per file), and why unusable images fail."""
    shas: dict[str, str] = {}
    bad: dict[str, str] = {}  # image -> error
    keys = []
    for q in questions:
        if q.image not in shas and q.image not in bad:
            sha, problem = _image_sha(q.image)
            if sha is not None:
                shas[q.image] = sha
            else:
                bad[q.image] = problem or "image not sent"
        sha = shas.get(q.image, f"unreadable:{q.image}")
        keys.append(cache_key(model=model_id, prompt=q.prompt, params=pdict, image_sha256=sha, history=q.history))
    return keys, shas, bad


def collect_responses(questions: Sequence[Question], adapter: MLLM, *, cache: ResponseCache,
                      params: GenerationParams = GenerationParams(), progress: Progress | None = None
                      ) -> tuple[list[dict], dict[str, int]]:
    """One row per question with ``response`` or ``error``; plus call statistics. A question with a
    conversation ``history`` needs an adapter that sends it (``multi_turn``), else a one-line ConfigError."""
    if any(q.history for q in questions) and not takes_history(adapter):
        raise ConfigError(f"adapter {getattr(adapter, 'name', type(adapter).__name__)!r} does not send a "
                          "conversation history (multi_turn); use hf, openai or scripted for multi-turn questions")
    model_id, pdict = adapter.identity(), params.as_dict()
    keys, shas, bad = _keys(questions, model_id, pdict)
    errors = {k: bad[q.image] for q, k in zip(questions, keys) if q.image in bad}
    first: dict[str, int] = {}
    for i, k in enumerate(keys):
        if k not in cache and k not in errors:
            first.setdefault(k, i)  # identical requests share one call
    todo = sorted(first.values())
    reqs = [GenRequest(questions[i].uid, questions[i].prompt, questions[i].image, dict(questions[i].meta),
                       history=questions[i].history) for i in todo]
    secrets = secrets_of(adapter)
    with closing(adapter.generate(reqs, params)) as results:
        for done, (j, res) in enumerate(results, start=1):
            i, q = todo[j], questions[todo[j]]
            if res.ok and isinstance(res.text, str):  # cached on arrival: a kill loses only calls in flight
                cache.put(keys[i], {"model": model_id, "params": pdict, "prompt": q.prompt,
                                    **({"history": [list(t) for t in q.history]} if q.history else {}),
                                    "image_sha256": shas[q.image], "uid": q.uid, "response": redact(res.text, secrets),
                                    "attempts": res.attempts, "latency_s": round(res.latency_s, 4)})
            else:
                errors[keys[i]] = redact(res.error or f"reply is not text ({type(res.text).__name__})", secrets)
            if progress is not None:
                progress(done, len(todo))
    rows = [_row(q, k, cache, errors) for q, k in zip(questions, keys)]
    stats = {"n_requests": len(questions), "n_cached_before": sum(1 for k in keys if k in cache and k not in first),
             "n_new_calls": len(todo), "n_errors": sum(r["error"] is not None for r in rows)}
    return rows, stats


def _row(q: Question, key: str, cache: ResponseCache, errors: dict[str, str]) -> dict:
    hit = cache.get(key)
    return {"uid": q.uid, **q.columns, "ground_truth": q.ground_truth, "options": dict(q.options), "group": q.group,
            "image": q.image, "cache_key": key, "response": redact(hit["response"]) if hit else None,
            "error": None if hit else redact(errors.get(key, "not answered (interrupted?)"))}


def parse_rows(rows: Iterable[Mapping[str, Any]], parser: str, task: MLLMTask | None = None) -> list[dict]:
    """Copy of ``rows`` with ``pred`` and ``status`` (correct, wrong, unparseable, error) from ``parser``.

    A row needs ``ground_truth`` and either ``response`` (text) or ``error`` (non-empty string)."""
    task = task or MLLMTask()
    PARSERS.get(parser)
    out = []
    for row in rows:
        r = dict(row)
        if r.get("error") or not isinstance(r.get("response"), str):
            r["pred"], r["status"] = None, "error"
            r["error"] = redact(str(r.get("error") or "no response"))
        else:
            r["pred"] = task.parse(str(r["response"]), r, parser)
            r["status"] = ("unparseable" if r["pred"] is None
                           else "correct" if r["pred"] == r["ground_truth"] else "wrong")
        r["parser"] = parser
        out.append(r)
    return out


def score_rows(task: MLLMTask, rows: list[dict], *, parser: str, n_boot: int, seed: int
               ) -> tuple[list[dict], dict[str, Any]]:
    """Parse + score under ``parser``, with the task's headline numbers under every registered parser."""
    parsed = parse_rows(rows, parser, task)
    metrics = task.score(parsed, n_boot=n_boot, seed=seed)
    metrics["parser"] = parser
    metrics["by_parser"] = {name: task.summary(metrics if name == parser else
                                               task.score(parse_rows(rows, name, task), n_boot=0, seed=seed))
                            for name in PARSERS.list()}
    return parsed, metrics


def mllm_warnings(parsed: list[dict], metrics: Mapping[str, Any], parser: str) -> list[str]:
    """Sanity warnings of a scored MLLM run: no questions, many unparseable answers, pairs left out."""
    answered = [r for r in parsed if r.get("status") != "error"]
    overall = metrics.get("overall") if isinstance(metrics.get("overall"), dict) else {}
    return collect(empty_questions(len(parsed)),
                   many_unparseable(sum(r.get("status") == "unparseable" for r in answered), len(answered),
                                    parser=parser),
                   pairs_dropped(len(metrics.get("pairing_anomalies") or []), int(overall.get("n_pairs_error") or 0),
                                 int(overall.get("n_pairs") or 0)))


def build_record(task: MLLMTask, rows: list[dict], *, out_dir: str | Path, parser: str, n_boot: int, seed: int,
                 config: dict | None = None, extra: dict | None = None, protocol: dict | None = None) -> Record:
    """Score ``rows`` and assemble the task's record (tables and plots included; plots are written), with its
    sanity warnings and ``protocol`` plus the parser."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parsed, metrics = score_rows(task, rows, parser=parser, n_boot=n_boot, seed=seed)
    return Record(kind=task.name, metrics=metrics, samples=parsed, config=config or {}, seeds={"bootstrap": seed},
                  tables=task.tables(metrics), plots=task.plots(metrics, out), extra=extra or {},
                  warnings=mllm_warnings(parsed, metrics, parser),
                  protocol={**(protocol or {}), "parser": parser, "parser_sha": parser_sha(parser)})


def parser_sha(parser: str) -> str | None:
    """A hash of the registered answer parser's source code (None when the source is not available)."""
    import inspect

    try:
        return digest(inspect.getsource(PARSERS.get(parser)))
    except (OSError, TypeError):
        return None


def run_task(task: MLLMTask, adapter: MLLM, *, out_dir: str | Path, settings: HarnessSettings = HarnessSettings(),
             progress: Progress | None = None, config: dict | None = None) -> Record:
    """Ask every question of ``task`` (through the cache), score it, and return its record."""
    PARSERS.get(settings.parser)  # fail before any call if the parser name is wrong
    cache = ResponseCache(settings.cache or Path(out_dir) / "cache.jsonl")
    questions = task.questions()
    rows, stats = collect_responses(questions, adapter, cache=cache, params=settings.params, progress=progress)
    describe = getattr(adapter, "describe", adapter.identity)
    run_config = {"settings": asdict(settings), "model": describe(), "cache": str(cache.path), **(config or {})}
    extra = {**task.provenance(), "calls": {**stats, "cache_corrupt_lines": cache.n_corrupt_lines}}
    protocol = {"task": task.name, "prompts_sha": digest([q.prompt for q in questions]), "n_questions": len(questions),
                "decoding": decoding_protocol(**settings.params.as_dict()), "model": describe()}
    return build_record(task, rows, out_dir=out_dir, parser=settings.parser, n_boot=settings.n_boot,
                        seed=settings.seed, config=run_config, extra=extra, protocol=protocol)


def rescore(task: MLLMTask, rows: list[dict], *, out_dir: str | Path, parser: str, n_boot: int = 1000,
            seed: int = 0, config: dict | None = None) -> Record:
    """The record of saved per-sample rows re-scored under ``parser`` (no model calls)."""
    return build_record(task, rows, out_dir=out_dir, parser=parser, n_boot=n_boot, seed=seed, config=config)
