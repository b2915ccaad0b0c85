"""JSON files mmrobust reads and writes, and the one append-only journal.

``write_json`` / ``read_json`` / ``write_jsonl``: whole files (atomic writes; a depth guard on reads, since
every file a user hands in is hostile). :class:`Journal`: an append-only JSONL file for work that must
survive a kill, the one behind the MLLM response cache, the robust evaluation's finished chunks, the LVLM
evaluations' finished batches and the training log. Each record is appended with one ``write`` of a whole
line (after a newline when a kill tore the last one), so a kill loses at most the line being written, and
readers skip a torn or foreign line instead of failing.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from mmrobust.errors import DataError
from mmrobust.safety import ensure_regular_file

MAX_JSON_DEPTH = 100  # no record nests deeper; a hostile file nested 10^5 deep would crash the reader


def jsonable(obj: Any) -> Any:
    """``obj`` with dataclasses, tuples, paths and numpy / torch scalars turned into plain JSON values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        return obj.item()  # numpy / torch scalars
    return obj


def write_json(path: str | Path, data: Any) -> Path:
    """Write JSON atomically (temp file + rename) so a kill never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(jsonable(data), indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


class MalformedJSON(DataError, ValueError):
    """A JSON file that is no record of ours (too deeply nested): callers treat it as malformed."""


def read_json(path: str | Path) -> Any:
    """The JSON in ``path``; MalformedJSON (a ValueError) for nesting deeper than MAX_JSON_DEPTH."""
    try:
        data = json.loads(Path(path).read_text())
    except RecursionError:
        data, depth = None, MAX_JSON_DEPTH + 1
    else:
        depth, stack = 0, [(data, 1)]
        while stack and depth <= MAX_JSON_DEPTH:  # iterative: no recursion on hostile input
            obj, d = stack.pop()
            depth = max(depth, d)
            stack += [(v, d + 1) for v in (obj.values() if isinstance(obj, dict) else obj
                                           if isinstance(obj, list) else ())]
    if depth > MAX_JSON_DEPTH:
        raise MalformedJSON(f"{path} nests deeper than {MAX_JSON_DEPTH} levels; it is not a record mmrobust wrote")
    return data


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    """Write one JSON object per line (per-sample records)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(jsonable(row)) + "\n")
    return path


def write_canonical_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    """Write rows as UTF-8 JSONL with sorted keys, so the same rows give the same bytes (the generated datasets
    of the embedded world: their files are keyed by content)."""
    path = Path(path)
    path.write_text("".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows), encoding="utf-8")
    return path


class Journal:
    """An append-only JSONL file of records (dicts) that survives kills.

    Example::

        journal = Journal(out / "partial.jsonl")
        done = {r["key"]: r for r in journal.records()}   # torn / foreign lines skipped, counted in n_skipped
        journal.append({"key": k, "rows": rows}, sync=True)
        journal.keep(lambda r: r["step"] <= 300)            # atomic rewrite with the records kept
    """

    def __init__(self, path: str | Path, *, what: str = "journal") -> None:
        self.path, self.what = Path(path), what
        self.n_skipped = 0  # lines of the last records() pass that were torn, not JSON objects, or not UTF-8

    def records(self) -> Iterator[dict[str, Any]]:
        """The file's records in order (none when it does not exist); a torn or non-object line is skipped."""
        self.n_skipped = 0
        if not self.path.exists():
            return
        for line in ensure_regular_file(self.path, self.what).read_bytes().splitlines():
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except (ValueError, RecursionError):  # cut by a kill, not UTF-8, absurdly nested
                rec = None
            if isinstance(rec, dict):
                yield rec
            else:
                self.n_skipped += 1

    def append(self, record: dict[str, Any], *, sync: bool = False) -> None:
        """Append one record as one whole line (one ``write``; ``sync``: fsync'd before returning)."""
        line = (json.dumps(jsonable(record), ensure_ascii=False) + "\n").encode("utf-8")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":  # a line torn by a kill: start on a fresh one
                line = b"\n" + line
            os.write(fd, line)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def keep(self, predicate: Callable[[dict[str, Any]], bool]) -> None:
        """Rewrite the file (atomically) with only the records for which ``predicate`` holds."""
        if not self.path.exists():
            return
        kept = [r for r in self.records() if predicate(r)]
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept), encoding="utf-8")
        os.replace(tmp, self.path)
