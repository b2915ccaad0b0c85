"""Append-only JSONL response cache, so an interrupted run resumes without repeating a call.

One line per answered request: ``{"key", "model", "params", "image_sha256", "prompt", "response", ...}``.
The key hashes the model identity, prompt, generation parameters and image bytes, so changing any
of them asks again while an identical request is never paid for twice. Only successful answers
are cached (errors are retried on the next run). A line cut short by a kill is skipped on load.
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any, Mapping


def cache_key(*, model: Mapping[str, Any], prompt: str, params: Mapping[str, Any], image_sha256: str) -> str:
    """A stable hash of everything that determines a reply."""
    blob = json.dumps({"model": model, "prompt": prompt, "params": params, "image": image_sha256},
                      sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (the image part of the key)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
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
        raw = self.path.read_bytes()
        for line in raw.splitlines():
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                self._entries.setdefault(rec["key"], rec)  # first answer wins
            except (json.JSONDecodeError, KeyError, TypeError):
                self.n_corrupt_lines += 1
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
        line = json.dumps(rec, ensure_ascii=False) + "\n"
        with self._lock:
            if key in self._entries:
                return
            with self.path.open("a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
            self._entries[key] = rec
