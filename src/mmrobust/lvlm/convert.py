"""Exact weight conversion between open_clip ViT image towers and ``transformers.CLIPVisionModel``.

The building block for FARE's use in LVLMs (Schlarmann et al. 2024): swap a robust CLIP image tower
(FARE/TeCoA, trained in open_clip) into LLaVA, whose tower is a Hugging Face ``CLIPVisionModel``, with no
retraining. Both sides implement the same pre-LN ViT of CLIP (Radford et al. 2021); the conversion is a
renaming plus two reshapes (open_clip's fused ``in_proj`` splits into q/k/v, ``proj`` is transposed into
``visual_projection``), so outputs agree to float rounding. Towers the mapping does not cover are refused
with one-line ``ConfigError``s instead of converted approximately.

Layer correspondence (HF ``hidden_states`` has ``num_layers + 1`` entries)::

    hidden_states[0]     = ln_pre(patch + class embeddings + positions)   (input of resblock 0)
    hidden_states[i + 1] = output of transformer.resblocks[i]             (residual stream, no LN)
    pooler_output        = ln_post(class token of the last block)
    image_embeds         = pooler_output @ proj                           (= open_clip encode_image)

LLaVA reads ``hidden_states[-2]`` (``vision_feature_layer``), not the pooled output; see
:func:`vision_feature`. LLaVA-1.5 runs its tower at 336 px while published robust towers are 224 px: pass
``image_size=336`` and the position embeddings are resized explicitly (:func:`resize_position_embedding`)
and the record says so.

Example::

    clip = create_clip("hf-hub:chs20/fare2-clip")
    conv = convert_clip_vision(clip, image_size=336)
    tower = hf_vision_model(conv)                      # CLIPVisionModelWithProjection, eval mode
    feats = vision_feature(tower, pixel_values)        # (B, 576, 1024): what LLaVA's projector sees
"""
from __future__ import annotations

import math
import copy
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
from open_clip.transformer import VisionTransformer
from torch import Tensor, nn
from transformers import CLIPVisionConfig, CLIPVisionModel, CLIPVisionModelWithProjection, PreTrainedModel

from mmrobust.errors import ConfigError
from mmrobust.lvlm.checks import activation_name, check_convertible, layer_norms
from mmrobust.models.clip import CLIPModel, pixel_stats
from mmrobust.models.hf_keys import CORE_PREFIX, PROJECTION_KEY, hf_vision_to_openclip, openclip_vision_to_hf
from mmrobust.models.limits import one_line
from mmrobust.models.resize import resize_position_embedding

HFVisionModel = CLIPVisionModel | CLIPVisionModelWithProjection
_RESAMPLE = {"bicubic": 3, "bilinear": 2, "nearest": 0}  # PIL codes, CLIPImageProcessor's ``resample``
_SELECT = {"default": slice(1, None), "full": slice(None)}  # LLaVA's vision_feature_select_strategy


@dataclass(frozen=True)
class VisionConversion:
    """One converted tower: ``CLIPVisionConfig``, the state dict in ``CLIPVisionModelWithProjection`` keys
    (``vision_model.*`` and ``visual_projection.weight``), ``CLIPImageProcessor`` settings and a record of
    what was done (JSON-ready; save it next to the converted model)."""

    config: CLIPVisionConfig
    state_dict: dict[str, Tensor]
    image_processor: dict[str, Any]
    record: dict[str, Any]


def hf_vision_config(visual: VisionTransformer, *, image_size: int | None = None) -> CLIPVisionConfig:
    """The ``CLIPVisionConfig`` of an open_clip ViT tower (``image_size`` overrides its own)."""
    check_convertible(visual)
    block = visual.transformer.resblocks[0]
    return CLIPVisionConfig(
        hidden_size=visual.conv1.out_channels, intermediate_size=block.mlp.c_fc.out_features,
        projection_dim=visual.proj.shape[1], num_hidden_layers=len(visual.transformer.resblocks),
        num_attention_heads=block.attn.num_heads, num_channels=visual.conv1.in_channels,
        image_size=image_size or visual.image_size[0], patch_size=visual.patch_size[0],
        hidden_act=activation_name(block.mlp.gelu), layer_norm_eps=layer_norms(visual)[0].eps,
        attention_dropout=0.0,
    )


