"""MMR items from a local question file + image folder, validated, quirks tolerated and reported.

Format (the published ``MMR-benchmark.json``; JSONL also accepted): a list of objects with ``id``
(``level/category/NN``, shared by a POS and a NEG question), ``image`` (path relative to the image
folder), ``question`` (options embedded as ``"A. ...\\nB. ..."``), ``ground_truth`` (a letter) and
``question_type`` (``POS`` or ``NEG``). He et al. / Liu et al. 2024, "Seeing Clearly, Answering
Incorrectly: A Multimodal Robustness Benchmark for Evaluating MLLMs on Leading Questions".

Nothing here crashes on a bad row: it becomes an anomaly in ``MMRDataset.anomalies`` (reported in
``results.json``) and the affected question or pair is left out, with the reason. Image paths stay
inside the image root: an absolute path or one that climbs out (``../``, a symlink) is refused
(anomaly ``image_outside_root``) unless ``allow_outside=True``, and only regular files are used
(a named pipe would block the run forever: anomaly ``image_not_file``).
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

from mmrobust.eval.mllm.options import LETTERS, parse_options
from mmrobust.eval.mmr.pairing import Pair, check_pairing, pair_by_id
from mmrobust.errors import DataError
from mmrobust.safety import ensure_regular_file, resolve_inside

LEVELS = ("character", "attribute", "context")
CATEGORIES = (
    "character/character", "attribute/existence", "attribute/color&texture", "attribute/number",
    "attribute/shape", "attribute/posture", "attribute/position", "context/abstract", "context/concrete",
    "context/expert", "context/activity", "context/relation",
)
_FIELDS = {  # our name -> names seen in the wild, first match wins
    "id": ("id", "question_id"),
    "question": ("question", "prompt", "text_question"),
    "ground_truth": ("ground_truth", "groundtruth", "answer", "gt"),
    "question_type": ("question_type", "type"),
    "image": ("image", "image_path", "img"),
}
_TYPES = {"POS": "POS", "NEG": "NEG", "POSITIVE": "POS", "NEGATIVE": "NEG"}


@dataclass(frozen=True)
class MMRItem:
    """One question. ``uid`` is unique per file (``id|TYPE``); ``id`` is shared by the pair."""

    uid: str
    id: str
    question_type: str
    question: str
    ground_truth: str
    image: str
    options: tuple[tuple[str, str], ...]
    stem: str
    category: str
    level: str
    index: int


@dataclass(frozen=True)
class MMRDataset:
    """Validated items, their POS/NEG pairs, the anomalies and quirk counts, and where they came from."""

    items: tuple[MMRItem, ...]
    pairs: tuple[Pair[MMRItem], ...]
    anomalies: tuple[dict, ...]
    quirks: dict[str, int]
    source: dict[str, Any] = field(default_factory=dict)

    def select(self, limit: int | None, *, pairing: str = "id") -> "MMRDataset":
        """The first ``limit`` pairs, for smoke runs; ``None`` keeps all. ``pairing="id"``: the first
        pairs by id; ``"reference"``: the first ``2 * limit`` items in file order (pairs by position)."""
        if check_pairing(pairing) == "reference":
            return self._select_by_position(limit)
        if limit is None or limit >= len(self.pairs):
            return self
        pairs = self.pairs[:limit]
        keep = {p.id for p in pairs}
        items = tuple(i for i in self.items if i.id in keep)
        return replace(self, items=items, pairs=pairs, source={**self.source, "limit_pairs": limit})

    def _select_by_position(self, limit: int | None) -> "MMRDataset":
        if limit is None or 2 * limit >= len(self.items):
            return self
        items = tuple(self.file_order_items()[:2 * limit])
        uids = {i.uid for i in items}
        pairs = tuple(p for p in self.pairs if p.pos.uid in uids and p.neg.uid in uids)
        return replace(self, items=items, pairs=pairs,
                       source={**self.source, "limit_pairs": limit, "limit_by": "file position"})

    def paired_items(self) -> list[MMRItem]:
        """Items that belong to a valid pair (POS then NEG, pairs in id order): what a run asks."""
        return [item for p in self.pairs for item in (p.pos, p.neg)]

    def file_order_items(self) -> list[MMRItem]:
        """Every loaded item in question-file order (by ``index``): what a reference-pairing run asks."""
        return sorted(self.items, key=lambda i: i.index)


def load_mmr(
    path: str | Path, *, image_root: str | Path | None = None, check_images: bool = True,
    expected_pairs: int | None = None, source: dict[str, Any] | None = None, allow_outside: bool = False,
) -> MMRDataset:
    """Load MMR questions from a JSON/JSONL file, or a directory holding exactly one such file.

    Images resolve against ``image_root`` (default: the file's directory, also trying its
    ``images/`` and single sub-folders, which is how the published zip unpacks). Image paths
    outside that root are refused (an anomaly each) unless ``allow_outside``.
    """
    qfile = _find_question_file(Path(path))
    rows = _read_rows(qfile)
    root = Path(image_root) if image_root is not None else qfile.parent
    resolver = _ImageResolver(root, allow_outside=allow_outside)
    items, anomalies, quirks = _build_items(rows, resolver, check_images)
    pairs, pair_anomalies = pair_by_id(items, id_of=lambda i: i.id, type_of=lambda i: i.question_type)
    anomalies += pair_anomalies
    if expected_pairs is not None and len(pairs) != expected_pairs:
        anomalies.append({"kind": "pair_count", "id": None,
                          "detail": f"{len(pairs)} valid pairs, the published version has {expected_pairs}"})
    info = {"kind": "local", "questions_file": str(qfile), "image_root": str(root), "allow_outside": allow_outside,
            "questions_sha256": _sha256(qfile), "n_rows": len(rows), "n_items": len(items), "n_pairs": len(pairs)}
    return MMRDataset(tuple(items), tuple(pairs), tuple(anomalies), dict(sorted(quirks.items())),
                      {**info, **(source or {})})


def _find_question_file(path: Path) -> Path:
    if path.is_file():
        return path
    if not path.exists():
        raise DataError(f"MMR data {path} does not exist; pass a question JSON file or the folder holding it")
    if not path.is_dir():
        ensure_regular_file(path, "MMR question file")  # a named pipe or a device: refused, not opened
    preferred = [path / "MMR-benchmark.json", path / "questions.json"]
    for p in preferred:
        if p.is_file():
            return p
    found = sorted(path.glob("*.json")) + sorted(path.glob("*.jsonl"))
    if len(found) != 1:
        raise DataError(f"found {len(found)} JSON files in {path}; pass the question file itself")
    return found[0]


def _read_rows(qfile: Path) -> list[Any]:
    ensure_regular_file(qfile, "MMR question file")  # a named pipe would block forever
    try:
        text = qfile.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{qfile} is not UTF-8 text ({e.reason} at byte {e.start}); re-download it") from None
    try:
        if qfile.suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise DataError(f"{qfile} is not valid JSON ({type(e).__name__}: {e}); re-download it or fix the "
                        "file") from None
    if isinstance(data, dict):  # {"data": [...]} or {id: item}
        data = data.get("data", data.get("questions", list(data.values())))
    if not isinstance(data, list):
        raise DataError(f"{qfile} should hold a list of questions; got {type(data).__name__}")
    return data


def _build_items(rows: list[Any], images: "_ImageResolver", check_images: bool
                 ) -> tuple[list[MMRItem], list[dict], Counter]:
    items: list[MMRItem] = []
    anomalies: list[dict] = []
    quirks: Counter = Counter()
    seen: Counter = Counter()
    for index, row in enumerate(rows):
        item, problem = _build_item(row, index, images, check_images, quirks)
        if problem is not None:
            anomalies.append(problem)
        if item is None:
            continue
        base_uid = f"{item.id}|{item.question_type}"
        seen[base_uid] += 1
        uid = base_uid if seen[base_uid] == 1 else f"{base_uid}#{index}"
        items.append(replace(item, uid=uid))
    return items, anomalies, quirks


def _build_item(
    row: Any, index: int, images: "_ImageResolver", check_images: bool, quirks: Counter
) -> tuple[MMRItem | None, dict | None]:
    """One row -> (item or None, anomaly or None). Tolerated quirks are counted in ``quirks``."""
    if not isinstance(row, dict):
        return None, _anomaly("bad_row", None, index, f"row {index} is {type(row).__name__}, not an object")
    got = {k: next((row[n] for n in names if n in row), None) for k, names in _FIELDS.items()}
    missing = [k for k in ("id", "question", "ground_truth", "question_type") if got[k] in (None, "")]
    if missing:
        return None, _anomaly("missing_field", got["id"], index, f"row {index} lacks {', '.join(missing)}")
    qid = str(got["id"]).strip()
    qtype = _TYPES.get(str(got["question_type"]).strip().upper())
    if qtype is None:
        return None, _anomaly("bad_question_type", qid, index, f"question_type {got['question_type']!r} is not POS/NEG")
    gt = str(got["ground_truth"]).strip().strip("().").strip().upper()
    if gt not in LETTERS:
        return None, _anomaly("bad_ground_truth", qid, index, f"ground truth {got['ground_truth']!r} is not A-D")
    if gt != str(got["ground_truth"]):
        quirks["ground_truth_format"] += 1
    parsed = parse_options(str(got["question"]))
    quirks.update(parsed.quirks)
    image, refusal = images.resolve(str(got["image"]) if got["image"] else None, qid)
    if refusal is not None:  # outside the root or not a regular file: refused even without check_images
        return None, _anomaly(refusal[0], qid, index, refusal[1])
    if check_images and image is None:
        return None, _anomaly("image_missing", qid, index, f"no image for {qid} ({got['image']!r}) under {images.root}")
    level, _, rest = qid.partition("/")
    category = f"{level}/{rest.split('/')[0]}" if rest else "unknown"
    item = MMRItem(uid="", id=qid, question_type=qtype, question=str(got["question"]), ground_truth=gt,
                   image=str(image or ""), options=parsed.options, stem=parsed.stem,
                   category=category, level=level if rest else "unknown", index=index)
    if parsed.options and gt not in parsed.letters:
        return item, _anomaly("ground_truth_not_in_options", qid, index,
                              f"{qid} {qtype}: ground truth {gt} is not among options {''.join(parsed.letters)}")
    if not parsed.options:
        return item, _anomaly("options_unparsed", qid, index, f"{qid} {qtype}: could not find lettered options")
    return item, None


def _anomaly(kind: str, qid: Any, index: int, detail: str) -> dict:
    return {"kind": kind, "id": qid, "index": index, "detail": detail}


Refusal = tuple[str, str]  # (anomaly kind, detail)


class _ImageResolver:
    """Find an image under root, root/images, or any first-level sub-folder (zip layouts vary),
    never outside root unless ``allow_outside``, and only a regular file."""

    def __init__(self, root: Path, *, allow_outside: bool = False) -> None:
        self.root, self.allow_outside = root, allow_outside
        subdirs = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        self.bases = [root, root / "images", *subdirs]

    def resolve(self, rel: str | None, qid: str) -> tuple[Path | None, Refusal | None]:
        """(path, None) when found; (None, None) when missing; (None, refusal) when every candidate
        that points anywhere is outside the root or not a regular file."""
        names = [rel.strip()] if rel and rel.strip() else [f"{qid}{ext}" for ext in (".jpg", ".png", ".jpeg")]
        refusal: Refusal | None = None
        for name in names:
            for candidate in dict.fromkeys(base / name for base in self.bases):  # absolute: one candidate
                problem = self._check(candidate, name)
                if problem is None:
                    return candidate, None
                if problem[0] != "image_missing":
                    refusal = refusal or problem
        return None, refusal

    def _check(self, candidate: Path, name: str) -> Refusal | None:
        """None if ``candidate`` is a usable image file, else why not."""
        try:
            resolve_inside(self.root, candidate.absolute(), allow_outside=self.allow_outside, what="image path")
            if not candidate.exists():
                return ("image_missing", str(candidate))
        except DataError:
            return ("image_outside_root", f"image path {name!r} points outside the image root {self.root}; keep "
                    "images under it or pass --allow-outside-paths (allow_outside=True)")
        except (OSError, RuntimeError, ValueError) as e:  # a symlink loop, a NUL byte in the name
            return ("image_missing", f"{candidate}: {e}")
        try:
            ensure_regular_file(candidate, "image")
        except DataError as e:
            return ("image_not_file", str(e))
        return None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def item_rows(items: Iterable[MMRItem]) -> list[dict]:
    """Items as plain dicts (the per-item JSONL columns that describe the question)."""
    return [{"uid": i.uid, "id": i.id, "question_type": i.question_type, "category": i.category,
             "level": i.level, "ground_truth": i.ground_truth, "options": dict(i.options),
             "image": i.image} for i in items]
