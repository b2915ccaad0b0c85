"""MMR as one task on the shared MLLM harness (Liu et al. 2024, "Seeing Clearly, Answering
Incorrectly"): its questions are the paired POS / leading NEG items of an :class:`MMRDataset`,
asked with a named prompt variant; its scorer is RA / MR per category, level and pooled
(``scoring.compute_metrics``); its report is the category table and chart.

``run_mmr`` asks every question once through the cache (an interrupted run resumes where it
stopped) and writes ``results_mmr.json`` + ``samples_mmr.jsonl`` + the chart; ``score_responses``
re-scores a saved per-sample file under any parser without calling a model. ``pairing`` picks how
questions pair up: ``"id"`` (default) or ``"reference"`` (by file position, the leaderboard's
denominator; see ``reference``); it is recorded in ``metrics["pairing"]`` and the config.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from mmrobust.errors import DataError
from mmrobust.eval.contract import evaluation
from mmrobust.eval.mllm.harness import HarnessSettings, Progress, check_run_settings, rescore, run_task
from mmrobust.eval.mllm.options import LETTERS, parse_options
from mmrobust.eval.mllm.task import MLLMTask, Question
from mmrobust.eval.mmr.dataset import MMRDataset, MMRItem
from mmrobust.eval.mmr.pairing import check_pairing
from mmrobust.eval.mmr.prompts import build_prompt, get_prompt
from mmrobust.eval.mmr.reference import known_file
from mmrobust.eval.mmr.report import CHART, mmr_tables, plot_categories
from mmrobust.eval.mmr.scoring import compute_metrics
from mmrobust.models.mllm.base import MLLM, GenerationParams
from mmrobust.registry import PARSERS
from mmrobust.reports.contract import Record, write_record
from mmrobust.reports.protocol import digest
from mmrobust.safety import ensure_regular_file, redact


@dataclass(frozen=True)
class RunSettings(HarnessSettings):
    """What an MMR run asks and how it scores: the harness settings (parser, decoding, bootstrap, cache
    file), the prompt variant, and ``pairing`` (``"id"``; ``"reference"``: every item asked in file
    order, paired by position)."""

    prompt: str = "official"
    pairing: str = "id"

    def __post_init__(self) -> None:
        super().__post_init__()
        get_prompt(self.prompt)
        check_pairing(self.pairing)


_ASKED = {"id": MMRDataset.paired_items, "reference": MMRDataset.file_order_items}  # pairing -> items asked


class MMRTask(MLLMTask):
    """Paired POS / leading NEG questions; RA and MR. ``dataset`` None: re-scoring saved rows only.
    ``pairing="reference"`` asks every item in file order and pairs rows by position."""

    name = "mmr"

    def __init__(self, dataset: MMRDataset | None = None, *, prompt: str = "official", pairing: str = "id") -> None:
        self.dataset = dataset
        self.variant = get_prompt(prompt)
        self.pairing = check_pairing(pairing)

    def questions(self) -> list[Question]:
        if self.dataset is None:
            raise DataError("this MMR task has no dataset to ask; load one with load_mmr or load_hub_version")
        return [self._question(i) for i in _ASKED[self.pairing](self.dataset)]

    def _question(self, i: MMRItem) -> Question:
        columns = {"id": i.id, "question_type": i.question_type, "category": i.category, "level": i.level,
                   "prompt_variant": self.variant.name, **({"index": i.index} if self.pairing == "reference" else {})}
        return Question(uid=i.uid, image=i.image, prompt=build_prompt(i, self.variant), ground_truth=i.ground_truth,
                        options=dict(i.options), group=i.category, columns=columns,
                        meta={"id": i.id, "question_type": i.question_type})

    def score(self, rows: list[dict[str, Any]], *, n_boot: int, seed: int) -> dict[str, Any]:
        return compute_metrics(rows, n_boot=n_boot, seed=seed, pairing=self.pairing)

    def summary(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return {k: metrics["overall"][k] for k in ("ra", "mr", "n_pairs", "n_unparseable")}

    def tables(self, metrics: dict[str, Any]) -> list:
        return mmr_tables(metrics)

    def plots(self, metrics: dict[str, Any], out_dir: Path) -> list[str]:
        chart = plot_categories(metrics, out_dir / CHART)
        return [chart.name] if chart else []

    def provenance(self) -> dict[str, Any]:
        if self.dataset is None:
            return {}
        d = self.dataset
        return {"dataset": d.source, "anomalies": list(d.anomalies), "quirks": d.quirks,
                "questions_file": known_file(d.source.get("questions_sha256"))}


def mmr_task(data: MMRDataset, settings: RunSettings) -> MMRTask:
    """The MMR task ``evaluate_mmr`` asks of ``data`` under ``settings`` (prompt variant, pairing)."""
    return MMRTask(data, prompt=settings.prompt, pairing=settings.pairing)


@evaluation("mmr", settings=RunSettings)
def evaluate_mmr(model: MLLM, data: MMRDataset, settings: RunSettings, *, out_dir: str | Path,
                 progress: Progress | None = None, config: dict | None = None) -> Record:
    """MMR's record for ``model`` (an MLLM adapter) on ``data``; answers cached under ``out_dir``."""
    task = mmr_task(data, settings)
    cfg = {"prompt_template": task.variant.template, **(config or {})}
    record = run_task(task, model, out_dir=out_dir, settings=settings.harness(), progress=progress, config=cfg)
    record.config["settings"] = asdict(settings)
    record.config["pairing"] = settings.pairing
    record.protocol.update({"prompt": task.variant.name, "prompt_template": task.variant.template,
                            "prompt_template_sha": digest(task.variant.template),
                            "normalize_options": task.variant.normalize_options, "pairing": settings.pairing})
    return record


