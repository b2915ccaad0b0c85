"""Guards for files and text that come from outside (manifests, question files, configs, server
replies): paths kept inside their root, only regular files opened, secrets redacted before
anything is recorded. Every refusal is a one-line error that names the fix.
"""
from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Iterable

from mmrobust.errors import ConfigError, DataError

_SECRET_PATTERNS = (
    re.compile(r"(?i)(authorization\s*[:=]\s*[\"']?\s*(?:bearer|basic|token)?\s*)[^\s\"',;}]+"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{6,}"),
    re.compile(r"(?i)([\"']?(?:x-)?api[-_]?key[\"']?\s*[:=]\s*[\"']?)[^\s\"',;}]+"),
    re.compile(r"(?i)([\"']?(?:access[-_]?token|secret|password)[\"']?\s*[:=]\s*[\"']?)[^\s\"',;}]+"),
    re.compile(r"()\bsk-[A-Za-z0-9_-]{8,}"),
    re.compile(r"()\bhf_[A-Za-z0-9]{8,}"),
)
REDACTED = "[REDACTED]"


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with credentials replaced by ``[REDACTED]``: the given ``secrets`` verbatim (e.g. the
    API key in use), plus anything shaped like an Authorization header, a bearer token or an API key."""
    out = str(text)
    for s in secrets:
        if s and len(s) >= 4:
            out = out.replace(s, REDACTED)
    for pat in _SECRET_PATTERNS:
        out = pat.sub(lambda m: m.group(1) + REDACTED, out)
    return out


def resolve_path(path: str | Path, what: str = "path") -> Path:
    """``path`` with symlinks and ``..`` resolved; a one-line DataError for a symlink loop (Python raises
    RuntimeError or OSError there) or a path that cannot be resolved."""
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError) as e:
        why = "is a symlink loop" if "loop" in str(e).lower() else f"cannot be resolved ({e})"
        raise DataError(f"{what} {str(path)!r} {why}; fix or remove the link") from None


def is_inside(root: str | Path, path: str | Path, what: str = "path") -> bool:
    """Whether ``path`` (symlinks resolved) lies inside ``root``; DataError for a symlink loop."""
    root_r, path_r = resolve_path(root, "folder"), resolve_path(path, what)
    return path_r == root_r or root_r in path_r.parents


def resolve_inside(root: str | Path, value: str | Path, *, allow_outside: bool = False,
                   what: str = "path", option: str = "--allow-outside-paths") -> Path:
    """``value`` resolved against ``root``; refuses (DataError) an absolute path or one that climbs out of
    ``root`` (``..``, symlinks) unless ``allow_outside``."""
    p = Path(value).expanduser()
    full = p if p.is_absolute() else Path(root) / p
    if not allow_outside and not is_inside(root, full, what):
        raise DataError(f"{what} {str(value)!r} points outside {root}; keep files under that folder or pass "
                        f"{option} to allow it")
    return full


def ensure_regular_file(path: str | Path, what: str = "file") -> Path:
    """``path`` if it is a regular file; a DataError for a missing file, a folder, a named pipe or a device
    (opening a pipe would block the run forever)."""
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise DataError(f"{what} {p} not found; check the path") from None
    except OSError as e:
        raise DataError(f"cannot read {what} {p} ({e.strerror or e}); check the path and permissions") from None
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{what} {p} is not a regular file (a folder, pipe or device); point to a file")
    return p


def is_own_record(path: str | Path, generator: str) -> bool:
    """Whether ``path`` is a JSON record whose ``generator`` is ``generator`` (what a command writes first into
    an output folder, to mark the folder as its own)."""
    p = Path(path)
    try:
        if not p.is_file() or p.stat().st_size > 1 << 20:
            return False
        record = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(record, dict) and record.get("generator") == generator


def check_replace(root: str | Path, found: list[str], *, marker: str, generator: str, overwrite: bool) -> None:
    """Refuse (ConfigError) to replace ``found``, the files of ``root`` a command would write, unless
    ``overwrite`` and ``root`` holds ``marker``, the record that command wrote there first (its ``generator``):
    a folder the tool never wrote is never written over, with or without --overwrite."""
    if not found:
        return
    listed = ", ".join(found[:4]) + (f" (+{len(found) - 4} more)" if len(found) > 4 else "")
    if not overwrite:
        raise ConfigError(f"{root} already holds {listed}; choose a new --out, or pass --overwrite to replace them")
    if not is_own_record(Path(root) / marker, generator):
        raise ConfigError(f"{root} holds {listed} but no {marker} of {generator}, so mmrobust did not write them and "
                          "--overwrite will not replace them; move them away or choose a new --out")
