"""Run a CLIP image tower at another resolution: the position embeddings resized explicitly (bicubic
interpolation of the patch grid, class token kept), as LLaVA-1.5 needs for towers trained at 224 px and run at
336 px (Liu et al. 2024, "Improved Baselines with Visual Instruction Tuning"; FARE's LLaVA evaluation,
Schlarmann et al. 2024, swaps 224 px towers in this way). Used by ``mmrobust train --image-size`` (finetune
FARE / TeCoA at the LVLM's resolution) and by the LVLM tower conversion.

Example::

    clip = create_clip("hf-hub:chs20/fare4-clip")
    record = resize_clip_image_size(clip, 336)     # 16 x 16 -> 24 x 24 patches; record says how
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mmrobust.errors import ConfigError
from mmrobust.values import check_int

MAX_SIZE = 4096


def resize_position_embedding(pos: Tensor, new_grid: int, *, antialias: bool = True) -> Tensor:
    """Position embeddings (1 + g*g, D) -> (1 + new_grid**2, D): class token kept, the g x g patch grid
    bicubic-interpolated (``align_corners=False``), as open_clip's ``resize_pos_embed`` (``antialias=True``
    there; HF's ``interpolate_pos_encoding`` uses ``antialias=False``, which differs even when upsampling).
    Same grid: an exact copy."""
    grid = math.isqrt(pos.shape[0] - 1) if pos.dim() == 2 and pos.shape[0] > 1 else 0
    if grid * grid != pos.shape[0] - 1 or grid == 0:
        raise ConfigError(f"position embedding of shape {tuple(pos.shape)} is not (1 + g*g, width) for a square "
                          "grid of g x g patches plus a class token; pass the tower's positional_embedding")
    if new_grid < 1:
        raise ConfigError(f"new_grid must be a positive number of patches per side, not {new_grid}")
    if new_grid == grid:
        return pos.detach().clone()
    cls, patches = pos[:1], pos[1:]
    patches = patches.detach().float().reshape(1, grid, grid, -1).permute(0, 3, 1, 2)  # (1, D, g, g)
    patches = F.interpolate(patches, size=(new_grid, new_grid), mode="bicubic", align_corners=False,
                            antialias=antialias)
    patches = patches.permute(0, 2, 3, 1).reshape(new_grid * new_grid, -1).to(pos.dtype)  # (new_grid**2, D)
    return torch.cat([cls.detach(), patches], dim=0)


def resize_clip_image_size(clip: Any, image_size: int) -> dict[str, Any]:
    """Make ``clip`` (a :class:`~mmrobust.models.clip.CLIPModel` with an open_clip ViT tower) run at
    ``image_size`` px, in place: positions resized by :func:`resize_position_embedding`, the tower's
    ``image_size`` / ``grid_size``, the model config and the preprocess size updated. Returns the record
    (JSON-ready; ``resized`` False and nothing changed when the size is already the tower's)."""
    visual = clip.visual
    pos, patch = getattr(visual, "positional_embedding", None), getattr(visual, "patch_size", None)
    if not isinstance(pos, torch.nn.Parameter) or patch is None or getattr(visual, "attn_pool", None) is not None:
        raise ConfigError(f"{clip.name}'s image tower ({type(visual).__name__}) has no ViT position embedding to "
                          "resize; --image-size works for open_clip ViT towers only")
    patch = patch[0] if isinstance(patch, (tuple, list)) else patch
    check_int("image_size", image_size, low=patch, high=MAX_SIZE, fix=f"a multiple of the patch size {patch}")
    if image_size % patch:
        raise ConfigError(f"image_size {image_size} is not a multiple of {clip.name}'s patch size {patch}; pick "
                          f"e.g. {patch * max(1, round(image_size / patch))} (LLaVA-1.5: 336 = 24 x 14)")
    old = clip.image_size
    old_grid, new_grid = math.isqrt(pos.shape[0] - 1), image_size // patch
    if image_size == old:
        return {"resized": False, "image_size": old, "grid": old_grid}
    with torch.no_grad():
        visual.positional_embedding = torch.nn.Parameter(resize_position_embedding(pos, new_grid),
                                                         requires_grad=pos.requires_grad)
    visual.image_size, visual.grid_size = (image_size, image_size), (new_grid, new_grid)
    clip.model_cfg = {**clip.model_cfg, "vision_cfg": {**clip.model_cfg["vision_cfg"], "image_size": image_size}}
    if "size" in clip.preprocess_cfg:  # (h, w) or one number, as it was
        old_pp = clip.preprocess_cfg["size"]
        clip.preprocess_cfg["size"] = [image_size, image_size] if isinstance(old_pp, (list, tuple)) else image_size
    return {"resized": True, "image_size": {"old": old, "new": image_size}, "old_grid": old_grid,
            "new_grid": new_grid, "method": "bicubic", "align_corners": False, "antialias": True,
            "class_token": "kept"}
