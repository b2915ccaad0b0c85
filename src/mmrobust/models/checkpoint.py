"""Loading and saving CLIP weights without executing pickled code.

Our on-disk model format is the one published CLIP checkpoints on the Hugging Face hub use
(e.g. ``hf-hub:chs20/fare2-clip``): a directory with ``open_clip_config.json``
(``{"model_cfg": ..., "preprocess_cfg": ...}``) and ``open_clip_model.safetensors``, so open_clip
itself loads it as ``local-dir:PATH`` and :func:`mmrobust.models.create_clip` loads it by path.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from safetensors.torch import load_file, save_file

from mmrobust.errors import ConfigError, DataError

CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"
_PREFIXES = ("module.", "model.", "_orig_mod.")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from .safetensors, or .pt/.bin/.pth with ``weights_only=True`` (no code runs).

    Accepts ``{"state_dict": ...}`` wrappers (CleanCLIP, open_clip_train checkpoints) and strips
    DDP/compile/wrapper prefixes (``module.``, ``model.``, ``_orig_mod.``).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint {path} not found; pass an existing .safetensors/.pt file or a model directory")
    try:
        if path.suffix == ".safetensors":
            sd: Any = load_file(str(path), device="cpu")
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file or a pickle that needs code execution
        raise DataError(f"cannot read checkpoint {path} ({type(e).__name__}: {str(e)[:120]}); "
                        "re-save it as a plain state dict (safetensors preferred)") from e
    if isinstance(sd, Mapping) and "state_dict" in sd:
        sd = sd["state_dict"]
    if not isinstance(sd, Mapping):
        raise DataError(f"checkpoint {path} holds no state dict; save model.state_dict() instead")
    return {_strip(k): v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in _PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p):], True
    return key


def load_into(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str = "checkpoint") -> None:
    """Load a (stripped) open_clip/OpenAI-format state dict strictly, with a readable error on mismatch."""
    sd = dict(state_dict)
    own = model.state_dict()
    if "logit_scale" in sd and "logit_scale" in own and sd["logit_scale"].shape != own["logit_scale"].shape:
        sd["logit_scale"] = sd["logit_scale"].reshape(own["logit_scale"].shape)
    for k in ("input_resolution", "context_length", "vocab_size"):
        sd.pop(k, None)
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    bad_shape = [k for k in own if k in sd and own[k].shape != sd[k].shape]
    if missing or unexpected or bad_shape:
        raise ConfigError(
            f"{source} does not fit the model architecture: {len(missing)} missing keys (e.g. {missing[:2]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:2]}), {len(bad_shape)} with other shapes "
            f"(e.g. {bad_shape[:2]}); pick the model name the checkpoint was trained with"
        )
    model.load_state_dict(sd, strict=True)


def save_model_dir(out_dir: str | Path, state_dict: Mapping[str, torch.Tensor], *, model_cfg: dict,
                   preprocess_cfg: dict, extra: dict | None = None) -> Path:
    """Write ``open_clip_config.json`` + ``open_clip_model.safetensors`` (hub layout) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    tmp = out / (WEIGHTS_NAME + ".tmp")
    save_file(tensors, str(tmp))
    tmp.replace(out / WEIGHTS_NAME)
    cfg = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}
    if extra:
        cfg["mmrobust"] = extra
    (out / CONFIG_NAME).write_text(json.dumps(cfg, indent=2) + "\n")
    return out


HEAD_NAME = "classifier_head.safetensors"


def save_head(out_dir: str | Path, weight: torch.Tensor) -> Path:
    """Save a linear classifier head (C, D), scale folded in, beside a model directory's weights
    (the directory's config lists the class names it was trained for)."""
    path = Path(out_dir) / HEAD_NAME
    save_file({"weight": weight.detach().cpu().contiguous()}, str(path))
    return path


def load_head(model_dir: str | Path | None, classnames: Sequence[str]) -> torch.Tensor | None:
    """The linear head saved beside a supervised-finetuned model, or None when there is none.

    Refuses a head trained for other classes (names and order must match the evaluation's)."""
    head = Path(model_dir) / HEAD_NAME if model_dir else None
    if head is None or not head.is_file():
        return None
    saved = json.loads((Path(model_dir) / CONFIG_NAME).read_text()).get("mmrobust", {})
    if list(saved.get("classnames", [])) != list(classnames):
        raise ConfigError(f"{head} was trained for classes {saved.get('classnames', [])[:4]}..., not the "
                          "evaluation's classes.json (same names, same order); evaluate with that class file")
    return load_file(str(head))["weight"]


def is_model_dir(path: str | Path) -> bool:
    return (Path(path) / CONFIG_NAME).is_file()
