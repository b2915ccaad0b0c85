"""Append-only JSONL response cache, so an interrupted run resumes without repeating a call.

One line per answered request: ``{"key", "model", "params", "image_sha256", "prompt", "response", ...}``.
The key hashes the model identity, prompt, generation parameters and image bytes, so changing any
of them asks again while an identical request is never paid for twice. Only successful answers
are cached (errors are retried on the next run). A line cut short by a kill is skipped on load;
each answer is appended with a single ``write`` of one whole line, so a kill or Ctrl-C leaves at
most that one line cut.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Mapping

from mmrobust.safety import ensure_regular_file


def cache_key(*, model: Mapping[str, Any], prompt: str, params: Mapping[str, Any], image_sha256: str) -> str:
    """A stable hash of everything that determines a reply."""
    blob = json.dumps({"model": model, "prompt": prompt, "params": params, "image": image_sha256},
                      sort_keys=True, ensure_ascii=False)
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
    """Load existing answers from ``path`` and append new ones (thread-safe, flushed per line)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, Any]] = {}
        self.n_corrupt_lines = 0
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        raw = ensure_regular_file(self.path, "response cache").read_bytes()
        for line in raw.splitlines():
            if not line.strip():
                continue
            rec = _record(line)
            if rec is None:
                self.n_corrupt_lines += 1
            else:
                self._entries.setdefault(rec["key"], rec)  # first answer wins
        if raw and not raw.endswith(b"\n"):  # killed mid-line: start the next record on a fresh line
            with self.path.open("ab") as f:
                f.write(b"\n")

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> dict[str, Any] | None:
        return self._entries.get(key)

    def put(self, key: str, record: Mapping[str, Any]) -> None:
        """Append one answer; a key already present is not written again."""
        rec = {"key": key, **record, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        line = (json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            if key in self._entries:
                return
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)  # one write of the whole line: never interleaved or half-buffered
            finally:
                os.close(fd)
            self._entries[key] = rec


def _record(line: bytes) -> dict[str, Any] | None:
    """A cache line as a record, or None when it is cut, not an object, or lacks a key or a text reply."""
    try:
        rec = json.loads(line)
    except (ValueError, RecursionError):  # cut by a kill, not UTF-8, absurdly nested
        return None
    if not isinstance(rec, dict) or not isinstance(rec.get("key"), str) or not isinstance(rec.get("response"), str):
        return None
    return rec
