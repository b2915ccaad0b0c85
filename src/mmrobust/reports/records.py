"""Run records: results.json (metrics, config, seeds, git sha) and per-sample JSONL."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any, Iterable

from mmrobust.jsonio import write_json


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
