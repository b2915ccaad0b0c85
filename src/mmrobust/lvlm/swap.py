"""Swap a (robust) open_clip image tower into a LLaVA-style LVLM, with no retraining (FARE's use,
Schlarmann et al. 2024, "Robust CLIP: Unsupervised Adversarial Fine-Tuning of Vision Embeddings for Robust
Large Vision-Language Models").

LLaVA's projector reads ``hidden_states[vision_feature_layer]`` of its CLIP tower, so any tower of the same
width (and depth, heads, patch) can replace it: convert the open_clip tower exactly (:mod:`.convert`), load it
into ``lvlm.model.vision_tower`` and give the processor the new tower's normalization. LLaVA-1.5 runs its tower
at 336 px while published robust towers are 224 px: by default the tower is converted at the LVLM's own size,
the position embeddings resized explicitly, and the record says so. ``vision_feature_layer`` and the select
strategy stay as the LVLM has them.

Example::

    lvlm = AutoModelForImageTextToText.from_pretrained("llava-hf/llava-1.5-7b-hf")
    record = swap_vision_tower(lvlm, create_clip("hf-hub:chs20/fare4-clip"))   # 224 -> 336 px, resized
    # or, from disk to disk (model + processor + swap.json):
    swap_and_save("llava-hf/llava-1.5-7b-hf", "hf-hub:chs20/fare4-clip", out_dir="runs/llava-fare4")
"""
from __future__ import annotations

import copy
import fnmatch
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmrobust.errors import ConfigError
from mmrobust.lvlm.checks import check_convertible
from mmrobust.lvlm.convert import HFVisionModel, convert_clip_vision, load_hf_vision
from mmrobust.models.mllm.hf import load_hf_llava
from mmrobust.models.clip import CLIPModel, create_clip
from mmrobust.models.limits import MAX_PATCHES, MAX_TOWER_IMAGE_SIZE, one_line
from mmrobust.reports.records import git_sha
from mmrobust.jsonio import write_json
from mmrobust.reports.sanity import normalization_mismatch, tower_resolution
from mmrobust.values import check_int

RECORD_NAME = "swap.json"
# Fields the LVLM depends on (the projector's input width, the meaning of vision_feature_layer, the processor's
# token count per patch): a tower that differs here does not fit and is refused.
FITTED = (("hidden_size", "width"), ("num_hidden_layers", "layers"), ("num_attention_heads", "heads"),
          ("patch_size", "patch size"), ("num_channels", "channels"))
# Fields the rest of the LVLM never sees: the tower is rebuilt to the new encoder's values, so it computes
# what the CLIP computed (e.g. exact GELU instead of OpenAI's QuickGELU).
FOLLOWED = ("intermediate_size", "hidden_act", "layer_norm_eps", "image_size")
# Files a previous save_pretrained may have left; with overwrite, stale ones are removed so a reload can never
# pick old weights (e.g. an old model.safetensors beside a new sharded index). Nothing else is deleted.
WEIGHT_FILES = ("model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json",
                "pytorch_model.bin", "pytorch_model-*-of-*.bin", "pytorch_model.bin.index.json")


def _tower_owner(lvlm: nn.Module) -> nn.Module:
    """The module holding ``vision_tower``: ``lvlm.model`` in transformers >= 4.52 (LLaVA, LLaVA-NeXT), else
    ``lvlm`` itself."""
    for owner in (getattr(lvlm, "model", None), lvlm):
        if isinstance(getattr(owner, "vision_tower", None), nn.Module):
            return owner
    raise ConfigError(f"{type(lvlm).__name__} has no vision_tower (looked at .model.vision_tower and "
                      ".vision_tower); pass a LLaVA-style model (LlavaForConditionalGeneration, LLaVA-NeXT)")


def _check_fits(have: Any, want: Any, *, encoder: str) -> None:
    """Refuse (one line, naming each field) a tower the LVLM's projector and feature layer cannot take."""
    diff = [f"{label} {getattr(want, f)} vs the LVLM's {getattr(have, f)}" for f, label in FITTED
            if getattr(have, f) != getattr(want, f)]
    if diff:
        raise ConfigError(one_line(f"cannot swap {encoder}'s image tower into this LVLM: {'; '.join(diff)}; the "
                                   "projector and vision_feature_layer expect the LVLM's tower architecture, so pick "
                                   "an encoder of the same architecture (LLaVA-1.5: ViT-L-14, e.g. FARE/TeCoA)", 400))


