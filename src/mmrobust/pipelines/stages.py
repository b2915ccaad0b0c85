"""Resumable stages: a unit of work run once per (directory, settings), reused by a rerun with the same
settings. The stories (:mod:`mmrobust.stories`) and the card (:mod:`mmrobust.pipelines.card`) are built of them."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

from mmrobust.jsonio import read_json, write_json

DONE = "stage.json"


def _key(config: dict[str, Any]) -> Any:
    return json.loads(json.dumps(config, default=str))


def stage_done(out_dir: Path, config: dict[str, Any]) -> bool:
    """Whether ``out_dir`` holds a stage finished with ``config`` (what :func:`run_stage` would reuse)."""
    marker = out_dir / DONE
    return marker.is_file() and read_json(marker).get("config") == _key(config)


def run_stage(out_dir: Path, config: dict[str, Any], fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``fn`` once per (directory, config): a finished stage with the same config is reused, so an
    interrupted story resumes where it stopped (unfinished training continues from its checkpoint);
    a stage finished with other settings is deleted and recomputed."""
    marker = out_dir / DONE
    key = _key(config)
    if marker.is_file():
        saved = read_json(marker)
        if saved.get("config") == key:
            return saved["output"]
        shutil.rmtree(out_dir)  # finished with other settings: recompute from scratch
    out_dir.mkdir(parents=True, exist_ok=True)
    output = fn()
    write_json(marker, {"config": key, "output": output})
    return output


def stamp(path: str | Path) -> str:
    """Identity of an upstream output (a file, or a model directory's weights): size and mtime, so a
    stage recomputed upstream invalidates the stages that read its output."""
    p = Path(path)
    if p.is_dir():
        p = p / "open_clip_model.safetensors"
    if not p.is_file():
        return str(path)  # a model name, not a file
    st = p.stat()
    return f"{st.st_size}-{st.st_mtime_ns}"
