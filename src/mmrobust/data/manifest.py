"""The one CSV reader for manifests users hand in (image,caption[,label] rows; any delimiter).

Every reader of a manifest (datasets, poisoning, story subsets) goes through :func:`read_csv`, so
they agree on encoding (UTF-8, a BOM tolerated), blank lines (skipped), ragged rows (an error that
names the row) and their one-line messages.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

from mmrobust.errors import ConfigError, DataError
from mmrobust.safety import ensure_regular_file, resolve_path


@dataclass(frozen=True)
class CsvTable:
    """Header, data rows (lists of fields, header excluded) and the file's raw bytes."""

    path: Path
    header: list[str]
    rows: list[list[str]]
    raw: bytes
    delimiter: str = ","

    def column(self, name: str, flag: str = "the column option") -> int:
        """Index of column ``name``; a one-line error naming the option to set otherwise."""
        if name not in self.header:
            raise DataError(f"manifest {self.path} has no column {name!r} (columns: {', '.join(self.header)}); "
                            f"set {flag} to one of them")
        return self.header.index(name)

    def dicts(self) -> list[dict[str, str]]:
        return [dict(zip(self.header, r)) for r in self.rows]

    @property
    def crlf(self) -> bool:
        return b"\r\n" in self.raw[:65536]


def read_csv(path: str | Path, *, delimiter: str = ",", option: str = "the manifest path") -> CsvTable:
    """Read a CSV/TSV manifest with a header line; DataError / ConfigError with the fix otherwise
    (``option`` names where the user gave the path, e.g. "the --manifest path")."""
    path = Path(path)
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise ConfigError(f"delimiter must be one character, got {delimiter!r}; e.g. --delimiter ',' or $'\\t'")
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"cannot read manifest {path} (not found); check {option}") from None
    except OSError as e:
        raise DataError(f"cannot read manifest {path} ({e.strerror or e}); check {option} and its permissions") from None
    except UnicodeDecodeError:
        raise DataError(f"manifest {path} is not UTF-8 text; re-save it as UTF-8 CSV") from None
    try:
        rows = [r for r in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter) if r]
    except csv.Error as e:
        raise DataError(f"cannot parse manifest {path} ({e}); expected a UTF-8 CSV") from None
    if not rows:
        raise DataError(f"manifest {path} is empty; it needs a header line and one row per image")
    header, data = rows[0], rows[1:]
    for i, r in enumerate(data):
        if len(r) != len(header):
            raise DataError(f"manifest {path} row {i} has {len(r)} fields, header has {len(header)}; "
                            f"fix the row or pass the right delimiter (now {delimiter!r})")
    return CsvTable(path, header, data, raw, delimiter)


POISON_RECORD_FORMAT = "mmrobust.poison/1"  # the "format" of every poison.json mmrobust poison writes
AUDIT_DROP_FORMAT = "mmrobust.audit-drop/1"  # the "format" of the dropped.json beside a manifest audit --drop-top wrote
# record beside a manifest.csv that mmrobust wrote from another manifest -> that record's format
DERIVED_RECORDS = (("poison.json", POISON_RECORD_FORMAT), ("dropped.json", AUDIT_DROP_FORMAT))
# the copy of an instruction JSONL that mmrobust poison --instructions / audit --instructions writes (its record
# names it in "manifest")
INSTRUCTIONS_COPY = "instructions.jsonl"


def _source_of(manifest: Path) -> Path | None:
    """The source manifest a ``manifest.csv`` (or an ``instructions.jsonl`` copy) was copied from, when a sibling
    record of ours names it and it still has the recorded SHA-256 (a copied or edited record cannot widen the
    root); else None."""
    if manifest.name not in ("manifest.csv", INSTRUCTIONS_COPY):
        return None
    for name, fmt in DERIVED_RECORDS:
        rec_path = manifest.parent / name
        try:
            rec = json.loads(rec_path.read_text()) if rec_path.is_file() else None
            if not isinstance(rec, dict) or rec.get("format") != fmt:
                continue
            if manifest.name == INSTRUCTIONS_COPY and rec.get("manifest") != INSTRUCTIONS_COPY:
                continue
            source = Path(str(rec["source_manifest"]))
            if source.is_file() and hashlib.sha256(source.read_bytes()).hexdigest() == rec.get("source_sha256"):
                return source
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def poison_source_root(manifest: str | Path) -> Path | None:
    """The source folder of a manifest written by ``mmrobust poison`` (or ``mmrobust audit --drop-top``): its
    untouched rows point back into the folder of the manifest it copied. Trusted only when the sibling
    ``poison.json`` (``dropped.json``) is ours and the source manifest it names still has the recorded SHA-256."""
    source = _source_of(Path(manifest))
    return source.parent if source is not None else None