def image_processor_settings(
    *, image_mean: list[float] | tuple[float, ...], image_std: list[float] | tuple[float, ...], image_size: int,
    interpolation: Literal["bicubic", "bilinear", "nearest"] = "bicubic",
    resize_mode: Literal["shortest", "squash"] = "shortest",
) -> dict[str, Any]:
    """``CLIPImageProcessor(**settings)`` for a swapped-in tower: open_clip's eval resize mode, size and
    interpolation, [0,1] and the tower's mean/std (robust towers use the OpenAI statistics, other open_clip
    towers do not).

    Equal to open_clip's preprocess (to float rounding) on images already at ``image_size`` x ``image_size``,
    e.g. after :func:`openclip_resize_crop`: the processor then leaves their size alone and only normalizes.
    On other sizes no settings can match it: Hugging Face's center crop starts at ``(margin) // 2`` where
    torchvision's (open_clip's) starts at ``round(margin / 2)`` (half to even), one pixel apart when the
    margin is 3 mod 4, and its resize is torch's antialiased bicubic on the uint8 tensor, not PIL's."""
    mean, std = pixel_stats({"mean": list(image_mean), "std": list(image_std)}, source="the converted tower")
    if interpolation not in _RESAMPLE:
        raise ConfigError(f"interpolation {interpolation!r} has no CLIPImageProcessor resample; use one of "
                          f"{sorted(_RESAMPLE)}")
    sizes = {"shortest": {"shortest_edge": image_size}, "squash": {"height": image_size, "width": image_size}}
    if resize_mode not in sizes:
        raise ConfigError(f"open_clip resize_mode {resize_mode!r} (letterbox padding) has no CLIPImageProcessor "
                          "equivalent; use 'shortest' (resize + center crop, CLIP's) or 'squash'")
    return {
        "do_resize": True, "size": sizes[resize_mode], "resample": _RESAMPLE[interpolation],
        "do_center_crop": resize_mode == "shortest", "crop_size": {"height": image_size, "width": image_size},
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": mean.tolist(), "image_std": std.tolist(), "do_convert_rgb": True,
    }


def openclip_resize_crop(image: Any, *, image_size: int,
                         interpolation: Literal["bicubic", "bilinear", "nearest"] = "bicubic",
                         resize_mode: Literal["shortest", "squash"] = "shortest") -> Any:
    """open_clip's eval resize (+ center crop) of a PIL image, with the torchvision transforms open_clip uses:
    the shortest side to ``image_size`` then a centered ``image_size`` square (crop offset
    ``round(margin / 2)``), or a squash to ``image_size`` x ``image_size``. Feed the result to a processor with
    :func:`image_processor_settings` and the swapped tower sees exactly its open_clip input (the processor's own
    crop would floor the offset; see there).

    Example::

        >>> pixels = processor(images=openclip_resize_crop(img, image_size=336), text=prompt)["pixel_values"]
    """
    from torchvision.transforms import CenterCrop, InterpolationMode, Resize

    if interpolation not in _RESAMPLE:
        raise ConfigError(f"interpolation {interpolation!r} is not one of {sorted(_RESAMPLE)}")
    mode = InterpolationMode(interpolation)
    if resize_mode == "squash":
        return Resize((image_size, image_size), interpolation=mode)(image)
    if resize_mode != "shortest":
        raise ConfigError(f"resize_mode {resize_mode!r} is not 'shortest' or 'squash'")
    return CenterCrop(image_size)(Resize(image_size, interpolation=mode)(image))


def _target_size(visual: VisionTransformer, image_size: int | None) -> int:
    """The image size the converted tower runs at; another size must be a whole number of patches."""
    own, patch = visual.image_size[0], visual.patch_size[0]
    if image_size is None or image_size == own:
        return own
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < patch or image_size % patch:
        raise ConfigError(f"image_size {image_size!r} is not a positive multiple of the patch size {patch}; pick "
                          f"e.g. {patch * max(1, round(own / patch))} (LLaVA-1.5: 336 = 24 x 14)")
    return image_size


