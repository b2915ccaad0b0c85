"""Any Hugging Face image-text-to-text model in process (LLaVA, LLaVA-NeXT, Qwen2-VL, Idefics...).

Loads ``AutoProcessor`` + ``AutoModelForImageTextToText`` from a hub id or a local folder, builds
each prompt with the processor's chat template (image first, then the text; a request's earlier turns,
``GenRequest.history``, before it), and decodes batches
greedily by default with left padding. ``torch``/``transformers`` are imported only here.

Example::

    adapter = HFAdapter(model="llava-hf/llava-1.5-7b-hf", device="cuda", dtype="bfloat16", batch_size=8)
"""
from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from typing import Any, Iterator, Sequence

from mmrobust.errors import ConfigError, DataError
from mmrobust.models.checkpoint import refused_pickle
from mmrobust.models.limits import one_line
from mmrobust.models.mllm.base import GenerationParams, GenRequest, GenResult
from mmrobust.registry import MLLM_ADAPTERS
from mmrobust.values import check_int
from mmrobust.safety import ensure_regular_file

_DTYPES = ("auto", "float32", "float16", "bfloat16")


def load_hf_llava(path: str | Path, *, dtype: Any = None, revision: str | None = None,
                  trust_remote_code: bool = False, attn_implementation: str | None = None,
                  what: str = "HF model") -> tuple[Any, Any]:
    """(model, processor) of an image-text-to-text model (LLaVA-1.5 / LLaVA-NeXT style) from a folder or hub
    id: ``AutoModelForImageTextToText`` + ``AutoProcessor``, weights in ``dtype`` (a torch dtype; None: as
    saved). The one loader of the ``hf`` adapter, ``lvlm swap`` / ``lvlm eval`` and ``mllm-sft``. A weights
    file holding pickled code is refused; a missing or unreadable model is a one-line ConfigError naming
    ``what`` it was meant to be."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    kw: dict[str, Any] = {"revision": revision, "trust_remote_code": trust_remote_code}
    mkw = dict(kw, **({"dtype": dtype} if dtype is not None else {}),
               **({"attn_implementation": attn_implementation} if attn_implementation else {}))
    try:
        processor = AutoProcessor.from_pretrained(str(path), **kw)
        model = AutoModelForImageTextToText.from_pretrained(str(path), **mkw)
    except pickle.UnpicklingError as e:  # a pytorch_model.bin holding code: refused by weights_only=True
        raise refused_pickle(e, path, f"{what} weights") from None
    except (OSError, ValueError, KeyError) as e:  # missing folder / repo, offline hub, unknown architecture
        raise ConfigError(f"cannot load {what} {str(path)!r} ({type(e).__name__}: {one_line(e, 160)}); give a "
                          "hub id or a folder with config.json and processor files (an image-text-to-text model "
                          "such as llava-hf/llava-1.5-7b-hf)") from None
    return model, processor


@MLLM_ADAPTERS.register("hf")
class HFAdapter:
    """In-process transformers model; ``device``: auto|cpu|cuda|cuda:N|mps; ``dtype``: auto|float32|float16|bfloat16."""

    name = "hf"
    multi_turn = True  # a request's history goes into the chat template (base.GenRequest)

    def __init__(
        self, *, model: str, revision: str | None = None, device: str = "auto", dtype: str = "auto",
        batch_size: int = 8, trust_remote_code: bool = False, attn_implementation: str | None = None,
    ) -> None:
        import torch

        if dtype not in _DTYPES:
            raise ConfigError(f"unknown dtype {dtype!r}; choose one of: {', '.join(_DTYPES)}")
        self.batch_size = check_int("batch_size", batch_size, low=1, fix="e.g. batch_size=8")
        self._torch = torch
        self.model_id, self.revision = model, revision
        self.device = _pick_device(torch, device)
        self.dtype = _pick_dtype(torch, dtype, self.device)
        model_, self.processor = load_hf_llava(model, dtype=self.dtype, revision=revision,
                                               trust_remote_code=trust_remote_code,
                                               attn_implementation=attn_implementation)
        self.model = model_.to(self.device).eval()
        tok = getattr(self.processor, "tokenizer", None)
        if tok is not None:
            tok.padding_side = "left"  # decoder-only generation continues from the right edge
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token

    def identity(self) -> dict[str, Any]:
        ident = {"adapter": self.name, "model": self.model_id, "revision": self.revision,
                 "dtype": str(self.dtype).replace("torch.", "")}
        if Path(self.model_id).is_dir():  # a local folder can be rebuilt in place: key on its contents
            ident["fingerprint"] = _folder_fingerprint(Path(self.model_id))
        return ident

    def generate(self, requests: Sequence[GenRequest], params: GenerationParams) -> Iterator[tuple[int, GenResult]]:
        tried_model = False  # has any request with a readable image reached the model yet?
        for start in range(0, len(requests), self.batch_size):
            idx = list(range(start, min(start + self.batch_size, len(requests))))
            images = {i: _load_image(requests[i].image_path) for i in idx}  # bad images: per-item errors
            ok = [i for i in idx if not isinstance(images[i], GenResult)]
            results = {i: images[i] for i in idx if i not in ok}
            try:
                texts = self._run([requests[i] for i in ok], [images[i] for i in ok], params) if ok else []
                results.update({i: GenResult(text=t) for i, t in zip(ok, texts)})
            except Exception as batch_error:  # e.g. OOM on a big batch: retry one by one
                results.update({i: self._single(requests[i], images[i], params) for i in ok})
                if not tried_model and all(not results[i].ok for i in ok):  # nothing works: setup, not items
                    raise ConfigError(f"the model failed on every request of its first batch "
                                      f"({type(batch_error).__name__}: {batch_error}); check the model, "
                                      "processor and device") from batch_error
            tried_model = tried_model or bool(ok)
            yield from ((i, results[i]) for i in idx)

    def _single(self, req: GenRequest, image: Any, params: GenerationParams) -> GenResult:
        try:
            return GenResult(text=self._run([req], [image], params)[0])
        except Exception as e:  # recorded per item, never turned into an answer
            return GenResult(error=f"{type(e).__name__}: {e}")

    def _run(self, reqs: Sequence[GenRequest], images: list[Any], params: GenerationParams) -> list[str]:
        torch = self._torch
        prompts = [self.processor.apply_chat_template(chat_messages(r), add_generation_prompt=True, tokenize=False)
                   for r in reqs]
        inputs = self.processor(images=images, text=prompts, padding=True, return_tensors="pt").to(self.device)
        if "pixel_values" in inputs and inputs["pixel_values"].is_floating_point():
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        gen: dict[str, Any] = {"max_new_tokens": params.max_new_tokens, "do_sample": params.temperature > 0}
        if params.temperature > 0:
            gen.update(temperature=params.temperature, top_p=params.top_p)
        with torch.inference_mode():
            out = self.model.generate(**inputs, **gen)
        new = out[:, inputs["input_ids"].shape[1]:]  # (B, new tokens)
        return [t.strip() for t in self.processor.batch_decode(new, skip_special_tokens=True)]


def chat_messages(req: GenRequest) -> list[dict[str, Any]]:
    """The chat-template messages of ``req``: every turn of its conversation, the image first in the first one
    (a single question: ``[{"role": "user", "content": [image, text]}]``)."""
    messages = []
    for k, (role, text) in enumerate(req.conversation()):
        content: list[dict[str, Any]] = [{"type": "text", "text": text}]
        messages.append({"role": role, "content": [{"type": "image"}, *content] if k == 0 else content})
    return messages


def _load_image(path: str) -> Any:
    """The RGB image at ``path``, or a GenResult error (missing, a pipe or folder, not an image)."""
    from PIL import Image

    try:
        with Image.open(ensure_regular_file(path, "image")) as im:
            return im.convert("RGB")
    except DataError as e:
        return GenResult(error=str(e))
    except Exception as e:  # PIL raises several types for a broken file
        return GenResult(error=f"cannot read image {path} ({type(e).__name__}: {e})")


def _folder_fingerprint(folder: Path, head_bytes: int = 1 << 20) -> str:
    """Hash of a model folder's JSON files and the first MiB of each weight file (cheap, content-based)."""
    h = hashlib.sha256()
    for f in sorted(folder.iterdir()):
        if f.suffix in {".json", ".safetensors", ".bin", ".jinja"} and f.is_file():
            h.update(f.name.encode())
            with f.open("rb") as fh:
                h.update(fh.read(head_bytes))
    return h.hexdigest()[:16]


def _pick_device(torch: Any, device: str) -> str:
    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _pick_dtype(torch: Any, dtype: str, device: str) -> Any:
    if dtype == "auto":
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)
