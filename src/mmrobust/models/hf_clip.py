"""Hugging Face ``transformers`` ``CLIPModel`` folders (``config.json`` + ``model.safetensors``, or sharded
``model-0000i-of-0000n.safetensors`` + ``model.safetensors.index.json``) as open_clip CLIPs, exactly.

The layout LEAF publishes its robust CLIPs in (Rocamora, Schlarmann, Singh, Wu, Hein & Cevher 2025, "Robustness
in Both Domains: CLIP Needs a Robust Text Encoder": ``LEAF-CLIP/CLIP-ViT-L-rho50-k1-constrained-FARE2`` and the
ViT-H/g/bigG ones, FARE image towers with a LEAF-finetuned text tower). Those repos hold no processor files (their
README loads the processor of the base model, OpenAI's CLIP statistics for all of them), so without a
``preprocessor_config.json`` the OpenAI mean/std, bicubic resize of the shortest side + center crop are used.

Both towers map one to one onto open_clip's CLIP (:mod:`mmrobust.models.hf_keys`); what open_clip cannot
compute exactly is refused in one line: towers with different activations, an activation other than
QuickGELU / exact GELU, a LayerNorm eps other than 1e-5, a vocabulary other than CLIP's BPE (open_clip's
tokenizer is used) or an end-of-text id the argmax pooling would not find.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from mmrobust.errors import ConfigError, DataError
from mmrobust.models.checkpoint import load_torch_file
from mmrobust.models.hf_keys import hf_text_to_openclip, hf_vision_to_openclip
from mmrobust.models.limits import one_line

CONFIG = "config.json"
SAFE_WEIGHTS, SAFE_INDEX, BIN_WEIGHTS = "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"
PREPROCESSOR = "preprocessor_config.json"
CLIP_VOCAB = 49408  # open_clip's SimpleTokenizer (OpenAI BPE); its end-of-text id is the largest, 49407
OPENAI_MEAN, OPENAI_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
_ACTS = {"quick_gelu": True, "gelu": False}  # HF hidden_act -> open_clip quick_gelu flag
_PIL = {3: "bicubic", 2: "bilinear", 0: "nearest"}


def hf_config(path: str | Path) -> dict[str, Any] | None:
    """The ``config.json`` of a folder if it is a transformers CLIP (``model_type`` "clip"), else None."""
    file = Path(path) / CONFIG
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("model_type") == "clip" else None


def _clip_config(data: dict[str, Any], source: str) -> Any:
    from transformers import CLIPConfig  # the defaults of keys the file leaves out (hidden_act, image_size, ...)

    try:
        return CLIPConfig.from_dict(data)
    except (TypeError, ValueError, KeyError) as e:
        raise ConfigError(f"{source}/{CONFIG} is not a transformers CLIPConfig ({one_line(e, 120)}); pass a "
                          "CLIPModel folder (config.json + model.safetensors)") from e


def _mlp_ratio(hidden: int, intermediate: int) -> float:
    """open_clip builds int(width * mlp_ratio) hidden units: a ratio that gives exactly ``intermediate``."""
    ratio = intermediate / hidden
    return ratio if int(hidden * ratio) == intermediate else math.nextafter(ratio, math.inf)


def _refusal(v: Any, t: Any) -> str | None:
    """Why open_clip's CLIP cannot compute this HF CLIP exactly, or None."""
    if v.hidden_act not in _ACTS or t.hidden_act != v.hidden_act:
        return (f"activations {v.hidden_act!r} (image) / {t.hidden_act!r} (text): open_clip uses one of QuickGELU "
                "or exact GELU for both towers")
    if v.layer_norm_eps != 1e-5 or t.layer_norm_eps != 1e-5:
        return f"LayerNorm eps {v.layer_norm_eps} / {t.layer_norm_eps}; open_clip's CLIP uses 1e-5"
    if t.vocab_size != CLIP_VOCAB:
        return f"a text vocabulary of {t.vocab_size} (open_clip's CLIP tokenizer has {CLIP_VOCAB})"
    if t.eos_token_id not in (2, CLIP_VOCAB - 1):
        return f"eos_token_id {t.eos_token_id}: the text embedding would be pooled elsewhere than at end-of-text"
    if v.hidden_size % v.num_attention_heads or t.hidden_size % t.num_attention_heads:
        return "a width not divisible by its number of heads"
    return None