def openclip_to_hf_vision(
    visual: nn.Module, *, image_mean: list[float] | tuple[float, ...], image_std: list[float] | tuple[float, ...],
    image_size: int | None = None, antialias: bool = True,
    interpolation: Literal["bicubic", "bilinear", "nearest"] = "bicubic",
    resize_mode: Literal["shortest", "squash"] = "shortest",
) -> VisionConversion:
    """Convert an open_clip ViT image tower (e.g. a FARE/TeCoA tower, Schlarmann et al. 2024) into a
    ``CLIPVisionModelWithProjection`` state, exactly (see the module docstring for the layer map).

    ``image_mean``/``image_std``: the tower's preprocess normalization (into ``image_processor``).
    ``image_size``: run the tower at another size (LLaVA-1.5: 336 for a 224 tower); the position embeddings
    are resized by :func:`resize_position_embedding` and ``record["position_embedding"]`` says how.
    Refuses towers the mapping does not cover (:func:`check_convertible`).
    """
    check_convertible(visual)
    assert isinstance(visual, VisionTransformer)  # for type checkers; check_convertible refused the rest
    size, patch = _target_size(visual, image_size), visual.patch_size[0]
    state = openclip_vision_to_hf(dict(visual.state_dict()), len(visual.transformer.resblocks))
    key = CORE_PREFIX + "embeddings.position_embedding.weight"
    old_grid, new_grid = math.isqrt(state[key].shape[0] - 1), size // patch
    state[key] = resize_position_embedding(state[key], new_grid, antialias=antialias)
    config = hf_vision_config(visual, image_size=size)
    resized = {"resized": True, "old_grid": old_grid, "new_grid": new_grid, "method": "bicubic",
               "align_corners": False, "antialias": antialias, "class_token": "kept"}
    record = {
        "source": "open_clip VisionTransformer", "target": "transformers CLIPVisionModelWithProjection",
        "hidden_act": config.hidden_act, "layer_norm_eps": config.layer_norm_eps,
        "num_layers": config.num_hidden_layers, "width": config.hidden_size, "heads": config.num_attention_heads,
        "patch_size": patch, "image_size": {"old": visual.image_size[0], "new": size},
        "position_embedding": resized if new_grid != old_grid else {"resized": False, "grid": old_grid},
        "final_ln_after_pool": bool(visual.final_ln_after_pool),
    }
    processor = image_processor_settings(image_mean=image_mean, image_std=image_std, image_size=size,
                                         interpolation=interpolation, resize_mode=resize_mode)
    return VisionConversion(config=config, state_dict=state, image_processor=processor, record=record)


def convert_clip_vision(clip: CLIPModel, *, image_size: int | None = None, antialias: bool = True) -> VisionConversion:
    """:func:`openclip_to_hf_vision` of a :class:`~mmrobust.models.clip.CLIPModel`'s image tower, with its own
    preprocess mean/std, interpolation and resize mode."""
    pre = clip.preprocess_cfg
    conv = openclip_to_hf_vision(
        clip.visual, image_mean=clip.mean.flatten().tolist(), image_std=clip.std.flatten().tolist(),
        image_size=image_size, antialias=antialias, interpolation=pre.get("interpolation", "bicubic"),
        resize_mode=pre.get("resize_mode", "shortest"),
    )
    return replace(conv, record={**conv.record, "source_model": clip.name})


_MATCHED = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_channels",
            "image_size", "patch_size", "hidden_act", "layer_norm_eps")


def _check_config_match(have: CLIPVisionConfig, want: CLIPVisionConfig, *, what: str, projection: bool) -> None:
    """Refuse loading weights into a tower whose architecture differs (one line naming each field)."""
    fields = _MATCHED + (("projection_dim",) if projection else ())
    diff = [f"{f} {getattr(have, f)!r} vs {getattr(want, f)!r}" for f in fields if getattr(have, f) != getattr(want, f)]
    if diff:
        raise ConfigError(one_line(f"{what}: the towers differ ({'; '.join(diff)}); build the target from the "
                                   "converted config (or convert with image_size= to match the target's size)", 400))


