"""MMR-style paired training data written by an LLM from captions, as the MMR authors did with GPT-4V
(Liu et al. 2024, "Seeing Clearly, Answering Incorrectly", Sec. 4).

Input: a JSONL of ``{"image": "rel/path.png", "caption": "..."}`` lines (images relative to its folder).
For each line the writer model (any MLLM adapter; an OpenAI-compatible endpoint for GPT-4V-class models)
sees the image and the caption and replies with one JSON object: a straightforward multiple-choice
question, a leading twin whose premise is false, and their options, the right one first (see
:data:`WRITER_PROMPT`). Every prompt and reply goes through the harness's append-only response cache
(:class:`mmrobust.eval.mllm.cache.ResponseCache`), so a rerun with the same cache makes no call: the same
data comes back offline. Replies are hostile input: one that is not such an object (missing fields, not
four distinct options, a newline inside an option, text longer than :data:`MAX_CHARS`) is skipped and
listed in the result with the reason, never guessed at.

Output rows are in the instruction JSONL format (:mod:`mmrobust.data.instructions`), like
:func:`mmrobust.world.mmr_train.facts_to_pairs`: ids ``train/llm/NNNNNN/pos|neg`` (never a benchmark id),
right letters balanced with a seed, ``meta.source = "llm"`` and the writer's identity.

Example::

    writer = build_adapter("openai", model="gpt-4o", options={"base_url": "https://api.openai.com/v1"})
    result = write_pairs_with_llm("captions.jsonl", writer, cache="runs/writer_cache.jsonl", seed=0)
    write_instructions("train_llm.jsonl", result.rows)   # next to captions.jsonl
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmrobust.data.manifest import read_jsonl_objects
from mmrobust.errors import DataError
from mmrobust.eval.mllm.cache import ResponseCache
from mmrobust.eval.mllm.harness import collect_responses
from mmrobust.eval.mllm.task import Question
from mmrobust.models.mllm.base import MLLM, GenerationParams
from mmrobust.safety import ensure_regular_file, resolve_inside
from mmrobust.values import SEED_MAX, check_int
from mmrobust.world.mmr import QA
from mmrobust.world.mmr_train import balanced_letters
from mmrobust.world.vqa_mix import lettered

MAX_CHARS = 300  # longest question or option kept from a reply
WRITER_PROMPT = (
    "You write test questions about this image. Its caption: \"{caption}\"\n"
    "Write (1) a straightforward multiple-choice question about something visible, with four short options, "
    "the right one first; (2) a leading twin of it whose stem assumes something false about the image, with "
    "four options, the first one rejecting the false assumption and stating what the image shows.\n"
    "Reply with one JSON object and nothing else: {{\"question\": str, \"options\": [4 str], "
    "\"leading_question\": str, \"leading_options\": [4 str], \"premise\": str}}."
)
FIELDS = ("question", "options", "leading_question", "leading_options", "premise")


@dataclass
class LLMPairs:
    """The rows written, the lines skipped (with why), and the writer's call statistics."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)


def _captions(path: Path, allow_outside: bool) -> list[tuple[str, str, Path]]:
    """(image as written, caption, resolved image) per line of the captions JSONL."""
    out = []
    for where, _, obj in read_jsonl_objects(path, "captions file"):
        image, caption = obj.get("image"), obj.get("caption")
        if not isinstance(image, str) or not image.strip() or not isinstance(caption, str) or not caption.strip():
            raise DataError(f"{where}: expected non-empty 'image' and 'caption' strings; write "
                            '{"image": "img.png", "caption": "a red circle"}')
        full = resolve_inside(path.parent, image, allow_outside=allow_outside, what=f"{where}: image")
        out.append((image, " ".join(caption.split())[:MAX_CHARS], ensure_regular_file(full, f"{where}: image")))
    if not out:
        raise DataError(f"{path}: no caption lines; write one {{\"image\": ..., \"caption\": ...}} object per line")
    return out


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() and "\n" not in value.strip() \
        and len(value.strip()) <= MAX_CHARS else None


def parse_writer_reply(text: str) -> tuple[dict[str, Any] | None, str]:
    """The reply's question object (fields checked), or (None, why it was refused)."""
    match = re.search(r"\{.*\}", text or "", re.S)
    if match is None:
        return None, "no JSON object in the reply"
    try:
        obj = json.loads(match.group(0))
    except (ValueError, RecursionError):
        return None, "the reply's JSON object does not parse"
    if not isinstance(obj, dict) or any(k not in obj for k in FIELDS):
        return None, f"the reply lacks one of {', '.join(FIELDS)}"
    out: dict[str, Any] = {}
    for key in ("question", "leading_question", "premise"):
        out[key] = _text(obj[key])
        if out[key] is None:
            return None, f"{key!r} is not a one-line string of at most {MAX_CHARS} characters"
    for key in ("options", "leading_options"):
        opts = obj[key]
        texts = [_text(o) for o in opts] if isinstance(opts, list) else []
        if len(texts) != 4 or None in texts or len(set(texts)) != 4:
            return None, f"{key!r} is not four distinct one-line strings"
        out[key] = texts
    return out, ""


