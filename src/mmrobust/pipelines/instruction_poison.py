"""`mmrobust poison --instructions` as library functions: the model-facing part of instruction-data poisoning.

The data layer (:mod:`mmrobust.data.poison.instructions`) takes a vision tower as a plain callable
``encode_image((B,3,H,W) in [0,1]) -> (B, ...)``; this module loads one by name:

- a CLIP (open_clip name with ``pretrained``, ``hf-hub:org/repo`` or a model directory): its image embedding
  (``encode_image``, unnormalized; the model normalizes pixels inside);
- a LLaVA-family folder (``config.json`` with a ``vision_config``) or hub id ``org/name``: the features its
  projector reads, ``hidden_states[vision_feature_layer]`` with its ``vision_feature_select_strategy`` (what
  Shadowcast's reference code optimizes for LLaVA-1.5), after the processor's normalization.

Example::

    rec = run_instruction_poison(instructions="train.jsonl", out_dir="runs/shadowcast", rate=0.05, seed=0,
                                 attack=ShadowcastAttack(target="star", concept="circle", steps=500),
                                 encoder=EncoderSpec("runs/llava"))
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from mmrobust.data.poison.instructions import (InstructionAttack, InstructionPoisonRecord, attack_from,
                                              poison_instructions)
from mmrobust.errors import ConfigError

Tensor = torch.Tensor


@dataclass(frozen=True)
class EncoderSpec:
    """Which vision tower Shadowcast optimizes against: a CLIP or a LLaVA-family model (see the module docstring)."""

    model: str
    pretrained: str | None = None
    device: str = "cpu"


@dataclass(frozen=True)
class VisionEncoder:
    """A loaded tower: ``encode`` ((B,3,H,W) in [0,1] -> (B, ...) features), its input size, and what it is."""

    encode: Callable[[Tensor], Tensor]
    image_size: int
    info: dict[str, Any] = field(default_factory=dict)


def _is_llava(name: str) -> bool:
    """A folder whose config.json has a ``vision_config``, or a hub id ``org/name`` that is no local path (a hub
    CLIP is spelled ``hf-hub:org/name``)."""
    path = Path(name).expanduser()
    if not path.exists():
        return name.count("/") == 1 and not name.startswith(("hf-hub:", "local-dir:", ".", "/", "~"))
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "vision_config" in config


def _frozen(module: torch.nn.Module) -> torch.nn.Module:
    """Eval mode, no parameter gradients: the tower is only differentiated with respect to its input."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def _llava_encoder(spec: EncoderSpec) -> VisionEncoder:
    from mmrobust.lvlm.attack import normalizer, tower_size
    from mmrobust.lvlm.convert import vision_feature
    from mmrobust.models.mllm.hf import load_hf_llava

    model, processor = load_hf_llava(spec.model, dtype=torch.float32, what="LLaVA encoder")
    owners = (getattr(model, "model", None), model)  # transformers >= 4.52 keeps the tower in .model
    tower = next((t for t in (getattr(o, "vision_tower", None) for o in owners) if isinstance(t, torch.nn.Module)),
                 None)
    if tower is None:
        raise ConfigError(f"{spec.model!r} has no vision_tower; give a LLaVA-family model or a CLIP")
    tower = _frozen(tower.to(spec.device))
    layer = model.config.vision_feature_layer
    layer = layer if isinstance(layer, int) else -2
    select = model.config.vision_feature_select_strategy

    def encode(x: Tensor) -> Tensor:
        x = x.to(spec.device)
        return vision_feature(tower, normalizer(processor, x)(x), layer=layer, select=select)

    info = {"model": spec.model, "kind": "llava", "vision_feature_layer": layer, "select": select}
    return VisionEncoder(encode, tower_size(model), info)


def load_encoder(spec: EncoderSpec) -> VisionEncoder:
    """The tower ``spec`` names, frozen, as a callable on [0,1] images (see the module docstring)."""
    if _is_llava(spec.model):
        return _llava_encoder(spec)
    from mmrobust.pipelines.audit import load_audit_model

    clip = load_audit_model(spec.model, {"pretrained": spec.pretrained}, spec.device)
    _frozen(clip)

    def encode(x: Tensor) -> Tensor:
        return clip.encode_image(x.to(spec.device), normalize=False)

    info = {"model": spec.model, "pretrained": spec.pretrained, "kind": "clip", "features": "image embedding"}
    return VisionEncoder(encode, int(clip.image_size), info)


def run_instruction_poison(*, instructions: str | Path, out_dir: str | Path,
                           attack: InstructionAttack | dict[str, Any], rate: float | None = None,
                           count: int | None = None, seed: int = 0, image_size: int | None = None,
                           encoder: EncoderSpec | None = None, overwrite: bool = False,
                           allow_outside: bool = False) -> InstructionPoisonRecord:
    """:func:`mmrobust.data.poison.instructions.poison_instructions`, with the vision tower loaded from
    ``encoder`` for attacks that need one (Shadowcast), at the tower's input size."""
    atk = attack_from(attack)
    if not atk.needs_encoder():
        if encoder is not None:
            raise ConfigError("--encoder is only for attacks that optimize against a vision tower (shadowcast); "
                              "drop it")
        return poison_instructions(instructions=instructions, out_dir=out_dir, attack=atk, rate=rate, count=count,
                                   seed=seed, image_size=image_size, overwrite=overwrite, allow_outside=allow_outside)
    if encoder is None:
        raise ConfigError("the shadowcast attack optimizes images against a vision tower: pass --encoder MODEL "
                          "(a CLIP, or the LLaVA folder to be finetuned)")
    enc = load_encoder(encoder)
    if image_size is not None and image_size != enc.image_size:
        raise ConfigError(f"the encoder takes {enc.image_size} px images; drop --image-size or set it to "
                          f"{enc.image_size}")
    return poison_instructions(instructions=instructions, out_dir=out_dir, attack=atk, rate=rate, count=count,
                               seed=seed, image_size=enc.image_size, encode_image=enc.encode, encoder=enc.info,
                               overwrite=overwrite, allow_outside=allow_outside)
