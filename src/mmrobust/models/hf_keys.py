"""Exact key mapping between open_clip CLIP state dicts and Hugging Face ``transformers`` CLIP ones.

Both implement the pre-LN ViT / text transformer of CLIP (Radford et al. 2021); a state dict converts by
renaming plus two reshapes: open_clip's fused attention ``in_proj`` splits into q/k/v, and the projections
``proj`` / ``text_projection`` (width, embed) are the transposed ``Linear`` weights (embed, width). Used by
:mod:`mmrobust.models.hf_clip` (loading HF ``CLIPModel`` folders, e.g. LEAF, Rocamora et al. 2025) and by
:mod:`mmrobust.lvlm.convert` (the FARE tower swap into LLaVA).

Image tower (HF keys below ``vision_model.``, plus ``visual_projection.weight``)::

    class_embedding        <-> embeddings.class_embedding
    positional_embedding   <-> embeddings.position_embedding.weight
    conv1.weight           <-> embeddings.patch_embedding.weight
    ln_pre / ln_post       <-> pre_layrnorm / post_layernorm
    transformer.resblocks.i <-> encoder.layers.i      (see _BLOCK_RENAMES; in_proj <-> q/k/v_proj)
    proj                   <-> visual_projection.weight (transposed)

Text tower (HF keys below ``text_model.``, plus ``text_projection.weight``)::

    token_embedding.weight <-> embeddings.token_embedding.weight
    positional_embedding   <-> embeddings.position_embedding.weight
    ln_final               <-> final_layer_norm
    text_projection        <-> text_projection.weight (transposed)
"""
from __future__ import annotations

import torch
from torch import Tensor

from mmrobust.errors import ConfigError

PROJECTION_KEY = "visual_projection.weight"
CORE_PREFIX = "vision_model."  # keys of CLIPVisionModelWithProjection (and of hub checkpoints)
TEXT_PREFIX = "text_model."
TEXT_PROJECTION_KEY = "text_projection.weight"
# open_clip key -> HF key (vision core, i.e. below ``vision_model.``); in_proj and proj are reshaped, not renamed.
TOP_RENAMES = {
    "class_embedding": "embeddings.class_embedding",
    "positional_embedding": "embeddings.position_embedding.weight",
    "conv1.weight": "embeddings.patch_embedding.weight",
    "ln_pre.weight": "pre_layrnorm.weight", "ln_pre.bias": "pre_layrnorm.bias",  # sic: HF's spelling
    "ln_post.weight": "post_layernorm.weight", "ln_post.bias": "post_layernorm.bias",
}
TEXT_RENAMES = {
    "token_embedding.weight": "embeddings.token_embedding.weight",
    "positional_embedding": "embeddings.position_embedding.weight",
    "ln_final.weight": "final_layer_norm.weight", "ln_final.bias": "final_layer_norm.bias",
}
BLOCK_RENAMES = {
    "ln_1": "layer_norm1", "attn.out_proj": "self_attn.out_proj", "ln_2": "layer_norm2",
    "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
}
QKV = ("q_proj", "k_proj", "v_proj")  # order of the chunks of nn.MultiheadAttention.in_proj_weight


def _blocks_to_hf(state: dict[str, Tensor], out: dict[str, Tensor], num_layers: int, *, src_root: str,
                  dst_root: str) -> None:
    """Move ``src_root``resblocks.i.* (open_clip) into ``dst_root``encoder.layers.i.* (HF), in place."""
    for i in range(num_layers):
        src, dst = f"{src_root}transformer.resblocks.{i}.", f"{dst_root}encoder.layers.{i}."
        for kind in ("weight", "bias"):  # fused (3W, W) in-projection -> q, k, v (W, W) each
            for name, part in zip(QKV, state.pop(f"{src}attn.in_proj_{kind}").chunk(3, dim=0)):
                out[f"{dst}self_attn.{name}.{kind}"] = part
            for old, new in BLOCK_RENAMES.items():
                out[f"{dst}{new}.{kind}"] = state.pop(f"{src}{old}.{kind}")


def _blocks_to_openclip(state: dict[str, Tensor], out: dict[str, Tensor], num_layers: int, *, src_root: str,
                        dst_root: str) -> None:
    """The inverse of :func:`_blocks_to_hf`: HF ``src_root``encoder.layers.i.* -> open_clip resblocks."""
    for i in range(num_layers):
        dst, src = f"{dst_root}transformer.resblocks.{i}.", f"{src_root}encoder.layers.{i}."
        for kind in ("weight", "bias"):
            out[f"{dst}attn.in_proj_{kind}"] = torch.cat([state.pop(f"{src}self_attn.{n}.{kind}") for n in QKV])
            for old, new in BLOCK_RENAMES.items():
                out[f"{dst}{old}.{kind}"] = state.pop(f"{src}{new}.{kind}")


def _done(state: dict[str, Tensor], out: dict[str, Tensor], what: str) -> dict[str, Tensor]:
    if state:
        raise ConfigError(f"{what} has tensors the mapping does not cover: {sorted(state)[:4]}; only plain CLIP "
                          "ViT / text transformer towers convert")
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def openclip_vision_to_hf(state: dict[str, Tensor], num_layers: int) -> dict[str, Tensor]:
    """open_clip image tower state (``visual.`` stripped) -> HF keys (``vision_model.*``,
    ``visual_projection.weight``). Consumes ``state``."""
    out: dict[str, Tensor] = {PROJECTION_KEY: state.pop("proj").t()}  # (width, embed) -> Linear (embed, width)
    for src, dst in TOP_RENAMES.items():
        out[CORE_PREFIX + dst] = state.pop(src)
    _blocks_to_hf(state, out, num_layers, src_root="", dst_root=CORE_PREFIX)
    return _done(state, out, "open_clip tower")


def hf_vision_to_openclip(state: dict[str, Tensor], num_layers: int) -> dict[str, Tensor]:
    """The inverse of :func:`openclip_vision_to_hf` (same keys in, exact tensors out); leaves ``state`` alone."""
    state = dict(state)
    out: dict[str, Tensor] = {"proj": state.pop(PROJECTION_KEY).t()}
    for src, dst in TOP_RENAMES.items():
        out[src] = state.pop(CORE_PREFIX + dst)
    _blocks_to_openclip(state, out, num_layers, src_root=CORE_PREFIX, dst_root="")
    state.pop(CORE_PREFIX + "embeddings.position_ids", None)  # a buffer in older transformers versions
    return _done(state, out, "Hugging Face vision state")


def hf_text_to_openclip(state: dict[str, Tensor], num_layers: int) -> dict[str, Tensor]:
    """HF ``text_model.*`` + ``text_projection.weight`` -> open_clip CLIP text keys (``token_embedding``,
    ``positional_embedding``, ``transformer.*``, ``ln_final``, ``text_projection``); leaves ``state`` alone."""
    state = dict(state)
    out: dict[str, Tensor] = {"text_projection": state.pop(TEXT_PROJECTION_KEY).t()}
    for src, dst in TEXT_RENAMES.items():
        out[src] = state.pop(TEXT_PREFIX + dst)
    _blocks_to_openclip(state, out, num_layers, src_root=TEXT_PREFIX, dst_root="")
    state.pop(TEXT_PREFIX + "embeddings.position_ids", None)
    return _done(state, out, "Hugging Face text state")
