"""Open-ended VQA (VQAv2 style) on the shared MLLM harness: free-form answers, VQAv2 soft accuracy.

Data: a JSONL file, one question a line::

    {"id": "q1", "image": "imgs/1.png", "question": "What colour is the bus?",
     "answers": ["red", "red", "dark red", ...], "group": "colour"}

``answers`` holds the human answers (VQAv2 has ten); a single ``"answer"`` string is accepted too. Images are
relative to the file's folder (absolute or climbing paths are refused unless ``allow_outside``); ``group``
(or ``category``) is optional. The prompt is LLaVA-1.5's: the question, then
``"Answer the question using a single word or phrase."``.

Scoring (Antol et al. 2015; Goyal et al. 2017): every answer is normalized (:func:`normalize_answer`), then

- ``accuracy``: VQAv2 soft accuracy ``min(#humans who gave the answer / 3, 1)`` (the common closed form; the
  official script averages it over the ten leave-one-human-out subsets, which differs slightly, e.g. 0.9 instead
  of 1.0 when exactly three of ten humans agree with the reply);
- ``exact_match``: the reply equals the most common human answer (ties: the first given).

Parsers (the registered names, read for free-form replies): ``official`` takes the whole reply (newlines and tabs
as spaces, as the official evaluation does); ``strict`` refuses a reply of more than one line; ``lenient`` drops
markdown, keeps the first non-empty line and strips an ``Answer:`` / ``The answer is`` prefix. An empty reply
is unparseable and scores 0.

Example::

    record = run_evaluation("vqa", model=adapter, data="vqa/questions.jsonl", settings={"n_boot": 1000},
                            out_dir="runs/vqa")
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from mmrobust.data.manifest import read_jsonl_objects
from mmrobust.errors import DataError
from mmrobust.eval.contract import evaluation
from mmrobust.eval.mllm.harness import HarnessSettings, Progress, run_task
from mmrobust.eval.mllm.task import MLLMTask, Question, bootstrap_mean, group_seed
from mmrobust.reports.contract import Record, Table
from mmrobust.safety import resolve_inside

VQA_PROMPT = "{question}\nAnswer the question using a single word or phrase."

# --- answer normalization (the common subset of the official VQA evaluation's processPunctuation and
# processDigitArticle): lower case; punctuation removed (a comma between digits is dropped, "1,000" -> "1000";
# a period not between digits is dropped, "3.5" stays); number words zero..ten -> digits; articles a/an/the
# dropped; common contractions written without the apostrophe restored ("dont" -> "don't"). ---
_PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
_PERIOD_STRIP = re.compile(r"(?<!\d)\.(?!\d)")
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
            "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = {"a", "an", "the"}
_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldnt": "couldn't", "couldve": "could've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't", "hasnt": "hasn't",
    "havent": "haven't", "hes": "he's", "im": "i'm", "ive": "i've", "isnt": "isn't", "itd": "it'd",
    "itll": "it'll", "lets": "let's", "mightnt": "mightn't", "mustnt": "mustn't", "shes": "she's",
    "shouldnt": "shouldn't", "shouldve": "should've", "thats": "that's", "theres": "there's", "theyre": "they're",
    "theyve": "they've", "wasnt": "wasn't", "werent": "weren't", "whats": "what's", "wheres": "where's",
    "whos": "who's", "wont": "won't", "wouldnt": "wouldn't", "wouldve": "would've", "youre": "you're",
    "youve": "you've", "yall": "y'all",
}


def normalize_answer(text: str) -> str:
    """VQAv2-style answer normalization (see the comment above for the rules kept)."""
    s = " ".join(str(text).replace("\n", " ").replace("\t", " ").lower().split())
    keep_commas = _COMMA_STRIP.search(s) is not None
    for p in _PUNCT:  # as the official script: drop p next to a space (or in "1,000"), else make it a space
        s = s.replace(p, "") if (p + " " in s or " " + p in s or keep_commas) else s.replace(p, " ")
    s = _PERIOD_STRIP.sub("", s)
    words = [_CONTRACTIONS.get(w, _NUMBERS.get(w, w)) for w in s.split() if w not in _ARTICLES]
    return " ".join(words)


def soft_accuracy(pred: str | None, answers: Sequence[str]) -> float:
    """VQAv2 accuracy ``min(#answers equal to pred / 3, 1)`` after normalization; 0 for None."""
    if pred is None:
        return 0.0
    p = normalize_answer(pred)
    return min(sum(normalize_answer(a) == p for a in answers) / 3.0, 1.0)


def majority_answer(answers: Sequence[str]) -> str:
    """The most common human answer (as first written; counted after normalization, ties: the first)."""
    counts = Counter(normalize_answer(a) for a in answers)
    best = max(counts.values())
    return next(a for a in answers if counts[normalize_answer(a)] == best)


_MARKUP = re.compile(r"[*_`#>]+")
_PREFIX = re.compile(r"^\s*(?:the\s+)?(?:short\s+)?answer(?:\s+is)?\s*[:：\-]?\s*", re.I)


def extract_free_form(text: str, parser: str) -> str | None:
    """The answer text of a free-form reply under ``parser`` (official / strict / lenient); None: none."""
    s = text.strip()
    if parser == "strict" and "\n" in s:
        return None
    if parser == "lenient":
        lines = [x.strip() for x in _MARKUP.sub("", s).splitlines() if x.strip()]
        s = _PREFIX.sub("", lines[0]).rstrip(".").strip() if lines else ""
    s = " ".join(s.split())
    return s or None


# --- reading the JSONL (shared with the caption task) ---

def field_str(obj: Mapping[str, Any], key: str, where: str, *, allow_int: bool = False) -> str:
    """``obj[key]`` as a non-empty string (an int too when ``allow_int``); a one-line DataError otherwise."""
    v = obj.get(key)
    if allow_int and isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    if not isinstance(v, str) or not v.strip():
        raise DataError(f"{where}: field {key!r} must be a non-empty string, got {v!r:.60}")
    return v


def field_strings(obj: Mapping[str, Any], key: str, where: str, *, single: str | None = None) -> list[str]:
    """``obj[key]`` as a non-empty list of non-empty strings (or ``[obj[single]]`` when only that is given)."""
    if key not in obj and single is not None and single in obj:
        return [field_str(obj, single, where)]
    v = obj.get(key)
    if not isinstance(v, list) or not v or any(not isinstance(a, str) or not a.strip() for a in v):
        alt = f" (or {single!r}: a string)" if single else ""
        raise DataError(f"{where}: field {key!r}{alt} must be a non-empty list of non-empty strings, got {v!r:.60}")
    return list(v)


def item_basics(obj: Mapping[str, Any], where: str, root: Path, seen: set[str], *, allow_outside: bool
                ) -> tuple[str, str, str]:
    """(id, image path, group) of one line: unique id, image inside ``root``, group from group/category."""
    uid = field_str(obj, "id", where, allow_int=True)
    if uid in seen:
        raise DataError(f"{where}: duplicate id {uid!r}; ids must be unique in the file")
    seen.add(uid)
    image = resolve_inside(root, field_str(obj, "image", where), allow_outside=allow_outside,
                           what=f"{where}: image", option="allow_outside=True")
    group = obj.get("group", obj.get("category", "all"))
    if not isinstance(group, str) or not group.strip():
        raise DataError(f"{where}: 'group' / 'category' must be a non-empty string, got {group!r:.60}")
    return uid, str(image), group


@dataclass(frozen=True)
class VQAItem:
    id: str
    image: str
    question: str
    answers: tuple[str, ...]
    group: str = "all"


def load_vqa(path: str | Path, *, allow_outside: bool = False) -> list[VQAItem]:
    """The questions of a VQA JSONL file (see the module docstring), checked line by line."""
    root, seen, items = Path(path).resolve().parent, set(), []
    for where, _, obj in read_jsonl_objects(path, "question file"):
        uid, image, group = item_basics(obj, where, root, seen, allow_outside=allow_outside)
        items.append(VQAItem(uid, image, field_str(obj, "question", where),
                             tuple(field_strings(obj, "answers", where, single="answer")), group))
    if not items:
        raise DataError(f"{path}: no questions; write one JSON object per line")
    return items


# --- the task ---

def scored_groups(rows: list[dict[str, Any]], values: np.ndarray, *, keys: Sequence[str], n_boot: int, seed: int
                  ) -> dict[str, Any]:
    """Means (+ bootstrap CI) of per-row ``values`` (one column per key) overall and per group; error rows out."""
    ok = np.array([r["status"] != "error" for r in rows], dtype=bool)
    groups = np.array([str(r.get("group", "all")) for r in rows])

    def block(mask: np.ndarray, name: str) -> dict[str, Any]:
        m = mask & ok
        out: dict[str, Any] = {"n": int(m.sum()), "n_errors": int((mask & ~ok).sum()),
                               "n_unparseable": int(sum(rows[i]["status"] == "unparseable" for i in np.flatnonzero(m)))}
        for j, k in enumerate(keys):
            v = values[m, j]
            out[k] = float(v.mean()) if len(v) else None
            out[f"{k}_ci"] = bootstrap_mean(v, n_boot=n_boot, seed=group_seed(seed, f"{name}:{k}"))
        return out

    return {"overall": block(np.ones(len(rows), dtype=bool), "overall"),
            "per_group": {g: block(groups == g, f"group:{g}") for g in sorted(set(groups.tolist()))},
            "bootstrap": {"n_boot": n_boot, "seed": seed, "method": "percentile, resampling items"}}


class VQATask(MLLMTask):
    """Open-ended questions, free-form replies; VQAv2 soft accuracy and exact match, overall and per group."""

    name = "vqa"
    metric_keys = ("accuracy", "exact_match")

    def __init__(self, items: Sequence[VQAItem] = ()) -> None:
        self.items = list(items)

    def questions(self) -> list[Question]:
        return [Question(uid=i.id, image=i.image, prompt=VQA_PROMPT.format(question=i.question),
                         ground_truth=normalize_answer(majority_answer(i.answers)), group=i.group,
                         columns={"id": i.id, "question": i.question, "answers": list(i.answers)},
                         meta={"id": i.id}) for i in self.items]

    def references(self, q: Question) -> list[str]:
        """What an untargeted attack pushes away from: the most common human answer."""
        return [majority_answer(q.columns["answers"])]

    def parse(self, response: str, row: Mapping[str, Any], parser: str) -> str | None:
        text = extract_free_form(response, parser)
        return normalize_answer(text) if text is not None else None

    def sample_scores(self, rows: list[dict[str, Any]]) -> np.ndarray:
        """(N, 2): soft accuracy and exact match of every parsed row (0 for unparseable and error rows)."""
        return np.array([[soft_accuracy(r["pred"], r["answers"]), float(r["status"] == "correct")]
                         for r in rows], dtype=float).reshape(len(rows), 2)

    def score(self, rows: list[dict[str, Any]], *, n_boot: int, seed: int) -> dict[str, Any]:
        values = self.sample_scores(rows)
        for r, v in zip(rows, values):
            r["vqa_accuracy"] = float(v[0])
        return scored_groups(rows, values, keys=self.metric_keys, n_boot=n_boot, seed=seed)

    def summary(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return {k: metrics["overall"][k] for k in (*self.metric_keys, "n", "n_unparseable")}

    def tables(self, metrics: dict[str, Any]) -> list[Table]:
        rows = [{"group": g, **m} for g, m in [*metrics["per_group"].items(), ("all (micro)", metrics["overall"])]]
        return [Table.of(f"{self.name}: accuracy per group",
                         [("group", "group"), ("accuracy", "VQA accuracy", "%"), ("exact_match", "exact match", "%"),
                          ("n", "questions", "count"), ("n_unparseable", "unparseable answers", "count"),
                          ("n_errors", "errors", "count")], rows,
                         "VQAv2 soft accuracy min(#humans who gave the reply / 3, 1) and exact match with the most "
                         f"common human answer, after VQA answer normalization (parser: {metrics.get('parser')}); "
                         "unparseable replies score 0, questions with an error are left out.")]

    def provenance(self) -> dict[str, Any]:
        return {"n_questions": len(self.items)}


@dataclass(frozen=True)
class VQASettings(HarnessSettings):
    """The harness settings, plus ``allow_outside``: accept image paths outside the question file's folder."""

    allow_outside: bool = False


def vqa_task(data: str | Path, settings: VQASettings) -> VQATask:
    """The VQA task ``evaluate_vqa`` asks: the questions of the JSONL file ``data``."""
    return VQATask(load_vqa(data, allow_outside=settings.allow_outside))


@evaluation("vqa", settings=VQASettings)
def evaluate_vqa(model: Any, data: str | Path, settings: VQASettings, *, out_dir: str | Path,
                 progress: Progress | None = None, config: dict | None = None) -> Record:
    """Open-ended VQA (VQAv2 soft accuracy) of ``model`` (an MLLM adapter) on the JSONL file ``data``."""
    task = vqa_task(data, settings)
    record = run_task(task, model, out_dir=out_dir, settings=settings.harness(), progress=progress,
                      config={"data": str(data), "prompt_template": VQA_PROMPT, **(config or {})})
    record.config["settings"] = asdict(settings)
    return record
