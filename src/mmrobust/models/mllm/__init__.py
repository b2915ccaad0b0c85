"""Multimodal LLM adapters behind one protocol (``base.MLLM``), picked by name.

``build_adapter("hf", model=..., options={...})``: transformers in process;
``"openai"``: any OpenAI-compatible server (vLLM, Ollama, hosted); ``"scripted"``: tests and demos.
Options are checked against the adapter's own signature, so a new adapter needs no CLI flags. Each adapter
module registers its class; this package imports every module in it, so a new adapter is one new file. The
adapters import their heavy dependencies (torch, transformers) only when built.
"""
from __future__ import annotations

from typing import Any, Mapping

from mmrobust.models.mllm.base import MLLM, GenerationParams, GenRequest, GenResult, takes_history
from mmrobust.registry import MLLM_ADAPTERS, import_modules


def adapter_options(name: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``options`` (values may be text, as from ``--adapter-arg key=value``) checked against adapter
    ``name``'s signature and typed by its defaults; a one-line ConfigError otherwise."""
    return MLLM_ADAPTERS.typed(name, dict(options or {}), skip=("model",),
                               hint=" (the model is given with --model)")


def build_adapter(name: str, *, model: str, options: Mapping[str, Any] | None = None) -> MLLM:
    """Create adapter ``name`` for ``model`` with ``options`` checked and typed (see :func:`adapter_options`).

    Example::

        build_adapter("openai", model="Qwen/Qwen2-VL-7B-Instruct", options={"base_url": "http://127.0.0.1:8000/v1"})
    """
    return MLLM_ADAPTERS.create(name, model=model, **adapter_options(name, options))


__all__ = ["MLLM", "GenerationParams", "GenRequest", "GenResult", "adapter_options", "build_adapter", "takes_history"]

import_modules(__name__, __path__)  # each adapter module registers itself
