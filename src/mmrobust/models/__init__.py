"""Models: CLIP wrapper over open_clip, checkpoints, and MLLM adapters (``mmrobust.models.mllm``).

The CLIP exports load lazily so that ``mmrobust.models.mllm`` does not import open_clip.
"""
from __future__ import annotations

from typing import Any

__all__ = ["CLIPModel", "create_clip", "save_clip"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from mmrobust.models import clip

        return getattr(clip, name)
    raise AttributeError(f"module 'mmrobust.models' has no attribute {name!r}")
