"""Multimodal LLM adapters behind one protocol (``base.MLLM``), picked by name.

``MLLM_ADAPTERS.create("hf", model=..., ...)``: transformers in process;
``"openai"``: any OpenAI-compatible server (vLLM, Ollama, hosted); ``"scripted"``: tests and demos.
Factories import their heavy dependencies only when called.
"""
from __future__ import annotations

from typing import Any

from mmrobust.models.mllm.base import MLLM, GenerationParams, GenRequest, GenResult
from mmrobust.registry import MLLM_ADAPTERS


@MLLM_ADAPTERS.register("hf")
def make_hf(**kwargs: Any) -> MLLM:
    """Hugging Face transformers model in process (see ``hf.HFAdapter``)."""
    from mmrobust.models.mllm.hf import HFAdapter

    return HFAdapter(**kwargs)


@MLLM_ADAPTERS.register("openai")
def make_openai(**kwargs: Any) -> MLLM:
    """OpenAI-compatible chat-completions server (see ``openai.OpenAIAdapter``)."""
    from mmrobust.models.mllm.openai import OpenAIAdapter

    return OpenAIAdapter(**kwargs)


@MLLM_ADAPTERS.register("scripted")
def make_scripted(**kwargs: Any) -> MLLM:
    """Replies from a rule or table (see ``scripted.ScriptedAdapter``)."""
    from mmrobust.models.mllm.scripted import ScriptedAdapter

    return ScriptedAdapter(**kwargs)


__all__ = ["MLLM", "GenerationParams", "GenRequest", "GenResult", "make_hf", "make_openai", "make_scripted"]
