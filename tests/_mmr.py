"""Shared fixture helper of the MMR tests: an MMR world and a tiny LLaVA built on it through the CLI."""
from __future__ import annotations

from pathlib import Path

from mmrobust.cli.main import main


def mmr_world_and_llava(root: Path, pairs_per_category: int) -> tuple[Path, Path]:
    """``root/world`` (``mmr make-data``, 32 px) and ``root/tiny-llava`` (``mmr make-tiny-llava`` on it, seed 0)."""
    world, model = root / "world", root / "tiny-llava"
    assert main(["mmr", "make-data", "--out", str(world), "--pairs-per-category", str(pairs_per_category),
                 "--image-size", "32"]) == 0
    assert main(["mmr", "make-tiny-llava", "--out", str(model), "--data", str(world), "--seed", "0"]) == 0
    return world, model
