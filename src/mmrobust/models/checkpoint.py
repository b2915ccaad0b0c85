"""Loading and saving CLIP weights without executing pickled code.

Our on-disk model format is the one published CLIP checkpoints on the Hugging Face hub use
(e.g. ``hf-hub:chs20/fare2-clip``): a directory with ``open_clip_config.json``
(``{"model_cfg": ..., "preprocess_cfg": ...}``) and ``open_clip_model.safetensors``, so open_clip
itself loads it as ``local-dir:PATH`` and :func:`mmrobust.models.create_clip` loads it by path.
"""
from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mmrobust.errors import ConfigError, DataError
from mmrobust.safety import ensure_regular_file

CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"
_PREFIXES = ("module.", "model.", "_orig_mod.")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from .safetensors, or .pt/.bin/.pth with ``weights_only=True`` (no code runs);
    a model directory reads its ``open_clip_model.safetensors``.

    Accepts ``{"state_dict": ...}`` wrappers (CleanCLIP, open_clip_train checkpoints) and strips
    DDP/compile/wrapper prefixes (``module.``, ``model.``, ``_orig_mod.``).
    """
    path = _checkpoint_file(Path(path))
    if path.suffix == ".safetensors":
        try:
            sd: Any = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise DataError(_damaged(path, "checkpoint", e, "re-download it or re-save it as a state dict")) from e
    else:
        sd = load_torch_file(path)
    if isinstance(sd, Mapping) and "state_dict" in sd:
        sd = sd["state_dict"]
    if not isinstance(sd, Mapping):
        raise DataError(f"checkpoint {path} holds no state dict; save model.state_dict() instead")
    return {_strip(k): v for k, v in sd.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}


def _checkpoint_file(path: Path) -> Path:
    """The weights file of ``path`` (a file, or a model directory's safetensors)."""
    if path.is_dir():
        if (path / WEIGHTS_NAME).is_file():
            return path / WEIGHTS_NAME
        raise DataError(f"checkpoint folder {path} has no {WEIGHTS_NAME}; pass a .safetensors/.pt file or a "
                        "model directory written by mmrobust")
    if not path.exists():
        raise DataError(f"checkpoint {path} not found; pass an existing .safetensors/.pt file or a model directory")
    return ensure_regular_file(path, "checkpoint")


def _first_sentence(error: BaseException) -> str:
    text = (str(error).strip().splitlines() or [""])[0]
    return text.split(". ")[0][:120]


def _damaged(path: Path, what: str, error: BaseException, fix: str) -> str:
    detail = ": ".join(t for t in (type(error).__name__, _first_sentence(error)) if t)
    return f"cannot read {what} {path}: it is truncated or not a PyTorch/safetensors file ({detail}); {fix}"


def _pickled_code(path: Path, what: str, error: BaseException, fix: str | None) -> str:
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
    fix = fix or ("if you trust it, convert it once in a trusted session: sd = torch.load(path, weights_only=False) "
                  "(sd['state_dict'] if wrapped), then safetensors.torch.save_file(sd, 'model.safetensors'), and "
                  "pass that file")
    return (f"cannot read {what} {path}: it holds pickled code ({found.group(1) if found else 'a custom class'}), "
            f"which mmrobust never runs; {fix}")


def refused_pickle(error: pickle.UnpicklingError, path: str | Path, what: str = "model weights") -> DataError:
    """The one-line refusal for a pickle that ``torch.load(weights_only=True)`` refused inside a library (e.g. a
    model folder's ``pytorch_model.bin`` read by transformers): pickled code, or a damaged file."""
    chain, e = [], error
    while e is not None and len(chain) < 8:
        chain.append(str(e))
        e = e.__cause__ or e.__context__
    text = " ".join(chain)
    if "weights only" in text.lower() or "weights_only" in text:
        return DataError(_pickled_code(Path(path), what, RuntimeError(text), None))
    return DataError(_damaged(Path(path), what, error, "re-download it or re-save it with safetensors"))


def load_torch_file(path: str | Path, *, what: str = "checkpoint",
                    fix: str = "re-download it or re-save it as a state dict (safetensors preferred)",
                    code_fix: str | None = None) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU: tensors and containers only, never pickled code.

    A pickle that needs code (``code_fix``: what to do then; default: how to convert it to safetensors), or
    a truncated / foreign file (``fix``), is a one-line DataError."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower() or "weights_only" in str(e):
            raise DataError(_pickled_code(Path(path), what, e, code_fix)) from e
        raise DataError(_damaged(Path(path), what, e, fix)) from e
    except Exception as e:  # torch raises RuntimeError, EOFError, OSError, KeyError, ... for damaged files
        raise DataError(_damaged(Path(path), what, e, fix)) from e


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
    ls, own_ls = sd.get("logit_scale"), own.get("logit_scale")
    if ls is not None and own_ls is not None and ls.shape != own_ls.shape and ls.numel() == own_ls.numel():
        sd["logit_scale"] = ls.reshape(own_ls.shape)  # () vs (1,) across open_clip versions
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
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:  # e.g. a tensor dtype that cannot be copied
        raise ConfigError(f"{source} does not fit the model ({_first_sentence(e)}); pick the model the checkpoint was trained "
                          "with or re-save its state dict") from e


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
