"""A torch Dataset over instruction JSONL (:mod:`mmrobust.data.instructions`) for MLLM finetuning.

Items are dicts: ``image`` float (3,H,W) in [0,1] at ``image_size`` (shorter side resized, centre crop;
no normalization: the Task normalizes with its processor), ``messages`` the processor chat messages of
the dialogue (image first, :func:`to_chat`) and ``index`` int. An image that cannot be decoded yields
``None`` (dropped and counted by :func:`mmrobust.data.datasets.collate`) and is listed in ``skips``.

Example::

    ds = InstructionDataset("mmr_train/train.jsonl", image_size=336)
    ds[0]["messages"][0]  # {"role": "user", "content": [{"type": "image"}, {"type": "text", ...}]}
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError

from mmrobust.data import transforms as T
from mmrobust.data.datasets import SkipLog
from mmrobust.data.instructions import Instruction, load_instructions, to_chat
from mmrobust.errors import DataError


class InstructionDataset(torch.utils.data.Dataset):
    """Image + dialogue items from an instruction JSONL file (paths resolved against its folder)."""

    def __init__(self, path: str | Path, *, image_size: int, allow_outside: bool = False,
                 preload: bool = False) -> None:
        self.path = Path(path)
        self.items: list[Instruction] = load_instructions(self.path, allow_outside=allow_outside)
        self.image_size = image_size
        self.skips = SkipLog()
        self._cache: dict[int, torch.Tensor] = {}
        if preload:
            for i in range(len(self.items)):
                self.image_u8(i)
            if len(self.skips.skipped) == len(self.items):
                first = next(iter(self.skips.skipped.values()))
                raise DataError(f"none of the {len(self.items)} images of {self.path} could be read (first: {first}); "
                                "check the image files")

    def __len__(self) -> int:
        return len(self.items)

    def image_u8(self, i: int) -> torch.Tensor | None:
        """uint8 (3,H,W) image of item ``i`` (cached once read), or None if it cannot be decoded."""
        if i in self.skips.skipped:
            return None
        if i not in self._cache:
            try:
                self._cache[i] = T.load_image(self.items[i].image_path, self.image_size)
            except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError, DataError) as e:
                self.skips.add(i, f"{type(e).__name__}: {str(e)[:500]}")
                return None
        return self._cache[i]

    def __getitem__(self, key: Any) -> dict[str, Any] | None:
        i = int(key[1]) if isinstance(key, tuple) else int(key)  # samplers may pass (epoch, index)
        img = self.image_u8(i)
        if img is None:
            return None
        return {"image": T.to_float(img), "messages": to_chat(self.items[i]), "index": i}