def _rebuild_tower(owner: nn.Module, lvlm: nn.Module, tower: nn.Module, want: Any, fields: list[str]) -> nn.Module:
    """A fresh tower of ``type(tower)`` whose config takes ``fields`` from ``want``, on the old tower's device
    and dtype, put in place of the old one (and into the LVLM's config). Random init in a forked RNG scope;
    the weights are loaded by the caller."""
    config = copy.deepcopy(tower.config)  # keeps the LVLM's attention backend and other settings
    for f in fields:
        setattr(config, f, getattr(want, f))
    param = next(tower.parameters())
    with torch.random.fork_rng(devices=[]):
        new = type(tower)(config)
    new = new.to(device=param.device, dtype=param.dtype).train(tower.training)
    owner.vision_tower = new
    for cfg in {id(c): c for c in (lvlm.config, getattr(owner, "config", lvlm.config))}.values():
        cfg.vision_config = new.config
    return new


def swap_vision_tower(lvlm: nn.Module, clip: CLIPModel, *, image_size: int | None = None) -> dict[str, Any]:
    """Convert ``clip``'s image tower exactly and load it into ``lvlm``'s vision tower, in place; returns the record.

    ``lvlm``: a LLaVA-style model (``LlavaForConditionalGeneration``, ``LlavaNextForConditionalGeneration``) with
    a CLIP vision tower. ``image_size``: the size the new tower runs at, default the LVLM's own
    (``config.vision_config.image_size``); the position embeddings are resized when it differs from the CLIP's.
    Refuses (one-line ``ConfigError``) a tower of another width/layers/heads/patch. The LM and projector weights
    and ``vision_feature_layer`` / ``vision_feature_select_strategy`` are untouched.
    """
    owner = _tower_owner(lvlm)
    tower = owner.vision_tower
    if not isinstance(tower, HFVisionModel):
        raise ConfigError(f"the LVLM's vision tower is a {type(tower).__name__}; only CLIP towers "
                          "(CLIPVisionModel) take an open_clip CLIP tower")
    old_size = tower.config.image_size
    size = old_size if image_size is None else _check_image_size(image_size, patch=tower.config.patch_size)
    if size != old_size and getattr(lvlm.config, "image_grid_pinpoints", None):  # LLaVA-NeXT tiles at that size
        raise ConfigError(f"{type(lvlm).__name__} tiles images (image_grid_pinpoints) at its tower's "
                          f"{old_size} px; swap at that size (leave image_size unset)")
    conv = convert_clip_vision(clip, image_size=size)
    _check_fits(tower.config, conv.config, encoder=clip.name)
    rebuilt = [f for f in FOLLOWED if getattr(tower.config, f) != getattr(conv.config, f)]
    changes = {f: {"old": getattr(tower.config, f), "new": getattr(conv.config, f)} for f in rebuilt}
    if rebuilt:
        tower = _rebuild_tower(owner, lvlm, tower, conv.config, rebuilt)
    load_hf_vision(tower, conv)
    if size != old_size and hasattr(lvlm.config, "image_seq_length"):
        lvlm.config.image_seq_length = (size // conv.config.patch_size) ** 2  # patches (no CLS), as LLaVA counts
    return {
        "encoder": clip.name, "lvlm": type(lvlm).__name__,
        "tower": {"width": conv.config.hidden_size, "layers": conv.config.num_hidden_layers,
                  "heads": conv.config.num_attention_heads, "patch_size": conv.config.patch_size,
                  "mlp": conv.config.intermediate_size, "hidden_act": conv.config.hidden_act},
        "image_size": {"clip": conv.record["image_size"]["old"], "lvlm_before": old_size, "tower": size},
        "resized": conv.record["position_embedding"]["resized"],
        "position_embedding": conv.record["position_embedding"],
        "rebuilt": changes,
        "vision_feature_layer": getattr(lvlm.config, "vision_feature_layer", None),
        "vision_feature_select_strategy": getattr(lvlm.config, "vision_feature_select_strategy", None),
        "normalization": {"mean": conv.image_processor["image_mean"], "std": conv.image_processor["image_std"]},
        "image_processor": conv.image_processor, "conversion": conv.record,
        "warnings": tower_resolution(clip_size=conv.record["image_size"]["old"], lvlm_size=old_size, tower_size=size,
                                     patch_size=conv.config.patch_size),
    }


def _set_image_processor(processor: Any, record: dict[str, Any]) -> dict[str, Any]:
    """Give the processor the new tower's mean/std (and size/crop when the tower's size changed); returns the
    settings applied."""
    settings = {k: record["image_processor"][k] for k in ("image_mean", "image_std")}
    if record["image_size"]["tower"] != record["image_size"]["lvlm_before"]:
        settings.update({k: record["image_processor"][k] for k in ("size", "crop_size")})
    old = processor.image_processor
    processor.image_processor = type(old).from_dict({**old.to_dict(), **settings})
    return settings


def _load_lvlm(lvlm_path: str | Path) -> tuple[nn.Module, Any]:
    model, processor = load_hf_llava(lvlm_path, what="the LVLM")
    return model.eval(), processor


def _check_image_size(image_size: int, *, patch: int | None = None) -> int:
    """A tower size in [1, 4096] px with at most MAX_PATCHES patches (a 10^5 px tower would allocate until
    memory runs out)."""
    fix = "pick the LVLM's own size (leave --image-size out) or e.g. --image-size 336"
    check_int("image_size", image_size, low=1, high=MAX_TOWER_IMAGE_SIZE, fix=fix)
    if patch and (image_size // patch) ** 2 > MAX_PATCHES:
        raise ConfigError(f"image_size {image_size} gives {(image_size // patch) ** 2:,} patches of {patch} px, "
                          f"more than {MAX_PATCHES:,}; {fix}")
    return image_size


def _check_out_dir(out: Path, *, source: str | Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out_dir {out} is a file; pass a folder for the swapped model")
    if Path(source).exists() and out.exists() and out.resolve() == Path(source).resolve():
        raise ConfigError(f"out_dir {out} is the source LVLM's folder; write the swapped model to a new folder")
    held = [p for p in out.iterdir() if not p.name.startswith(".swap-")] if out.is_dir() else []
    if held and not overwrite:
        raise ConfigError(f"out_dir {out} is not empty; pick a new folder or pass overwrite=True (--overwrite) to "
                          f"replace the model, processor and {RECORD_NAME} files there (other files are kept)")
    if held and not (out / RECORD_NAME).is_file():  # --overwrite replaces only what a swap wrote
        raise ConfigError(f"out_dir {out} holds files but no {RECORD_NAME}, so no swap wrote it and --overwrite "
                          "will not replace them; pick a new folder")


def _move_into(tmp: Path, out: Path) -> None:
    """Move a fresh save from ``tmp`` into ``out``: stale weight files of an earlier save are removed, files of
    the same name replaced, everything else in ``out`` kept."""
    for old in out.iterdir():
        stale = any(fnmatch.fnmatch(old.name, p) for p in WEIGHT_FILES) and not (tmp / old.name).exists()
        if stale and old.is_file():
            old.unlink()
    # the record first: it marks the folder as a swap's, so a move cut short can still be replaced with overwrite
    for new in sorted(tmp.iterdir(), key=lambda p: p.name != RECORD_NAME):
        os.replace(new, out / new.name)


def swap_and_save(
    lvlm_path: str | Path, encoder: str, *, out_dir: str | Path, pretrained: str | None = None,
    image_size: int | None = None, overwrite: bool = False,
) -> Path:
    """Load an LVLM (local folder or hub id) and a CLIP (:func:`~mmrobust.models.clip.create_clip` name, tag,
    ``hf-hub:`` id or model folder), swap the tower (:func:`swap_vision_tower`), set the processor's
    normalization to the new tower's, and save model + processor + ``swap.json`` (record, sources, git sha)
    into ``out_dir``; returns it. A non-empty ``out_dir`` is refused unless ``overwrite`` (which replaces only
    the files written here)."""
    out = Path(out_dir)
    if image_size is not None:
        _check_image_size(image_size)
    _check_out_dir(out, source=lvlm_path, overwrite=overwrite)
    named = str(encoder).startswith(("hf-hub:", "local-dir:")) or Path(encoder).is_dir()
    if pretrained is None and not named:
        raise ConfigError(f"encoder {encoder!r} without pretrained weights would swap in a random tower; pass a "
                          "pretrained tag, an hf-hub: id (e.g. hf-hub:chs20/fare4-clip) or a model folder")
    clip = create_clip(str(encoder), pretrained=pretrained)
    check_convertible(clip.visual)  # before loading the LVLM (gigabytes for a 7B one)
    model, processor = _load_lvlm(lvlm_path)
    record = swap_vision_tower(model, clip, image_size=image_size)
    record["processor_settings"] = _set_image_processor(processor, record)
    ip = processor.image_processor
    record["warnings"] += normalization_mismatch(record["normalization"], {"mean": list(ip.image_mean),
                                                                           "std": list(ip.image_std)})
    record["sources"] = {"lvlm": str(lvlm_path), "encoder": str(encoder), "pretrained": pretrained,
                         "git_sha": git_sha()}
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".swap-", dir=out))  # same filesystem: the final moves are renames
    try:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        write_json(tmp / RECORD_NAME, record)
        _move_into(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
