"""Run records: results.json (metrics, config, seeds, git sha) and per-sample JSONL."""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any, Iterable


def git_sha() -> str | None:
    """The git commit of the mmrobust source tree, or None outside a checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
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
    tmp.write_text(json.dumps(_jsonable(data), indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    """Write one JSON object per line (per-sample records)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(_jsonable(row)) + "\n")
    return path


def write_results(
    run_dir: str | Path,
    *,
    kind: str,
    metrics: dict[str, Any],
    config: dict[str, Any] | Any,
    seeds: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    filename: str = "results.json",
) -> Path:
    """Write ``run_dir/results.json`` with metrics, the resolved config, seeds and provenance."""
    record = {
        "kind": kind,
        "metrics": metrics,
        "config": config,
        "seeds": seeds or {},
        "git_sha": git_sha(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
    }
    if extra:
        record.update(extra)
    return write_json(Path(run_dir) / filename, record)
