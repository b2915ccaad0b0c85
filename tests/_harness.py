"""Shared helpers of the harness-integration tests (lmms-eval, Inspect, VLMEvalKit): known replies to an MMR
world's questions, the oracle that scores them with mmrobust's library directly, and the environment a
harness subprocess runs in (offline, this checkout's mmrobust first on its path)."""
from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import pytest

import mmrobust
from mmrobust.eval.mmr import compute_metrics, load_mmr, parse_records
from mmrobust.integrations import harness_questions


def known_replies(world: Path) -> dict[str, str]:
    """uid -> reply: POS questions right ("B. ..." style or a bare letter), NEG questions alternately right and
    wrong, one reply unparseable: RA and MR both strictly between 0 and 1 (4 pairs or more)."""
    replies = {}
    for n, q in enumerate(harness_questions(load_mmr(world))):
        wrong = next(letter for letter in "ABCD" if letter != q.ground_truth)
        if q.uid.endswith("|POS"):
            replies[q.uid] = f"{q.ground_truth}. {q.options.get(q.ground_truth, '')}" if n % 4 else q.ground_truth
        else:
            replies[q.uid] = q.ground_truth if n % 4 == 1 else wrong
    first_neg = next(u for u in replies if u.endswith("|NEG"))
    replies[first_neg] = "I cannot tell"
    return replies


def oracle(world: Path, replies: dict[str, str | None], parser: str = "official") -> dict:
    """mmrobust's pooled metrics of ``replies`` (None: a failed request), from rows built here by hand."""
    rows = [{"uid": q.uid, **q.columns, "ground_truth": q.ground_truth, "options": dict(q.options),
             "response": replies[q.uid], "error": None if replies[q.uid] is not None else "failed"}
            for q in harness_questions(load_mmr(world))]
    return compute_metrics(parse_records(rows, parser), n_boot=0)["overall"]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def harness_env(home: Path, **extra: str) -> dict[str, str]:
    """Offline environment for a harness subprocess: this checkout's ``src`` ahead of any installed mmrobust,
    caches under ``home``, no telemetry."""
    src = str(Path(mmrobust.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(home / "hf"), "HF_DATASETS_CACHE": str(home / "hf-datasets"),
            "WANDB_MODE": "disabled", "WANDB_DISABLED": "true", "OMP_NUM_THREADS": "1", "NO_COLOR": "1", **extra}


def need_lmms_eval() -> None:
    """Skip unless lmms-eval 0.7 can run here (it imports filelock's private ``_api``, gone in filelock 4)."""
    pytest.importorskip("lmms_eval")
    if importlib.util.find_spec("filelock._api") is None:
        pytest.skip("lmms-eval 0.7.3 imports filelock._api, which filelock 4 removed: pip install 'filelock<4' "
                    "(the harness extra pins it)")
