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

from mmrobust.errors import DataError


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


PACKAGES = ("mmrobust", "torch", "torchvision", "open_clip_torch", "transformers", "clip-benchmark", "peft",
            "numpy", "pillow")


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages whose code the numbers depend on (None: not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def machine() -> dict[str, Any]:
    """The CPU and the settings that pick torch's kernel code paths (numbers differ across them)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    env = {k: os.environ[k] for k in ("MKL_CBWR", "ATEN_CPU_CAPABILITY", "OMP_NUM_THREADS") if k in os.environ}
    return {"cpu": cpu, "cores": os.cpu_count(), "env": env}


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


MAX_JSON_DEPTH = 100  # no record nests deeper; a hostile file nested 10^5 deep would crash the reader


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
    warnings: Iterable[str] = (),
    protocol: dict[str, Any] | None = None,
) -> Path:
    """Write ``run_dir/results.json`` with metrics, the resolved config, seeds, sanity warnings, the
    protocol (``protocol`` plus the versions of the packages the numbers depend on) and provenance."""
    record = {
        "kind": kind,
        "metrics": metrics,
        "warnings": list(dict.fromkeys(str(w) for w in warnings)),  # in order, each once
        "config": config,
        "seeds": seeds or {},
        "protocol": {**(protocol or {}), "packages": package_versions(), "machine": machine()},
        "git_sha": git_sha(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
    }
    if extra:
        record.update(extra)
    return write_json(Path(run_dir) / filename, record)