def source_roots(manifest: str | Path, depth: int = 4) -> tuple[Path, ...]:
    """The folders of the manifests ``manifest`` was copied from by mmrobust, nearest first, following up to
    ``depth`` copies (a cleaned copy of a poisoned manifest points into both earlier folders)."""
    roots: list[Path] = []
    current = Path(manifest)
    for _ in range(depth):
        source = _source_of(current)
        if source is None or source.parent in roots:
            break
        roots.append(source.parent)
        current = source
    return tuple(roots)


def base_from(out_dir: Path, manifest_dir: Path) -> str:
    """A manifest's folder as seen from ``out_dir`` (relative if possible): what a copy written into
    ``out_dir`` prefixes its relative image paths with."""
    try:
        return os.path.relpath(manifest_dir.resolve(), out_dir.resolve())
    except ValueError:  # different drives (Windows)
        return str(manifest_dir.resolve())


def rebase(original: str, base: str) -> str:
    """An image path as written in a copied manifest: absolute stays, relative is prefixed with ``base``."""
    if Path(original).expanduser().is_absolute():
        return original
    return Path(os.path.normpath(os.path.join(base, original))).as_posix()


@dataclass(frozen=True)
class PathPolicy:
    """Where the image paths of a manifest may point: inside its ``roots`` (by default the manifest's own
    folder, plus the source folders of a manifest that mmrobust poison or audit --drop-top wrote), anywhere with
    ``allow_outside``. A manifest is untrusted input: without this, a row could make the tool read any
    local file."""

    roots: tuple[Path, ...]
    allow_outside: bool = False

    @classmethod
    def of(cls, manifest: str | Path, data_root: str | Path | None = None, allow_outside: bool = False) -> "PathPolicy":
        if data_root is not None:
            return cls((Path(data_root),), bool(allow_outside))
        return cls((Path(manifest).parent, *source_roots(manifest)), bool(allow_outside))

    @property
    def root(self) -> Path:
        return self.roots[0]

    def resolve(self, base: Path, value: str) -> Path:
        """``value`` (relative to ``base``, the manifest's folder) as a path; DataError when it points
        outside ``root`` and outside paths are not allowed."""
        p = Path(value).expanduser()
        return self.check(p if p.is_absolute() else base / p)

    @cached_property
    def _resolved_roots(self) -> tuple[Path, ...]:
        return tuple(resolve_path(r, "data root") for r in self.roots)  # once, not once per image

    def check(self, path: Path) -> Path:
        """``path`` if it may be read; DataError naming the options otherwise."""
        if self.allow_outside:
            return path
        full = resolve_path(path, "image path")  # symlinks and .. resolved, as safety.is_inside does
        if not any(full == r or r in full.parents for r in self._resolved_roots):
            raise DataError(f"image path {str(path)!r} points outside the data root {self.root}; pass --data-root "
                            "with a folder that holds the images, or --allow-outside-paths")
        return path


def read_jsonl_objects(path: str | Path, what: str = "JSONL file") -> Iterator[tuple[str, int, dict[str, Any]]]:
    """``(file:line, line number, object)`` per non-blank line of a UTF-8 JSONL file (a BOM tolerated);
    the one JSONL reader of user files, with one-line DataErrors for a missing or non-regular file,
    text that is not UTF-8, a line that is not JSON and a line that is not an object."""
    p = ensure_regular_file(path, what)
    try:
        lines = p.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{p}: not UTF-8 text (byte {e.start}); save it as UTF-8 JSONL") from None
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{p}:{n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: not valid JSON ({e.msg} at column {e.colno}); "
                            "write one JSON object per line") from None
        except RecursionError:
            raise DataError(f"{where}: nested too deeply; write one flat JSON object per line") from None
        if not isinstance(obj, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}; write one object per line")
        yield where, n, obj