def write_pairs_with_llm(captions: str | Path, writer: MLLM, *, cache: str | Path, seed: int = 0,
                         params: GenerationParams = GenerationParams(max_new_tokens=400),
                         allow_outside: bool = False) -> LLMPairs:
    """Ask ``writer`` for a question pair per caption line (cached); rows as in the module docstring."""
    check_int("seed", seed, low=0, high=SEED_MAX)
    path = ensure_regular_file(captions, "captions file")
    lines = _captions(path, allow_outside)
    asked = [Question(uid=f"llm/{n:06d}", image=str(full), prompt=WRITER_PROMPT.format(caption=caption),
                      ground_truth="") for n, (_, caption, full) in enumerate(lines, start=1)]
    replies, calls = collect_responses(asked, writer, cache=ResponseCache(cache), params=params)
    result = LLMPairs(calls=calls)
    good = []
    for (image, _, _), q, reply in zip(lines, asked, replies):
        obj, why = parse_writer_reply(reply["response"]) if reply["response"] is not None else (None, reply["error"])
        if obj is None:
            result.skipped.append({"uid": q.uid, "image": image, "why": str(why)})
        else:
            good.append((q.uid, image, obj))
    result.rows = _rows(good, seed, writer.identity())
    return result


def _rows(good: list[tuple[str, str, dict[str, Any]]], seed: int, writer: dict[str, Any]) -> list[dict[str, Any]]:
    """POS + NEG instruction rows with balanced, seeded right letters (answer ``"X. text"``)."""
    rng_pos, rng_neg = (np.random.default_rng(s) for s in np.random.SeedSequence([seed, 0x6C6C6D70]).spawn(2))
    letters = {"POS": balanced_letters(len(good), rng_pos), "NEG": balanced_letters(len(good), rng_neg)}
    rows = []
    for k, (uid, image, obj) in enumerate(good):
        pid = f"train/{uid}"
        for qtype, stem, opts, rng in (("POS", obj["question"], obj["options"], rng_pos),
                                       ("NEG", obj["leading_question"], obj["leading_options"], rng_neg)):
            letter = letters[qtype][k]
            text, options = lettered(QA(stem, tuple(opts)), letter, rng, suffix="")
            meta = {"pair": pid, "question_type": qtype, "letter": letter, "options": options, "source": "llm",
                    "writer": writer, **({"premise": obj["premise"]} if qtype == "NEG" else {})}
            rows.append({"id": f"{pid}/{qtype.lower()}", "image": image, "question": text,
                         "answer": f"{letter}. {options[letter]}", "meta": meta})
    return rows


@dataclass(frozen=True)
class PairsJob:
    """What ``mmrobust mmr make-train`` writes: MMR-style paired training data from one source.

    ``images`` > 0: fresh world scenes into the folder ``out``; ``facts``: a facts JSONL
    (:func:`mmrobust.world.mmr_train.facts_to_pairs`); ``captions``: a captions JSONL written up by the
    ``writer`` adapter (this module). With ``facts`` or ``captions``, ``out`` is the JSONL to write, in the
    input's folder (image paths stay relative to it) and not an existing file."""

    out: str
    images: int = 0
    facts: str | None = None
    captions: str | None = None
    leading_share: float = 1.0
    seed: int = 0
    answer_format: str = "letter+text"
    writer: str = "openai"
    writer_model: str = ""
    writer_options: dict[str, Any] = field(default_factory=dict)
    cache: str | None = None
    allow_outside: bool = False  # image paths in the facts / captions file may leave its folder
    overwrite: bool = False  # with images: replace an earlier set in out (only one whose mmr_train.json is ours)


def run_pairs_job(job: PairsJob) -> dict[str, Any]:
    """Write the job's rows; returns {"path", "n_rows", and for captions "skipped" and "calls"}."""
    from mmrobust.data.instructions import write_instructions
    from mmrobust.world.mmr_train import facts_to_pairs, generate_mmr_training_set

    sources = [bool(job.images), job.facts is not None, job.captions is not None]
    if sum(sources) != 1:
        raise DataError("give exactly one source: --images N (world scenes), --facts FILE or --captions FILE")
    if job.images:
        path = generate_mmr_training_set(job.out, n_images=job.images, seed=job.seed, leading_share=job.leading_share,
                                         answer_format=job.answer_format, overwrite=job.overwrite)
        return {"path": str(path), "n_rows": sum(1 for _ in path.open(encoding="utf-8"))}
    source = Path(job.facts or job.captions or "")
    out = _output_file(Path(job.out), source)
    extra: dict[str, Any] = {}
    if job.facts is not None:
        rows = facts_to_pairs(source, seed=job.seed, leading_share=job.leading_share, allow_outside=job.allow_outside)
    else:
        from mmrobust.models.mllm import build_adapter

        if not job.writer_model:
            raise DataError("--captions needs a writer model: --writer-model NAME (and --adapter-arg base_url=...)")
        writer = build_adapter(job.writer, model=job.writer_model, options=job.writer_options)
        result = write_pairs_with_llm(source, writer, cache=job.cache or out.with_suffix(".writer_cache.jsonl"),
                                      seed=job.seed, allow_outside=job.allow_outside)
        rows, extra = result.rows, {"skipped": result.skipped, "calls": result.calls}
        if not rows:
            raise DataError(f"the writer gave no usable reply for {len(result.skipped)} captions (first: "
                            f"{result.skipped[0]['why'] if result.skipped else 'none'}); check the model and endpoint")
    return {"path": str(write_instructions(out, rows)), "n_rows": len(rows), **extra}


def _output_file(out: Path, source: Path) -> Path:
    """``out`` checked: a .jsonl file beside ``source`` (relative image paths) that does not exist yet."""
    if out.suffix != ".jsonl":
        raise DataError(f"--out {out} must name a .jsonl file (e.g. {source.parent / 'train_pairs.jsonl'})")
    if out.resolve().parent != source.resolve().parent:
        raise DataError(f"--out {out} must sit in {source.parent} (the image paths are relative to that folder); "
                        f"e.g. --out {source.parent / out.name}")
    if out.exists():
        raise DataError(f"--out {out} exists; choose a new file name (it is never overwritten)")
    return out