def load_hf_vision(hf_model: PreTrainedModel, conv: VisionConversion) -> PreTrainedModel:
    """Load a conversion into an existing ``CLIPVisionModel(WithProjection)`` in place (e.g. LLaVA's
    ``vision_tower``: the FARE swap) and return it; a model without ``visual_projection`` skips the head."""
    projection = hasattr(hf_model, "visual_projection")
    _check_config_match(hf_model.config, conv.config, what="cannot load the converted tower", projection=projection)
    core = getattr(hf_model, "vision_model", hf_model)  # transformers 5 CLIPVisionModel has no vision_model
    state = {k[len(CORE_PREFIX):]: v for k, v in conv.state_dict.items() if k.startswith(CORE_PREFIX)}
    try:
        core.load_state_dict(state, strict=True)
        if projection:
            hf_model.visual_projection.load_state_dict({"weight": conv.state_dict[PROJECTION_KEY]}, strict=True)
    except RuntimeError as e:
        raise ConfigError(f"cannot load the converted tower: {one_line(e, 300)}") from e
    return hf_model


def hf_vision_model(conv: VisionConversion, *, projection: bool = True) -> PreTrainedModel:
    """A ready ``CLIPVisionModelWithProjection`` (or ``CLIPVisionModel``, ``projection=False``) in eval mode.
    Its throwaway random init runs in a forked RNG scope (the global RNG state is left as it was)."""
    cls = CLIPVisionModelWithProjection if projection else CLIPVisionModel
    with torch.random.fork_rng(devices=[]):
        model = cls(copy.deepcopy(conv.config))  # the model may set fields (attention backend) on its config
    return load_hf_vision(model, conv).eval()


def hf_to_openclip_vision(hf_model: PreTrainedModel, visual: nn.Module, *, keep_proj: bool = False) -> nn.Module:
    """Load a ``CLIPVisionModel(WithProjection)`` into an open_clip ``VisionTransformer`` of the same
    architecture, in place (like ``load_state_dict``), and return it: the inverse of
    :func:`openclip_to_hf_vision` (Radford et al. 2021 ViT on both sides). A ``CLIPVisionModel`` has no
    projection: pass ``keep_proj=True`` to keep ``visual.proj`` as it is."""
    check_convertible(visual)
    projection = hasattr(hf_model, "visual_projection")
    if not (projection or keep_proj):
        raise ConfigError(f"{type(hf_model).__name__} has no visual_projection for open_clip's proj; pass a "
                          "CLIPVisionModelWithProjection, or keep_proj=True to keep the tower's own proj")
    _check_config_match(hf_model.config, hf_vision_config(visual), what="cannot load the HF tower into open_clip",
                        projection=projection)
    core = getattr(hf_model, "vision_model", hf_model)
    state = {CORE_PREFIX + k: v for k, v in core.state_dict().items()}
    state[PROJECTION_KEY] = hf_model.visual_projection.weight if projection else visual.proj.t()
    try:
        visual.load_state_dict(hf_vision_to_openclip(state, len(visual.transformer.resblocks)), strict=True)
    except RuntimeError as e:
        raise ConfigError(f"cannot load the HF tower into open_clip: {one_line(e, 300)}") from e
    return visual


def vision_feature(
    hf_model: PreTrainedModel, pixel_values: Tensor, *, layer: int = -2,
    select: Literal["default", "full"] = "default",
) -> Tensor:
    """The image features LLaVA feeds its projector: ``hidden_states[layer]`` (``vision_feature_layer``,
    penultimate by default, before any LayerNorm), not the pooled output; ``select="default"`` drops the class
    token as LLaVA's ``vision_feature_select_strategy`` does, ``"full"`` keeps it. (B, tokens, width)."""
    depth = hf_model.config.num_hidden_layers
    if isinstance(layer, bool) or not isinstance(layer, int) or not -(depth + 1) <= layer <= depth:
        raise ConfigError(f"layer {layer!r} is not a hidden state index of a {depth}-layer tower (0 = after "
                          f"pre_layrnorm, {depth} or -1 = last block, -2 = LLaVA's penultimate)")
    if select not in _SELECT:
        raise ConfigError(f"select {select!r} is not a LLaVA vision_feature_select_strategy; use 'default' or 'full'")
    out = hf_model(pixel_values=pixel_values, output_hidden_states=True)
    return out.hidden_states[layer][:, _SELECT[select]]
