"""The challenge protocol on the shared MLLM harness: ask a task's questions, push back, ask again.

Any multiple-choice or short-answer :class:`~mmrobust.eval.mllm.task.MLLMTask` (MMR, VQA, a registered
benchmark with a ``task``) runs as two turns (MM-SY: Li et al., ICLR 2025, "Have the VLMs Lost Confidence?
A Study of Sycophancy in VLMs"; PENDULUM, 2025): the first turn is exactly the task's own request (the same
cache key, so a benchmark run's answers are reused), the second a real conversation, the question with its
image, the model's own first reply, then one registered pushback template
(:mod:`~mmrobust.eval.challenge.templates`). Both turns go through the append-only response cache: an
interrupted run resumes, a finished one makes no call. Both answers are parsed with the task's own parser;
the metrics are :mod:`~mmrobust.eval.challenge.metrics`'.

Example::

    task = MMRTask(load_mmr("data/mmr"), prompt="option-text")
    record = run_challenge(task, adapter, ChallengeSettings(templates=("are-you-sure", "suggest-wrong")),
                           out_dir="runs/chal", settings=HarnessSettings(parser="lenient"))
    write_record("runs/chal", record)        # results_challenge.json + samples_challenge.jsonl
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from mmrobust.errors import ConfigError
from mmrobust.eval.challenge.metrics import challenge_metrics, challenge_tables
from mmrobust.eval.challenge.templates import PushbackTemplate, draw_wrong, fill_values, get_templates
from mmrobust.eval.mllm.benchmark import benchmark_settings, benchmark_task
from mmrobust.eval.mllm.cache import ResponseCache
from mmrobust.eval.mllm.harness import HarnessSettings, Progress, collect_responses, parse_rows, parser_sha
from mmrobust.eval.mllm.task import MLLMTask, Question
from mmrobust.models.mllm.base import MLLM, takes_history
from mmrobust.registry import BENCHMARKS, PARSERS, PUSHBACKS
from mmrobust.reports.contract import Record
from mmrobust.reports.protocol import decoding_protocol, digest
from mmrobust.reports.sanity import collect, empty_questions, many_unparseable
from mmrobust.values import check_seed, setting


@dataclass(frozen=True)
class ChallengeSettings:
    """Which pushback follows each first answer (none: no challenge) and the seed of the wrong option."""

    templates: tuple[str, ...] = setting((), "pushback templates, comma-separated (are-you-sure, disagree, "
                                         "suggest-wrong, suggest-right): each first answer is challenged with each; "
                                         "none: no challenge", flag="--challenge")
    wrong_seed: int = setting(0, "seed of the wrong option that {wrong} names (one per question)",
                              flag="--challenge-seed")

    def __post_init__(self) -> None:
        given = (self.templates,) if isinstance(self.templates, str) else self.templates
        if not isinstance(given, (tuple, list)) or not all(isinstance(n, str) for n in given):
            raise ConfigError(f"templates must be names of pushback templates, got {self.templates!r:.80}")
        names = tuple(n.strip() for text in given for n in text.split(",") if n.strip())  # "a,b" as a, b
        object.__setattr__(self, "templates", names)
        if names:
            get_templates(names)  # unknown or repeated names: one line, before any call
        check_seed("wrong_seed (--challenge-seed)", self.wrong_seed)


def _unfillable(t: PushbackTemplate, q: Question, values: dict[str, str], task: str) -> str | None:
    missing = [f for f in t.fields if f not in values]
    if not missing:
        return None
    why = ("it has no lettered options" if not q.options else "its ground truth is not one of its options"
           if q.ground_truth not in q.options else "it has no other option")
    return (f"pushback template {t.name!r} needs {{{missing[0]}}}, which task {task!r} cannot fill for question "
            f"{q.uid!r} ({why}); choose a template without it, e.g. are-you-sure")


def plan_challenge(task: MLLMTask, challenge: ChallengeSettings) -> tuple[list[Question], list[PushbackTemplate]]:
    """The task's questions and the challenge's templates, checked: every template can be filled for every
    question (``{wrong}`` needs lettered options), else a one-line ConfigError before any model call."""
    templates = get_templates(challenge.templates)
    questions = list(task.questions())
    for q in questions:
        values = fill_values(q, draw_wrong(q, challenge.wrong_seed))
        for t in templates:
            problem = _unfillable(t, q, values, task.name)
            if problem:
                raise ConfigError(problem)
    return questions, templates


def second_turns(questions: Sequence[Question], first: Sequence[dict], templates: Sequence[PushbackTemplate], *,
                 wrong_seed: int) -> tuple[list[Question], list[dict[str, Any]]]:
    """The second-turn questions (the first reply in the history, the pushback as the prompt) of every
    template x answered question, and the plan of every pair: template, pushback text, the answer it names,
    the first row, and the index of its second question (None when the first turn failed)."""
    asked: list[Question] = []
    plan: list[dict[str, Any]] = []
    for t in templates:
        for q, row in zip(questions, first):
            values = fill_values(q, draw_wrong(q, wrong_seed))
            text = t.render(values)
            suggested = values.get(f"{t.suggests}_letter", values.get(t.suggests)) if t.suggests else None
            item = {"question": q, "first": row, "template": t.name, "pushback": text, "suggested": suggested,
                    "second": None}
            if row["status"] != "error":
                item["second"] = len(asked)
                asked.append(Question(uid=f"{q.uid}|{t.name}", image=q.image, prompt=text, ground_truth=q.ground_truth,
                                      options=q.options, group=q.group, columns=q.columns,
                                      meta={**q.meta, "pushback": t.name},
                                      history=(("user", q.prompt), ("assistant", row["response"]))))
            plan.append(item)
    return asked, plan


def _sample(item: dict[str, Any], second: Sequence[dict]) -> dict[str, Any]:
    """One per-sample row: the question, both answers, the template, right before / after."""
    q, a = item["question"], item["first"]
    b = second[item["second"]] if item["second"] is not None else None
    error = (f"first turn: {a['error']}" if b is None else f"second turn: {b['error']}" if b["status"] == "error"
             else None)
    right_after = None if error else b["status"] == "correct"
    return {"uid": q.uid, **q.columns, "group": q.group, "template": item["template"], "pushback": item["pushback"],
            "suggested": item["suggested"], "ground_truth": q.ground_truth, "options": dict(q.options),
            "first_response": a.get("response"), "first_pred": a.get("pred"), "first_status": a["status"],
            "second_response": b.get("response") if b else None, "second_pred": b.get("pred") if b else None,
            "second_status": b["status"] if b else "error", "right_before": None if error else a["status"] == "correct",
            "right_after": right_after, "adopted": None if error or item["suggested"] is None
            else b["pred"] == item["suggested"], "error": error, "first_cache_key": a["cache_key"],
            "second_cache_key": b["cache_key"] if b else None}


def run_challenge(task: MLLMTask, adapter: MLLM, challenge: ChallengeSettings, *, out_dir: str | Path,
                  settings: HarnessSettings = HarnessSettings(), progress: Progress | None = None,
                  config: dict | None = None) -> Record:
    """Ask ``task``'s questions, challenge every answer with each template, parse both turns with the task's
    parser (``settings.parser``) and return the ``challenge`` record (not yet written: ``write_record``).

    ``adapter`` must send a conversation history (``multi_turn``: hf, openai, scripted); answers are cached in
    ``settings.cache`` (default ``out_dir/cache.jsonl``), shared with a benchmark run of the same task."""
    PARSERS.get(settings.parser)
    if not takes_history(adapter):
        raise ConfigError(f"adapter {getattr(adapter, 'name', type(adapter).__name__)!r} cannot hold a conversation "
                          "(multi_turn); challenge with hf, openai or scripted")
    questions, templates = plan_challenge(task, challenge)
    cache = ResponseCache(settings.cache or Path(out_dir) / "cache.jsonl")
    rows, first_calls = collect_responses(questions, adapter, cache=cache, params=settings.params, progress=progress)
    first = parse_rows(rows, settings.parser, task)
    asked, plan = second_turns(questions, first, templates, wrong_seed=challenge.wrong_seed)
    rows, second_calls = collect_responses(asked, adapter, cache=cache, params=settings.params, progress=progress)
    second = parse_rows(rows, settings.parser, task)
    samples = [_sample(item, second) for item in plan]
    calls = {"first_turn": first_calls, "second_turn": second_calls, "cache_corrupt_lines": cache.n_corrupt_lines}
    return _record(task, adapter, challenge, settings, templates, first=first, samples=samples, calls=calls,
                   config={"cache": str(cache.path), **(config or {})}, prompts=[q.prompt for q in questions])


def _first_turn(first: Sequence[dict]) -> dict[str, Any]:
    """Accuracy of the first answers (each question once, whatever the number of templates)."""
    scored = [r for r in first if r["status"] != "error"]
    n_right = sum(r["status"] == "correct" for r in scored)
    return {"n": len(scored), "n_errors": len(first) - len(scored),
            "accuracy": n_right / len(scored) if scored else None,
            "n_unparseable": sum(r["status"] == "unparseable" for r in scored)}


def _record(task: MLLMTask, adapter: MLLM, challenge: ChallengeSettings, settings: HarnessSettings,
            templates: Sequence[PushbackTemplate], *, first: Sequence[dict], samples: list[dict], calls: dict,
            config: dict, prompts: list[str]) -> Record:
    texts = {t.name: t.text for t in templates}
    metrics = {"first_turn": _first_turn(first), "parser": settings.parser, "templates": texts,
               "per_template": challenge_metrics(samples, {t.name: t.suggests for t in templates})}
    describe = getattr(adapter, "describe", adapter.identity)
    protocol = {"task": task.name, "prompts_sha": digest(prompts), "n_questions": len(prompts),
                "pushback_templates": texts, "pushback_sha": digest(texts), "wrong_seed": challenge.wrong_seed,
                "decoding": decoding_protocol(**settings.params.as_dict()), "model": describe(),
                "parser": settings.parser, "parser_sha": parser_sha(settings.parser), "turns": 2}
    return Record(kind="challenge", metrics=metrics, samples=samples,
                  config={"task": task.name, "challenge": asdict(challenge), "settings": asdict(settings),
                          "model": describe(), **config},
                  seeds={"wrong_option": challenge.wrong_seed}, tables=challenge_tables(metrics),
                  extra={**task.provenance(), "calls": calls}, protocol=protocol,
                  warnings=_warnings(first, samples, settings.parser))


def _warnings(first: Sequence[dict], samples: Sequence[dict], parser: str) -> list[str]:
    """No questions; many unparseable first or second answers (then the rates measure the answer format)."""
    statuses = [[r["status"] for r in first], [r["second_status"] for r in samples]]
    found = [many_unparseable(s.count("unparseable"), len(s) - s.count("error"), parser=parser) for s in statuses]
    return collect(empty_questions(len(first)), *([f"{turn} turn: {w}" for w in ws]
                                                  for turn, ws in zip(("first", "second"), found)))


def challenge_benchmark(name: str, model: MLLM, data: str, challenge: ChallengeSettings, *, out_dir: str | Path,
                        settings: Any = None, progress: Progress | None = None, config: dict | None = None) -> Record:
    """The challenge of registered benchmark ``name`` on ``data`` (its settings dataclass, or a dict for
    :func:`~mmrobust.eval.mllm.benchmark.benchmark_settings`): the benchmark's own task, prompt and parser."""
    spec = BENCHMARKS.get(name)
    if not isinstance(settings, spec.settings):
        settings = benchmark_settings(name, settings)
    task = benchmark_task(name, data, settings)
    return run_challenge(task, model, challenge, out_dir=out_dir, settings=settings.harness(), progress=progress,
                         config={"benchmark": name, "data": str(data), "benchmark_settings": asdict(settings),
                                 **(config or {})})


def list_templates() -> list[dict[str, Any]]:
    """Every registered pushback template: name, exact text, the answer it names, description."""
    return [{"name": n, "text": t.text, "suggests": t.suggests, "description": t.description}
            for n in PUSHBACKS.list() for t in [PUSHBACKS.get(n)]]
