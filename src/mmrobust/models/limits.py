"""Bounds on what a CLIP model config may ask for, checked before open_clip allocates anything, so a
broken or hostile config (10^6 layers, width 10^7, patch size 0, 10^6 px images) is a one-line error
instead of a machine out of memory."""
from __future__ import annotations

from typing import Any

from mmrobust.errors import ConfigError

# Bounds on what a model config may ask for, checked before open_clip allocates anything (the largest
# stock open_clip configs: 56 layers, width 1792, 512 px, vocab 901,629, about 5e9 parameters).
SIZE_LIMITS = {"layers": (1, 256), "width": (1, 16_384), "heads": (1, 256), "head_width": (1, 4_096),
               "patch_size": (1, 1_024), "image_size": (1, 4_096), "context_length": (1, 4_096),
               "vocab_size": (1, 2_000_000)}
MAX_EMBED_DIM = 16_384
MAX_MLP_RATIO = 32.0
MAX_PATCHES = 65_536  # image tokens per image
MAX_PARAMS = 10_000_000_000  # estimated parameters (40 GB in fp32)
# Generation and LVLM bounds, checked by the settings classes (GenerationParams, LVLMAttackJob, swap_and_save):
# a reply of 10^9 tokens would run for hours, and a tower at 10^5 px allocates until memory runs out.
MAX_NEW_TOKENS = 4_096  # generated tokens per reply (LLaVA-1.5's whole context is 4,096)
MAX_TOWER_IMAGE_SIZE = SIZE_LIMITS["image_size"][1]  # px; also at most MAX_PATCHES patches
MAX_ATTACK_EPS = 64 / 255  # l-inf radius of an LVLM attack; beyond it the "perturbation" repaints the image


def one_line(text: Any, limit: int = 200) -> str:
    """An error text as one line (library messages can span several)."""
    return " ".join(str(text).split())[:limit]


def _check_size(field: str, value: Any, source: str) -> None:
    """An int inside ``SIZE_LIMITS`` (lists of ints for ResNet ``layers`` and (h, w) ``image_size``)."""
    low, high = SIZE_LIMITS[field.split(".")[-1]]
    listed = field.endswith((".layers", ".image_size")) and isinstance(value, (list, tuple))
    vals = list(value) if listed else [value]
    if not vals or not all(isinstance(v, int) and not isinstance(v, bool) and low <= v <= high for v in vals):
        raise ConfigError(f"model config of {source}: {field} = {one_line(repr(value), 60)} must be an integer "
                          f"in [{low}, {high}]; fix the config (these bounds keep a broken one from allocating "
                          "all memory)")


def _tower(cfg: dict, key: str, source: str) -> dict:
    """One tower's config, its sizes and MLP ratio checked."""
    tower = cfg.get(key, {})
    if not isinstance(tower, dict):
        raise ConfigError(f"model config of {source}: {key} must be a JSON object, not {type(tower).__name__}")
    for field, value in tower.items():
        if field in SIZE_LIMITS and value is not None:
            _check_size(f"{key}.{field}", value, source)
    ratio = tower.get("mlp_ratio", 4.0)
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not 0 < ratio <= MAX_MLP_RATIO:
        raise ConfigError(f"model config of {source}: {key}.mlp_ratio = {ratio!r} must be in (0, {MAX_MLP_RATIO:g}]")
    return tower


def _image_hw(vision: dict) -> tuple[int, int]:
    size = vision.get("image_size", 224)
    return (size[0], size[-1]) if isinstance(size, (list, tuple)) else (size, size)


def _patch_grid(vision: dict) -> int:
    """Image tokens per image (patches of a ViT tower; 0 for timm and ResNet towers)."""
    patch = vision.get("patch_size", 16)
    if not patch or "timm_model_name" in vision or isinstance(vision.get("layers"), (list, tuple)):
        return 0
    h, w = _image_hw(vision)
    return (h // patch) * (w // patch)


def estimate_params(cfg: dict) -> int:
    """A rough parameter count of an open_clip config (transformer blocks, embeddings; ResNet towers
    bounded from above); towers built by timm / Hugging Face are not counted."""
    vision, text = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
    total = 0
    if "timm_model_name" not in vision:
        layers, width = vision.get("layers", 12), vision.get("width", 768)
        block = (4 + 2 * vision.get("mlp_ratio", 4.0)) * width**2
        if isinstance(layers, (list, tuple)):  # modified ResNet: widths grow to 32x the stem
            total += sum(layers) * (32 * width) ** 2
        else:
            patch = vision.get("patch_size") or 16
            total += layers * block + (_patch_grid(vision) + 1) * width + 3 * patch**2 * width
    if "hf_model_name" not in text:
        width = text.get("width", 512)
        total += text.get("layers", 12) * (4 + 2 * text.get("mlp_ratio", 4.0)) * width**2
        total += (text.get("vocab_size", 49408) + text.get("context_length", 77)) * width
    return int(total)


def check_model_cfg(cfg: Any, *, source: str) -> None:
    """Refuse (ConfigError) a model config whose sizes are absurd or malformed (10^6 layers, width
    10^7, patch size 0, 10^6 px images) before open_clip allocates it."""
    if not isinstance(cfg, dict):
        raise ConfigError(f"model config of {source} must be a JSON object, not {type(cfg).__name__}")
    dim = cfg.get("embed_dim")
    if not isinstance(dim, int) or isinstance(dim, bool) or not 1 <= dim <= MAX_EMBED_DIM:
        raise ConfigError(f"model config of {source}: embed_dim = {one_line(repr(dim), 40)} must be an integer "
                          f"in [1, {MAX_EMBED_DIM}]")
    vision = _tower(cfg, "vision_cfg", source)
    _tower(cfg, "text_cfg", source)
    patch = vision.get("patch_size", 16)
    if patch is not None and "timm_model_name" not in vision and patch > min(_image_hw(vision)):
        raise ConfigError(f"model config of {source}: vision_cfg.patch_size {patch} exceeds the image size "
                          f"{vision.get('image_size', 224)}; fix the config")
    if _patch_grid(vision) > MAX_PATCHES:
        raise ConfigError(f"model config of {source}: {_patch_grid(vision):,} image patches exceed "
                          f"{MAX_PATCHES:,}; use a larger patch_size or a smaller image_size")
    n = estimate_params(cfg)
    if n > MAX_PARAMS:
        raise ConfigError(f"model config of {source} asks for about {n:.3g} parameters, more than the "
                          f"{MAX_PARAMS:.0e} allowed; check layers/width/vocab_size in the config")