def run_mmr(dataset: MMRDataset, adapter: MLLM, *, out_dir: str | Path, settings: RunSettings = RunSettings(),
            cache_path: str | Path | None = None, progress: Progress | None = None, config: dict | None = None
            ) -> dict[str, Any]:
    """Ask, score under ``settings.parser`` (plus a summary under every parser), write the record.

    Returns the results record written to ``out_dir/results_mmr.json``.
    """
    if cache_path is not None:
        settings = replace(settings, cache=str(cache_path))
    record = evaluate_mmr(adapter, dataset, settings, out_dir=out_dir, progress=progress, config=config)
    return write_record(out_dir, record)


def score_responses(path: str | Path, *, out_dir: str | Path, parser: str = "official", n_boot: int = 1000,
                    seed: int = 0, pairing: str = "id") -> dict[str, Any]:
    """Re-score a saved response file offline under ``parser``; writes a fresh record to ``out_dir``.
    Rows the file cannot support (ground truth outside A-D...) are left out and listed in ``anomalies``.
    ``pairing="reference"`` pairs the remaining rows by their order in the file."""
    PARSERS.get(parser)
    check_run_settings(params=GenerationParams(), n_boot=n_boot, seed=seed)
    task = MMRTask(pairing=pairing)
    rows, anomalies = read_response_file(path)
    record = rescore(task, rows, out_dir=out_dir, parser=parser, n_boot=n_boot, seed=seed,
                     config={"rescored_from": str(path), "parser": parser, "pairing": pairing})
    record.extra["anomalies"] = anomalies
    record.protocol["pairing"] = pairing
    record.extra["questions_file"] = {**known_file(None), "note": "re-scored from a response file; the question "
                                      "file it was asked from is not known here"}
    return write_record(out_dir, record)


def load_response_rows(path: str | Path) -> list[dict]:
    """Rows from a saved per-item file: ours (``samples_mmr.jsonl``) or the reference answer JSONL
    (``question_id``, ``text``, ``groundtruth``, ``question_type``, ``prompt``); rows with an anomaly
    are left out (see :func:`read_response_file` for the list)."""
    return read_response_file(path)[0]


def read_response_file(path: str | Path) -> tuple[list[dict], list[dict]]:
    """(rows, anomalies) of a saved per-item file. A line that is not a JSON object, or lacks
    id / ground truth / question type, is a one-line DataError naming the file and line; a ground
    truth outside A-D or a question type other than POS/NEG is an anomaly and the row is left out."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"response file {p} not found; pass the samples_mmr.jsonl of a run")
    try:
        text = ensure_regular_file(p, "response file").read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"response file {p} is not UTF-8 text ({e.reason} at byte {e.start}); pass a JSONL "
                        "file") from None
    rows, anomalies = [], []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as e:
            raise DataError(f"{p}:{n} is not JSON ({type(e).__name__}: {e}); fix or drop that line") from None
        if not isinstance(raw, dict):
            raise DataError(f"{p}:{n} is a JSON {type(raw).__name__}, not an object; is this an MMR response file?")
        row, problem = _normalize_row(raw, p, n)
        if problem is not None:
            anomalies.append(problem)
        if row is not None:
            rows.append(row)
    return rows, anomalies


_TYPES = {"POS": "POS", "NEG": "NEG", "POSITIVE": "POS", "NEGATIVE": "NEG"}


def _normalize_row(raw: dict, path: Path, n: int) -> tuple[dict | None, dict | None]:
    """One saved row in our column names, or (None, anomaly) when it cannot be scored."""
    qid = raw.get("id", raw.get("question_id"))
    gt = raw.get("ground_truth", raw.get("groundtruth"))
    qtype = raw.get("question_type")
    if qid is None or gt is None or qtype is None:
        raise DataError(f"{path}:{n} lacks id/ground_truth/question_type; is this an MMR response file?")
    qid, letter = str(qid), str(gt).strip().strip("().").strip().upper()
    kind = _TYPES.get(str(qtype).strip().upper())
    if letter not in LETTERS:
        return None, _line_anomaly("bad_ground_truth", qid, path, n, f"ground truth {gt!r} is not A-D")
    if kind is None:
        return None, _line_anomaly("bad_question_type", qid, path, n, f"question_type {qtype!r} is not POS/NEG")
    level, _, rest = qid.partition("/")
    response, error = _response_of(raw)
    return {"uid": str(raw.get("uid", f"{qid}|{kind}")), "id": qid, "question_type": kind,
            "category": str(raw.get("category", f"{level}/{rest.split('/')[0]}" if rest else "unknown")),
            "level": str(raw.get("level", level if rest else "unknown")),
            "ground_truth": letter, "options": _options_of(raw), "response": response, "error": error}, None


def _line_anomaly(kind: str, qid: str, path: Path, n: int, detail: str) -> dict:
    return {"kind": kind, "id": qid, "line": n, "detail": f"{path}:{n}: {detail}; row left out"}


def _response_of(raw: dict) -> tuple[str | None, str | None]:
    """(reply text, error): a saved error stays an error; a reply that is not text is one too."""
    response = raw.get("response", raw.get("text"))
    if raw.get("error"):
        return (response if isinstance(response, str) else None), redact(str(raw["error"]))
    if response is None:
        return None, "no response"
    if not isinstance(response, str):
        return None, f"saved reply is a JSON {type(response).__name__}, not text"
    return response, None


def _options_of(raw: dict) -> dict[str, str]:
    """Lettered options from the row (ours) or parsed from its prompt (the reference format)."""
    options = raw.get("options")
    if isinstance(options, dict):
        return {str(k): str(v) for k, v in options.items()}
    if isinstance(raw.get("prompt"), str):
        return parse_options(raw["prompt"].split("\nAnswer with")[0]).as_dict()
    return {}