def openclip_config(data: dict[str, Any], *, source: str) -> dict[str, Any]:
    """open_clip ``model_cfg`` of a transformers CLIP ``config.json`` (as a dict), or a one-line ConfigError."""
    cfg = _clip_config(data, source)
    v, t = cfg.vision_config, cfg.text_config
    reason = _refusal(v, t)
    if reason is not None:
        raise ConfigError(one_line(f"cannot load {source} as an open_clip CLIP exactly: {reason}; load it with "
                                   "transformers instead", 400))
    return {
        "embed_dim": cfg.projection_dim, "quick_gelu": _ACTS[v.hidden_act],
        "vision_cfg": {"image_size": v.image_size, "layers": v.num_hidden_layers, "width": v.hidden_size,
                       "head_width": v.hidden_size // v.num_attention_heads, "patch_size": v.patch_size,
                       "mlp_ratio": _mlp_ratio(v.hidden_size, v.intermediate_size)},
        "text_cfg": {"context_length": t.max_position_embeddings, "vocab_size": t.vocab_size, "width": t.hidden_size,
                     "heads": t.num_attention_heads, "layers": t.num_hidden_layers,
                     "mlp_ratio": _mlp_ratio(t.hidden_size, t.intermediate_size)},
    }


def preprocess_config(path: str | Path, image_size: int) -> dict[str, Any]:
    """open_clip ``preprocess_cfg`` from the folder's ``preprocessor_config.json``, else OpenAI CLIP's (what LEAF's
    README pairs its models with)."""
    file = Path(path) / PREPROCESSOR
    try:
        pre = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pre = None
    if not isinstance(pre, dict):
        return {"size": image_size, "mean": OPENAI_MEAN, "std": OPENAI_STD, "interpolation": "bicubic",
                "resize_mode": "shortest"}
    return {"size": image_size, "mean": list(pre.get("image_mean", OPENAI_MEAN)),
            "std": list(pre.get("image_std", OPENAI_STD)), "interpolation": _PIL.get(pre.get("resample", 3), "bicubic"),
            "resize_mode": "shortest" if pre.get("do_center_crop", True) else "squash"}


def _shards(path: Path) -> list[Path]:
    """The weight files of the folder: one safetensors, the shards its index names, or pytorch_model.bin."""
    if (path / SAFE_WEIGHTS).is_file():
        return [path / SAFE_WEIGHTS]
    if (path / SAFE_INDEX).is_file():
        try:
            names = sorted(set(json.loads((path / SAFE_INDEX).read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise DataError(f"{path / SAFE_INDEX} is not a safetensors index ({one_line(e, 80)}); "
                            "re-download it") from e
        missing = [n for n in names if "/" in n or not (path / n).is_file()]
        if missing:
            raise DataError(f"{path / SAFE_INDEX} names shards that are not in {path} (e.g. {missing[0]}); download "
                            "every model-*.safetensors shard")
        return [path / n for n in names]
    if (path / BIN_WEIGHTS).is_file():
        return [path / BIN_WEIGHTS]
    raise ConfigError(f"{path} has a CLIP {CONFIG} but no weights ({SAFE_WEIGHTS}, {SAFE_INDEX} + shards or "
                      f"{BIN_WEIGHTS}); download them into the folder")


def read_hf_state(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a CLIPModel folder (sharded safetensors merged; .bin read with ``weights_only=True``)."""
    state: dict[str, torch.Tensor] = {}
    for file in _shards(Path(path)):
        try:
            part = load_file(str(file)) if file.suffix == ".safetensors" else load_torch_file(file, what="weights")
        except (OSError, ValueError, RuntimeError) as e:
            raise DataError(f"cannot read {file} ({one_line(e, 100)}); re-download it") from e
        state.update({k: v for k, v in dict(part).items() if isinstance(v, torch.Tensor)})
    return state


def hf_to_openclip_state(state: dict[str, torch.Tensor], model_cfg: dict[str, Any]) -> dict[str, torch.Tensor]:
    """An HF CLIPModel state dict in open_clip CLIP keys (``visual.*``, text tower, ``logit_scale``)."""
    vision = {k: v for k, v in state.items() if k.startswith("vision_model.") or k == "visual_projection.weight"}
    text = {k: v for k, v in state.items() if k.startswith("text_model.") or k == "text_projection.weight"}
    rest = sorted(set(state) - set(vision) - set(text) - {"logit_scale"})
    if rest or "logit_scale" not in state:
        raise ConfigError(f"CLIPModel state has keys no CLIP tower holds ({rest[:3]}) or no logit_scale; pass a "
                          "transformers CLIPModel checkpoint")
    out = {f"visual.{k}": v for k, v in hf_vision_to_openclip(vision, model_cfg["vision_cfg"]["layers"]).items()}
    out.update(hf_text_to_openclip(text, model_cfg["text_cfg"]["layers"]))
    out["logit_scale"] = state["logit_scale"].detach().clone()
    return out
