"""The one JSONL format for MLLM instruction data (finetuning on image + dialogue).

One JSON object per line (blank lines are skipped; UTF-8, a BOM tolerated):

``id``
    unique non-empty string (the MMR training set uses ``train/...`` so it never meets a benchmark's
    ``level/category/NN`` ids).
``image``
    path of the image, relative to the folder that holds the JSONL file. Absolute paths and paths that
    climb out of that folder (``..``, symlinks) are refused unless ``allow_outside=True``; the image must
    be a regular file.
``conversations`` *or* ``question`` + ``answer``
    ``conversations`` is a list of ``{"role": "user" | "assistant", "content": str}`` turns that
    alternate, start with ``user`` and end with ``assistant``; ``question``/``answer`` (non-empty
    strings) is shorthand for one user turn and one assistant reply. Never both forms on one line.
``meta`` (optional)
    an object, carried through untouched (e.g. the scene attributes a generator used).

The image belongs to the first user turn and goes before its text (:func:`to_chat`), as in
``mmrobust.models.mllm.hf``. Every problem is a one-line :class:`DataError` naming ``file:line`` and
the fix. Example line::

    {"id": "train/000001/pos", "image": "images/000001.png",
     "question": "What shape is the red object?\\nA. ...", "answer": "B. It is a circle.", "meta": {}}
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from mmrobust.data.manifest import read_jsonl_objects, source_roots
from mmrobust.errors import DataError
from mmrobust.safety import ensure_regular_file, is_inside, resolve_inside

ROLES = ("user", "assistant")
KEYS = frozenset({"id", "image", "conversations", "question", "answer", "meta"})
# A turn past MAX_TURN_CHARS is thousands of tokens past any LLaVA context (4,096 tokens): a megabyte prompt
# would tokenize to 10^5 tokens and ask for tens of GB in the first forward pass, so it is refused on loading.
MAX_TURN_CHARS = 16_384
MAX_TURNS = 64


@dataclass(frozen=True)
class Turn:
    """One turn of a dialogue."""

    role: str
    content: str


@dataclass(frozen=True)
class Instruction:
    """One validated line: ``image`` as written (relative), ``image_path`` resolved against the file's folder."""

    id: str
    image: str
    conversations: tuple[Turn, ...]
    meta: Mapping[str, Any] = field(default_factory=dict)
    image_path: Path | None = None

    @property
    def question(self) -> str:
        """The first user turn."""
        return self.conversations[0].content

    @property
    def answer(self) -> str:
        """The last assistant turn."""
        return self.conversations[-1].content


def _text(rec: Mapping[str, Any], key: str, loc: str) -> str:
    value = rec.get(key)
    if not isinstance(value, str) or not value.strip():
        got = "missing" if key not in rec else f"got {type(value).__name__} {value!r}"[:80]
        raise DataError(f"{loc}: {key!r} must be a non-empty string ({got}); fill it in")
    if len(value) > MAX_TURN_CHARS:
        raise DataError(f"{loc}: {key!r} is {len(value):,} characters, more than the {MAX_TURN_CHARS:,} allowed; "
                        "shorten it or drop the line")
    return value


