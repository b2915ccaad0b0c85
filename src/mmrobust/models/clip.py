"""CLIP models behind one wrapper that takes images in [0,1] and normalizes inside ``forward``.

Backed by open_clip (Cherti et al. 2023; Ilharco et al. 2021): any open_clip model name with a
pretrained tag, ``hf-hub:org/repo`` (e.g. ``hf-hub:chs20/fare2-clip``), a local model directory
(open_clip hub layout, as written by :func:`save_clip`), or an extra state-dict checkpoint in
open_clip / OpenAI / CleanCLIP format. ``mmrobust-tiny`` and ``mmrobust-micro`` are small configs
for the embedded synthetic world and tests.
"""
from __future__ import annotations

import json
import logging
import math
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator, Sequence

import open_clip
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from mmrobust.errors import ConfigError, DataError, MMRobustError
from mmrobust.models import checkpoint as ckpt
from mmrobust.models import hf_clip
from mmrobust.models.limits import check_model_cfg, one_line

_CONFIG_DIR = Path(__file__).parent / "configs"
open_clip.add_model_config(_CONFIG_DIR)
log = logging.getLogger(__name__)
TOKEN_CACHE_SIZE = 200_000
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")  # a folder's own Hugging Face tokenizer
DIR_WEIGHTS = (ckpt.WEIGHTS_NAME, "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin",
               "open_clip_pytorch_model.pth")  # open_clip's own preferred names, in its order


class _QuietRandomInit(logging.Filter):
    """open_clip warns on every random-init model; for our tiny configs that is the intent."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


@contextmanager
def _quiet_random_init() -> Iterator[None]:
    """Drop open_clip's random-init warning (it logs on the root logger) while one model is built."""
    quiet, root = _QuietRandomInit(), logging.getLogger()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


