"""The model a card evaluates: which kind it is (an open_clip CLIP or a LLaVA-family LVLM), its identity
(what the card's resumable sections are keyed by), and loading it once, on first need, with a one-line error
when it does not load.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from mmrobust.errors import ConfigError, MMRobustError
from mmrobust.pipelines.stages import stamp

# HF ``model_type`` values of the LLaVA family (AutoModelForImageTextToText with a vision tower + projector)
LLAVA_TYPES = ("llava", "llava_next", "llava_next_video", "llava_onevision", "vipllava")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def _hf_model_type(folder: Path) -> str | None:
    try:
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return str(cfg.get("model_type")) if isinstance(cfg, dict) and cfg.get("model_type") else None


def _folder_kind(folder: Path) -> str:
    if (folder / "open_clip_config.json").is_file():
        return "clip"
    model_type = _hf_model_type(folder)
    if model_type in LLAVA_TYPES:
        return "lvlm"
    if model_type is not None:
        raise ConfigError(f"{folder} is an HF model of type {model_type!r}, not a LLaVA-family LVLM "
                          f"({', '.join(LLAVA_TYPES)}); pass --kind lvlm to try it anyway")
    raise ConfigError(f"{folder} holds neither open_clip_config.json (a CLIP, as mmrobust train exports) nor an HF "
                      "config.json (an LVLM); give a model folder, an open_clip name with --pretrained, "
                      "hf-hub:org/repo or an HF hub id")


def detect_kind(model: str, *, kind: str = "auto", pretrained: str | None = None) -> str:
    """``"clip"`` or ``"lvlm"``: ``kind`` when given, else read off the model (an open_clip folder, name,
    ``hf-hub:`` id or ``--pretrained`` tag: a CLIP; an HF folder whose ``model_type`` is LLaVA-family, or a hub
    id naming llava: an LVLM). A model it cannot place is a one-line ConfigError asking for ``--kind``."""
    if kind != "auto":
        return kind
    path = Path(model).expanduser()
    if path.is_dir():
        return _folder_kind(path)
    if pretrained or model.startswith(("hf-hub:", "local-dir:", "mmrobust-")):
        return "clip"
    looks_like_path = model.startswith(("/", ".", "~")) or os.sep * 2 in model or model.count("/") > 1
    if looks_like_path or path.exists():
        raise ConfigError(f"model {model!r} not found (no such folder); give a model folder, an open_clip name with "
                          "--pretrained, hf-hub:org/repo or an HF hub id")
    if "/" in model:  # an HF hub id, org/name
        if "llava" in model.lower():
            return "lvlm"
        raise ConfigError(f"model {model!r} is no folder here, and as an HF hub id it does not say whether it is a "
                          "CLIP or an LVLM; fix the path, or pass --kind clip (with hf-hub:) or --kind lvlm")
    import open_clip

    if model in open_clip.list_models():
        return "clip"
    raise ConfigError(f"cannot tell what model {model!r} is; give a model folder, an open_clip name with "
                      "--pretrained, hf-hub:org/repo, an HF hub id, or --kind clip|lvlm")


def model_identity(model: str, pretrained: str | None = None) -> dict[str, Any]:
    """What a card section's results depend on: the name, the pretrained tag, and for a local folder the size
    and mtime of each weight and JSON file in it (a retrained or replaced model reruns every section)."""
    ident: dict[str, Any] = {"model": model, "pretrained": pretrained}
    path = Path(model).expanduser()
    if path.is_dir():
        ident["files"] = {f.name: stamp(f) for f in sorted(path.iterdir())
                          if f.is_file() and f.suffix in (*WEIGHT_SUFFIXES, ".json")}
    if pretrained and Path(pretrained).is_file():
        ident["pretrained_file"] = stamp(pretrained)
    return ident


def load_or_explain(what: str, model: str, load: Callable[[], Any]) -> Any:
    """``load()``, with any failure (a missing folder, truncated weights, an unknown architecture) as a one-line
    error that says the finished sections are kept."""
    try:
        return load()
    except MMRobustError as e:
        raise type(e)(f"{what} {model!r} failed to load: {e}; finished sections are kept, rerun once it "
                      "loads") from None
    except (RuntimeError, ValueError, OSError, KeyError, TypeError, AttributeError) as e:
        text = " ".join(str(e).split())[:200]
        raise ConfigError(f"{what} {model!r} failed to load ({type(e).__name__}: {text}); check its files; "
                          "finished sections are kept, rerun once it loads") from None
