"""Append-only JSONL response cache, so an interrupted run resumes without repeating a call.

One line per answered request: ``{"key", "model", "params", "image_sha256", "prompt", "response", ...}``
(plus ``history`` for a later turn of a conversation). The key hashes the model identity, prompt,
generation parameters, image bytes and any earlier turns, so changing any
of them asks again while an identical request is never paid for twice. Only successful answers
are cached (errors are retried on the next run). A line cut short by a kill is skipped on load;
each answer is appended with a single ``write`` of one whole line, so a kill or Ctrl-C leaves at
most that one line cut.
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from mmrobust.jsonio import Journal
from mmrobust.safety import ensure_regular_file


def cache_key(*, model: Mapping[str, Any], prompt: str, params: Mapping[str, Any], image_sha256: str,
              history: Sequence[Sequence[str]] = ()) -> str:
    """A stable hash of everything that determines a reply: with a conversation ``history`` (earlier
    (role, text) turns), the history too; a single question's key has no history field (unchanged)."""
    fields: dict[str, Any] = {"model": model, "prompt": prompt, "params": params, "image": image_sha256}
    if history:
        fields["history"] = [list(turn) for turn in history]
    blob = json.dumps(fields, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a regular file's bytes (the image part of the key); a DataError for a missing
    file, a folder or a named pipe (which would block forever)."""
    h = hashlib.sha256()
    with open(ensure_regular_file(path, "image"), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class ResponseCache:
    """Load existing answers from ``path`` and append new ones (thread-safe; a :class:`~mmrobust.jsonio.Journal`
    line per answer)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._journal = Journal(self.path, what="response cache")
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, Any]] = {}
        self.n_corrupt_lines = 0
        for rec in self._journal.records():
            if _is_answer(rec):
                self._entries.setdefault(rec["key"], rec)  # first answer wins
            else:
                self.n_corrupt_lines += 1
        self.n_corrupt_lines += self._journal.n_skipped

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> dict[str, Any] | None:
        return self._entries.get(key)

    def put(self, key: str, record: Mapping[str, Any]) -> None:
        """Append one answer; a key already present is not written again."""
        rec = {"key": key, **record, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        with self._lock:
            if key in self._entries:
                return
            self._journal.append(rec)  # one write of the whole line: never interleaved or half-buffered
            self._entries[key] = rec


def _is_answer(rec: dict[str, Any]) -> bool:
    """A cache record has a key and a text reply (other lines are skipped as corrupt)."""
    return isinstance(rec.get("key"), str) and isinstance(rec.get("response"), str)