class CLIPModel(nn.Module):
    """A CLIP image/text encoder pair. Images in [0,1], shape (B,3,H,W); normalization happens inside.

    Example::

        model = create_clip("mmrobust-tiny")
        img = model.encode_image(torch.rand(2, 3, 32, 32), normalize=True)   # (2, 64)
        txt = model.encode_text(model.tokenize(["a photo of a star."]), normalize=True)
    """

    def __init__(self, model: nn.Module, tokenizer: Any, *, model_cfg: dict, preprocess_cfg: dict, name: str) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.model_cfg = model_cfg
        self.preprocess_cfg = preprocess_cfg
        self.name = name
        self._token_cache: dict[str, torch.Tensor] = {}
        self._checkpointed = {"visual": False, "text": False}
        mean, std = pixel_stats(preprocess_cfg, source=name)
        self.register_buffer("mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, 3, 1, 1), persistent=False)

    @property
    def visual(self) -> nn.Module:
        return self.model.visual

    @property
    def image_size(self) -> int:
        size = self.model_cfg["vision_cfg"].get("image_size", 224)
        return int(size[0] if isinstance(size, (list, tuple)) else size)

    @property
    def logit_scale(self) -> torch.Tensor:
        """exp(learned log-scale), the temperature s of the contrastive logits."""
        return self.model.logit_scale.exp()

    def normalize_pixels(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)

    def set_grad_checkpointing(self, enable: bool = True, *, visual_only: bool = False) -> None:
        """open_clip's gradient checkpointing of the transformer blocks (both towers, or the image tower only):
        activations are recomputed in backward, so memory drops for ~30% more compute; same loss and gradients.
        A checkpointed tower keeps PyTorch's attention kernel on CPU, because the recomputation in backward runs
        outside :meth:`encode_image`'s kernel choice and must pick the same kernel as the forward pass."""
        (self.model.visual if visual_only else self.model).set_grad_checkpointing(enable)
        self._checkpointed = {"visual": enable, "text": enable and not visual_only}

    def _kernel(self, tower: str, x: torch.Tensor) -> Any:
        return nullcontext() if self._checkpointed[tower] else _attention_kernel(x)

    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Image embeddings (B, D) from [0,1] images; L2-normalized if ``normalize``."""
        with self._kernel("visual", images):
            feats = self.model.encode_image(self.normalize_pixels(images))
        return F.normalize(feats, dim=-1) if normalize else feats

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Text embeddings (B, D) from token ids (see :meth:`tokenize`)."""
        with self._kernel("text", tokens):
            feats = self.model.encode_text(tokens)
        return F.normalize(feats, dim=-1) if normalize else feats

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Token ids (B, context_length) on the model's device. Captions seen before come from a
        bounded cache (BPE cleaning costs ~0.1 ms per caption, a sizeable share of a tiny model's step)."""
        texts = list(texts)
        missing = list(dict.fromkeys(t for t in texts if t not in self._token_cache))
        if missing:
            if len(self._token_cache) + len(missing) > TOKEN_CACHE_SIZE:
                self._token_cache.clear()
            self._token_cache.update(zip(missing, self.tokenizer(missing)))
        return torch.stack([self._token_cache[t] for t in texts]).to(self.mean.device)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Normalized image and text embeddings plus the logit scale."""
        return {
            "image_features": self.encode_image(images, normalize=True),
            "text_features": self.encode_text(tokens, normalize=True),
            "logit_scale": self.logit_scale,
        }

    def clamp_logit_scale(self, max_scale: float = 100.0) -> None:
        """Clamp exp(logit_scale) to at most ``max_scale`` (CLIP, Radford et al. 2021)."""
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, float(torch.log(torch.tensor(max_scale))))


def _channel_values(value: Any, key: str, source: str) -> torch.Tensor:
    """Three finite per-channel numbers (a single number is used for all three channels)."""
    vals = list(value) if isinstance(value, (list, tuple)) else [value]
    ok = len(vals) in (1, 3) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals)
    if not ok or not all(math.isfinite(v) for v in vals):
        raise ConfigError(f"preprocess_cfg {key} of {source} is {value!r}; it must be 3 finite numbers "
                          "(one per RGB channel); fix open_clip_config.json")
    return torch.tensor(vals * (3 // len(vals)), dtype=torch.float32)


def pixel_stats(preprocess_cfg: dict, *, source: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (mean, std) the model normalizes [0,1] images with; refuses a std that is not
    positive (a std of 0 divides by zero and every logit becomes inf or NaN)."""
    mean = _channel_values(preprocess_cfg.get("mean", open_clip.OPENAI_DATASET_MEAN), "mean", source)
    std = _channel_values(preprocess_cfg.get("std", open_clip.OPENAI_DATASET_STD), "std", source)
    if bool((std < 1e-3).any()):
        raise ConfigError(f"preprocess_cfg std of {source} is {std.tolist()}; each channel's std must be at least "
                          "1e-3 (0 divides by zero); fix open_clip_config.json (CLIP uses about 0.27)")
    return mean, std


def _attention_kernel(x: torch.Tensor) -> Any:
    """On CPU, the math attention kernel: on CLIP's short sequences (17 to 77 tokens) it is 10-15%
    faster per training step than the CPU flash kernel; other devices keep PyTorch's choice."""
    return sdpa_kernel(SDPBackend.MATH) if x.device.type == "cpu" else nullcontext()


def _read_dir_config(path: Path) -> dict:
    """The model config of a model directory, checked to be an open_clip config (a JSON object
    with a 'model_cfg' object and optional 'preprocess_cfg' object)."""
    file = path / ckpt.CONFIG_NAME
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{file} is not valid JSON ({one_line(e, 80)}); write it with save_clip / mmrobust "
                          "train, or fix it by hand") from None
    if not isinstance(data, dict) or not isinstance(data.get("model_cfg"), dict):
        got = f"'model_cfg' is {type(data.get('model_cfg')).__name__}" if isinstance(data, dict) else \
            f"the file holds a {type(data).__name__}"
        raise ConfigError(f"{file} is not an open_clip config (needs a JSON object with a 'model_cfg' object; "
                          f"{got}); write it with save_clip / mmrobust train")
    if not isinstance(data.get("preprocess_cfg", {}), dict):
        raise ConfigError(f"{file}: 'preprocess_cfg' must be a JSON object (mean, std, ...), not "
                          f"{type(data['preprocess_cfg']).__name__}; fix or remove it")
    return data["model_cfg"]


def dir_weights(path: str | Path) -> Path | None:
    """The weights file of a model directory (open_clip's preferred names, in its order), or None."""
    return next((Path(path) / n for n in DIR_WEIGHTS if (Path(path) / n).is_file()), None)


HF_DIR = "hf-clip-dir:"  # internal identifier of a transformers CLIPModel folder (models/hf_clip.py)


def _resolve_dir(path: Path) -> tuple[str, dict]:
    """Identifier and open_clip model config of a model folder: open_clip layout (open_clip_config.json) or a
    transformers CLIPModel (config.json of model_type "clip", e.g. LEAF's), converted exactly."""
    if ckpt.is_model_dir(path):
        return f"local-dir:{path}", _read_dir_config(path)
    data = hf_clip.hf_config(path)
    if data is not None:
        return f"{HF_DIR}{path}", hf_clip.openclip_config(data, source=str(path))
    raise ConfigError(f"{path} is not a model directory (no {ckpt.CONFIG_NAME}, and no transformers CLIP "
                      f"{hf_clip.CONFIG}); pass a directory written by mmrobust train / save_clip, a CLIPModel folder, "
                      "or an open_clip model name")


def _resolve_name(name: str) -> tuple[str, dict]:
    """open_clip identifier and its model config for a name, hub id or local directory. A hub id is fetched
    into (or found in) the Hugging Face cache and loads like the local folder it becomes."""
    if name.startswith("hf-hub:"):
        from mmrobust.models.hub import hub_model_folder

        return _resolve_dir(hub_model_folder(name[len("hf-hub:"):]))
    path = Path(name[len("local-dir:"):] if name.startswith("local-dir:") else name)
    if name.startswith("local-dir:") or path.is_dir():
        return _resolve_dir(path)
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise ConfigError(f"unknown model {name!r}; use an open_clip name (e.g. ViT-B-32, see "
                          "open_clip.list_models()), 'hf-hub:org/repo', a local model directory, or 'mmrobust-tiny'")
    return name, cfg


def check_finite(model: nn.Module, *, source: str) -> None:
    """Refuse a model with NaN or inf parameters: it would still run and report a chance-level accuracy."""
    bad = [name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:
        raise DataError(f"model {source} has non-finite (NaN/inf) weights in {len(bad)} tensor(s), e.g. {bad[0]}; "
                        "the checkpoint is corrupt or training diverged: use an earlier checkpoint")


def _build(ident: str, name: str, *, model_cfg: dict, pretrained: str | None, seed: int | None) -> nn.Module:
    """The open_clip module; a local directory's weights are loaded afterwards by :func:`_load_weights`."""
    local = ident.startswith(("local-dir:", HF_DIR))
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        try:
            if ident.startswith(HF_DIR):  # a plain CLIP of the converted config (no open_clip config file)
                return open_clip.model.CLIP(**model_cfg)
            with _quiet_random_init():
                return open_clip.create_model(ident, pretrained=pretrained, device="cpu", load_weights=not local,
                                              pretrained_text=not local)
        except (RuntimeError, ValueError, OSError, TypeError, KeyError, ZeroDivisionError, AssertionError) as e:
            fix = (f"fix {ckpt.CONFIG_NAME} in that directory" if local else
                   "check the name/tag (open_clip.list_pretrained()) and that weights are reachable")
            raise ConfigError(f"cannot build model {name!r} (pretrained={pretrained!r}): {one_line(e)}; {fix}") from e


def _dir_weights(ident: str) -> Path | dict[str, torch.Tensor] | None:
    """The weights of a model folder: open_clip layout -> its weights file; a transformers CLIPModel -> its
    state converted to open_clip keys; other identifiers -> None (open_clip loaded them)."""
    if ident.startswith("local-dir:"):
        return dir_weights(ident[len("local-dir:"):])
    if ident.startswith(HF_DIR):
        path = ident[len(HF_DIR):]
        cfg = hf_clip.openclip_config(hf_clip.hf_config(path) or {}, source=path)
        return hf_clip.hf_to_openclip_state(hf_clip.read_hf_state(path), cfg)
    return None


def _tokenizer(ident: str, model_cfg: dict) -> Any:
    """open_clip's tokenizer for the model: CLIP's BPE for a transformers CLIPModel folder; a Hugging Face
    tokenizer named in the text config (from the folder's own tokenizer files when it has them, as
    ``hf-hub:zw123/delta_clip_h14_336`` does, else by that name); otherwise open_clip's choice."""
    text = model_cfg.get("text_cfg", {})
    if ident.startswith(HF_DIR):
        return open_clip.SimpleTokenizer(context_length=text["context_length"])
    named = text.get("hf_tokenizer_name") if isinstance(text, dict) else None
    local = Path(ident[len("local-dir:"):]) if ident.startswith("local-dir:") else None
    if named and local is not None and not any((local / f).is_file() for f in TOKENIZER_FILES):
        from open_clip.tokenizer import HFTokenizer

        return HFTokenizer(named, context_length=text.get("context_length", 77), **text.get("tokenizer_kwargs", {}))
    return open_clip.get_tokenizer(ident)


def _load_weights(model: nn.Module, path: Path, *, what: str) -> None:
    """Load a state dict strictly; errors (unreadable file, other architecture) as one line."""
    try:
        ckpt.load_into(model, ckpt.read_state_dict(path), source=f"{what} {path}")
    except MMRobustError as e:
        raise type(e)(one_line(e, 400)) from e


def create_clip(
    name: str = "mmrobust-tiny", *, pretrained: str | None = None, checkpoint: str | Path | None = None,
    device: str | torch.device = "cpu", seed: int | None = 0,
) -> CLIPModel:
    """Build a CLIP: open_clip ``name`` (+ ``pretrained`` tag or file), ``hf-hub:...`` or a model directory.

    ``checkpoint`` optionally loads a state dict on top (open_clip, OpenAI or CleanCLIP format; pickles are
    read with ``weights_only=True``). Random-init weights are seeded with ``seed`` via a local generator
    scope (the global RNG state is restored afterwards). Refuses (one-line errors) configs with absurd sizes,
    a model directory without weights (unless ``checkpoint`` gives them), weights that do not fit, a
    preprocess std of 0, and NaN/inf weights.
    """
    ident, model_cfg = _resolve_name(str(name))
    check_model_cfg(model_cfg, source=str(name))
    weights = _dir_weights(ident)
    if ident.startswith("local-dir:") and weights is None and checkpoint is None:
        raise ConfigError(f"model directory {ident[len('local-dir:'):]} has a config but no weights "
                          f"({ckpt.WEIGHTS_NAME}); it would run with random weights: copy the weights there or pass "
                          "--checkpoint FILE")
    if pretrained is not None and Path(pretrained).is_file() and Path(pretrained).suffix != ".safetensors":
        ckpt.load_torch_file(pretrained, what="pretrained weights")  # open_clip would raise a raw UnpicklingError
    model = _build(ident, str(name), model_cfg=model_cfg, pretrained=pretrained, seed=seed)
    if isinstance(weights, dict):
        ckpt.load_into(model, weights, source=f"transformers CLIPModel {ident[len(HF_DIR):]}")
    elif weights is not None:
        _load_weights(model, weights, what="weights")
    if checkpoint is not None:
        _load_weights(model, Path(checkpoint), what="checkpoint")
    check_finite(model, source=str(name))
    preprocess_cfg = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
    if ident.startswith(HF_DIR):
        preprocess_cfg = hf_clip.preprocess_config(ident[len(HF_DIR):], model_cfg["vision_cfg"]["image_size"])
    wrapper = CLIPModel(model, _tokenizer(ident, model_cfg), model_cfg=model_cfg, preprocess_cfg=preprocess_cfg,
                        name=str(name))
    return wrapper.to(device).eval()


def save_clip(model: CLIPModel, out_dir: str | Path, *, extra: dict | None = None,
              state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Save as an open_clip hub-layout directory, loadable by :func:`create_clip` and open_clip ``local-dir:``.
    ``state_dict``: the open_clip weights to write instead of the model's own (e.g. with LoRA merged)."""
    pp = {k: (list(v) if isinstance(v, tuple) else v) for k, v in model.preprocess_cfg.items()}
    state = model.model.state_dict() if state_dict is None else state_dict
    return ckpt.save_model_dir(out_dir, state, model_cfg=model.model_cfg, preprocess_cfg=pp, extra=extra)


@torch.no_grad()
def zero_shot_weights(model: CLIPModel, classnames: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
    """For each class: encode every template, L2-normalize each, average, renormalize. Returns (C, D)."""
    rows = []
    for name in classnames:
        tokens = model.tokenize([t.format(name) for t in templates])
        emb = F.normalize(model.encode_text(tokens), dim=-1).mean(dim=0)
        rows.append(F.normalize(emb, dim=-1))
    return torch.stack(rows)
