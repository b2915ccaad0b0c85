"""Which open_clip image towers convert exactly to ``transformers.CLIPVisionModel``: the pre-LN ViT of
CLIP with a class token, and nothing the HF model lacks (attentional pooling, layer scale, patch dropout,
qk-norm, other activations). Anything else is refused with a one-line ``ConfigError`` rather than
converted approximately. :func:`deployed_warnings` gives the sanity warnings of a swapped LVLM folder."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from open_clip.transformer import PatchDropout, QuickGELU, ResidualAttentionBlock, VisionTransformer
from torch import nn

from mmrobust.errors import ConfigError, MMRobustError
from mmrobust.models.limits import one_line
from mmrobust.reports.sanity import normalization_mismatch


def activation_name(act: nn.Module) -> str | None:
    """HF ``hidden_act`` computing exactly what open_clip's activation module does, or None."""
    if type(act) is QuickGELU:  # x * sigmoid(1.702 x), the OpenAI models
        return "quick_gelu"
    if type(act) is nn.GELU and act.approximate == "none":
        return "gelu"
    return None


def layer_norms(visual: VisionTransformer) -> list[nn.Module]:
    return [m for m in visual.modules() if isinstance(m, nn.LayerNorm)]


def _block_refusal(i: int, block: nn.Module) -> str | None:
    """Why resblock ``i`` has no exact CLIPEncoderLayer counterpart, or None."""
    if type(block) is not ResidualAttentionBlock:
        return (f"resblock {i} is a {type(block).__name__} (qk_norm / scaled cosine attention / scale_* options); "
                "only plain pre-LN blocks map")
    if not (isinstance(block.ls_1, nn.Identity) and isinstance(block.ls_2, nn.Identity)):
        return f"resblock {i} has layer scale (ls_init_value); CLIPEncoderLayer has none"
    if hasattr(block, "ln_1_kv"):
        return f"resblock {i} is a cross-attention block"
    attn = block.attn
    if attn.bias_k is not None or attn.add_zero_attn or not attn._qkv_same_embed_dim or attn.in_proj_bias is None:
        return f"resblock {i} attention has extra k/v biases, zero attention, separate k/v widths or no biases"
    if attn.head_dim * attn.num_heads != attn.embed_dim:
        return f"resblock {i} has unequal head widths ({attn.embed_dim} is not {attn.num_heads} x {attn.head_dim})"
    if activation_name(block.mlp.gelu) is None:
        return (f"resblock {i} activation is {block.mlp.gelu!r}; only QuickGELU (quick_gelu) and exact nn.GELU "
                "(gelu) map; drop act_kwargs")
    return None


def _tower_refusal(visual: nn.Module) -> str | None:
    """Why this image tower has no exact CLIPVisionModel counterpart, or None."""
    if not isinstance(visual, VisionTransformer):
        return (f"the tower is a {type(visual).__name__} (timm or ResNet towers have another layout); only open_clip "
                "VisionTransformer towers map")
    if visual.attn_pool is not None:
        return "it has an attentional pooler (CoCa-style attentional_pool); CLIPVisionModel pools the class token"
    if visual.pool_type != "tok":
        return f"it pools by {visual.pool_type!r} (e.g. global average pool); CLIPVisionModel pools the class token"
    if isinstance(visual.patch_dropout, PatchDropout):
        return (f"it has patch dropout {visual.patch_dropout.prob} (CLIPVisionModel has none); build it with "
                "patch_dropout=0 (force_patch_dropout=0.0), which only changes training")
    if isinstance(visual.ln_pre, nn.Identity):
        return "it has no ln_pre (no_ln_pre); CLIPVisionModel always applies pre_layrnorm"
    if visual.proj is None:
        return "it has no output projection (proj is None, pruned head); keep the head to convert"
    if len(set(visual.image_size)) != 1 or len(set(visual.patch_size)) != 1:
        return f"image {visual.image_size} / patch {visual.patch_size} are not square; CLIPVisionConfig takes one int"
    norms = layer_norms(visual)
    if not all(n.elementwise_affine and n.bias is not None for n in norms) or len({n.eps for n in norms}) != 1:
        return "its LayerNorms differ in eps or lack affine weights; CLIPVisionConfig has one layer_norm_eps"
    acts = {activation_name(b.mlp.gelu) for b in visual.transformer.resblocks if hasattr(b, "mlp")}
    if len(acts) > 1:
        return f"its blocks mix activations {sorted(map(str, acts))}; CLIPVisionConfig has one hidden_act"
    return next(filter(None, (_block_refusal(i, b) for i, b in enumerate(visual.transformer.resblocks))), None)


def check_convertible(visual: nn.Module) -> None:
    """Refuse (one-line ``ConfigError``) an open_clip image tower the exact mapping does not cover.

    Covered: open_clip ``VisionTransformer`` with class-token pooling, ln_pre, plain pre-LN blocks, QuickGELU
    or exact GELU, learned (or fixed sin-cos) position embeddings, square images, an output projection.
    ``final_ln_after_pool`` is accepted: with class-token pooling LayerNorm acts per token, so
    ln_post(x)[:, 0] == ln_post(x[:, 0]) exactly.
    """
    reason = _tower_refusal(visual)
    if reason is not None:
        raise ConfigError(one_line(f"cannot convert this open_clip image tower to a Hugging Face CLIPVisionModel: "
                                   f"{reason}", 400))


def deployed_warnings(model_dir: str | Path, processor: Any) -> list[str]:
    """Sanity warnings of an LVLM folder written by ``mmrobust lvlm swap``: those of its ``swap.json`` (the tower's
    resolution and token count against the LVLM's) and a processor whose normalization is not the swapped tower's.
    An LVLM without ``swap.json`` (its own tower) gets none."""
    from mmrobust.jsonio import read_json
    from mmrobust.safety import ensure_regular_file

    path = Path(model_dir) / "swap.json"
    if not path.is_file():
        return []
    try:
        record = read_json(ensure_regular_file(path, "swap record"))
    except (OSError, ValueError, MMRobustError):
        return []
    found = [str(w) for w in record.get("warnings", []) if isinstance(w, str)] if isinstance(record, dict) else []
    ip = getattr(processor, "image_processor", None)
    norm = record.get("normalization") if isinstance(record, dict) else None
    if isinstance(norm, dict) and ip is not None and getattr(ip, "do_normalize", True):
        found += normalization_mismatch(norm, {"mean": list(getattr(ip, "image_mean", [])),
                                               "std": list(getattr(ip, "image_std", []))})
    return list(dict.fromkeys(found))