def _check_utf8(rec: Mapping[str, Any], loc: str) -> None:
    """Every string of the line must be text: a JSON escape such as \\udcff (a lone surrogate, what undecodable
    bytes become) cannot be tokenized or written back as UTF-8."""
    try:
        json.dumps(rec, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as e:
        bad = e.object[e.start:e.end].encode("unicode_escape").decode()
        raise DataError(f"{loc}: the line holds {bad}, which is not text (a lone surrogate, e.g. from bytes that "
                        "were not UTF-8); fix that character") from None


def _turns(value: Any, loc: str) -> tuple[Turn, ...]:
    fix = 'give alternating {"role": "user"|"assistant", "content": "..."} turns, user first, assistant last'
    if not isinstance(value, list) or not 2 <= len(value) <= MAX_TURNS:
        raise DataError(f"{loc}: 'conversations' must be a list of 2 to {MAX_TURNS} turns; {fix}")
    turns = []
    for k, t in enumerate(value):
        if not isinstance(t, dict) or set(t) != {"role", "content"}:
            raise DataError(f"{loc}: turn {k} must be an object with exactly 'role' and 'content'; {fix}")
        if t["role"] not in ROLES:
            raise DataError(f"{loc}: turn {k} has role {t['role']!r}; {fix}")
        if t["role"] != ROLES[k % 2]:
            raise DataError(f"{loc}: turn {k} is {t['role']!r} but {ROLES[k % 2]!r} was due; {fix}")
        turns.append(Turn(t["role"], _text(t, "content", f"{loc}: turn {k}")))
    if turns[-1].role != "assistant":
        raise DataError(f"{loc}: the last turn is a user turn with no reply; {fix}")
    return tuple(turns)


def _dialogue(rec: Mapping[str, Any], loc: str) -> tuple[Turn, ...]:
    has_conv, has_qa = "conversations" in rec, ("question" in rec or "answer" in rec)
    if has_conv and has_qa:
        raise DataError(f"{loc}: both 'conversations' and 'question'/'answer' given; keep one form")
    if has_conv:
        return _turns(rec["conversations"], loc)
    if not has_qa:
        raise DataError(f"{loc}: no 'conversations' and no 'question'/'answer'; add one of the two forms")
    return Turn("user", _text(rec, "question", loc)), Turn("assistant", _text(rec, "answer", loc))


def _image_path(root: Path, image: str, loc: str, allow_outside: bool, trusted: Sequence[Path]) -> Path:
    """``image`` resolved against ``root``: inside ``root`` or a ``trusted`` folder, a regular file."""
    if Path(image).expanduser().is_absolute() and not allow_outside:
        raise DataError(f"{loc}: image {image!r} is absolute; write it relative to {root} or pass "
                        "allow_outside=True (--allow-outside-paths)")
    full = root / Path(image).expanduser()
    if not any(is_inside(t, full, f"{loc}: image") for t in trusted):
        full = resolve_inside(root, image, allow_outside=allow_outside, what=f"{loc}: image")
    return ensure_regular_file(full, f"{loc}: image")


def parse_record(rec: Any, loc: str, root: Path | None = None, *, allow_outside: bool = False,
                 trusted: Sequence[Path] = ()) -> Instruction:
    """Validate one decoded line; with ``root`` also check the image path (inside ``root`` or a ``trusted``
    folder, a regular file)."""
    if not isinstance(rec, dict):
        raise DataError(f"{loc}: expected a JSON object, got {type(rec).__name__}; write one object per line")
    unknown = sorted(set(rec) - KEYS)
    if unknown:
        raise DataError(f"{loc}: unknown field(s) {', '.join(map(repr, unknown))}; use only {', '.join(sorted(KEYS))}")
    _check_utf8(rec, loc)
    iid, image = _text(rec, "id", loc), _text(rec, "image", loc)
    turns = _dialogue(rec, loc)
    meta = rec.get("meta", {})
    if not isinstance(meta, dict):
        raise DataError(f"{loc}: 'meta' must be an object, got {type(meta).__name__}; wrap it in {{...}} or drop it")
    path = _image_path(root, image, loc, allow_outside, trusted) if root is not None else None
    return Instruction(id=iid, image=image, conversations=turns, meta=meta, image_path=path)


def load_instructions(path: str | Path, *, allow_outside: bool = False) -> list[Instruction]:
    """Every line of the JSONL file at ``path``, validated (see the module docstring). A copy that ``mmrobust
    poison --instructions`` or ``audit --instructions`` wrote (``instructions.jsonl`` beside its record) may also
    point into the folders of the files it was copied from, while those still have the recorded SHA-256."""
    path = Path(path)
    root, items, seen = path.parent, [], {}
    trusted = source_roots(path)
    for loc, n, rec in read_jsonl_objects(path, "instruction file"):
        item = parse_record(rec, loc, root, allow_outside=allow_outside, trusted=trusted)
        if item.id in seen:
            raise DataError(f"{loc}: duplicate id {item.id!r} (first on line {seen[item.id]}); make ids unique")
        seen[item.id] = n
        items.append(item)
    if not items:
        raise DataError(f"{path}: no instructions in the file; write one JSON object per line")
    return items


def to_record(item: Instruction) -> dict[str, Any]:
    """The line for ``item``: ``question``/``answer`` for one exchange, ``conversations`` otherwise."""
    rec: dict[str, Any] = {"id": item.id, "image": item.image}
    if len(item.conversations) == 2:
        rec["question"], rec["answer"] = item.question, item.answer
    else:
        rec["conversations"] = [{"role": t.role, "content": t.content} for t in item.conversations]
    if item.meta:
        rec["meta"] = dict(item.meta)
    return rec


def write_instructions(path: str | Path, items: Iterable[Instruction | Mapping[str, Any]]) -> Path:
    """Write ``items`` (Instructions or line dicts, validated; images relative to ``path``'s folder) as JSONL."""
    path = Path(path)
    lines, seen = [], set()
    for k, it in enumerate(items, start=1):
        item = it if isinstance(it, Instruction) else parse_record(dict(it), f"item {k}")
        if item.id in seen:
            raise DataError(f"item {k}: duplicate id {item.id!r}; make ids unique")
        seen.add(item.id)
        lines.append(json.dumps(to_record(item), ensure_ascii=False, sort_keys=True))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def to_chat(item: Instruction) -> list[dict[str, Any]]:
    """Processor chat messages: the image goes first in the first user turn, then its text."""
    msgs = []
    for k, t in enumerate(item.conversations):
        parts: list[dict[str, Any]] = [{"type": "image"}] if k == 0 else []
        msgs.append({"role": t.role, "content": parts + [{"type": "text", "text": t.content}]})
    return msgs
