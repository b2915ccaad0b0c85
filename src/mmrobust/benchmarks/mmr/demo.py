"""The offline MMR story in one call: synthetic pairs -> tiny random LLaVA via the real ``hf``
adapter -> scored report. No downloads; a couple of minutes on a laptop CPU at most.

Example::

    record = run_mmr_demo("runs/demo")   # runs/demo/mmr-run/{results.json,responses.jsonl,mmr_categories.png}
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from mmrobust.benchmarks.mmr.dataset import load_mmr
from mmrobust.benchmarks.mmr.runner import RunSettings, run_mmr
from mmrobust.benchmarks.mmr.synthetic import generate_mmr_world
from mmrobust.models.mllm.base import GenerationParams
from mmrobust.registry import MLLM_ADAPTERS


def run_mmr_demo(
    out_dir: str | Path, *, seed: int = 0, pairs_per_category: int = 4, image_size: int = 32,
    n_boot: int = 1000,
) -> dict[str, Any]:
    """Write ``mmr-world/``, ``tiny-llava/`` and ``mmr-run/`` under ``out_dir``; return the results record.

    The tiny model has random weights, so RA sits near chance and many replies are unparseable:
    the point is that every real code path (processor, chat template, batched generation, cache,
    parsers, scoring, report) runs offline.
    """
    from mmrobust.models.mllm.tiny import build_tiny_llava

    root = Path(out_dir)
    data = load_mmr(generate_mmr_world(root / "mmr-world", pairs_per_category=pairs_per_category, seed=seed,
                                       image_size=image_size))
    model_dir = root / "tiny-llava"
    if not (model_dir / "config.json").exists():
        build_tiny_llava(model_dir, seed=seed, image_size=image_size, extra_words=[i.question for i in data.items])
    adapter = MLLM_ADAPTERS.create("hf", model=str(model_dir), device="cpu", dtype="float32", batch_size=8)
    settings = RunSettings(n_boot=n_boot, seed=seed, params=GenerationParams(max_new_tokens=8))
    return run_mmr(data, adapter, out_dir=root / "mmr-run", settings=settings)
