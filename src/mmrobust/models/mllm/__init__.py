"""Multimodal LLM adapters behind one protocol (``base.MLLM``), picked by name.

``build_adapter("hf", model=..., options={...})``: transformers in process;
``"openai"``: any OpenAI-compatible server (vLLM, Ollama, hosted); ``"scripted"``: tests and demos.
Options are checked against the adapter's own signature, so a new adapter needs no CLI flags.
Factories import their heavy dependencies only when called.
"""
from __future__ import annotations

import importlib
import inspect
from typing import Any, Mapping

import yaml

from mmrobust.errors import ConfigError
from mmrobust.models.mllm.base import MLLM, GenerationParams, GenRequest, GenResult
from mmrobust.registry import MLLM_ADAPTERS
from mmrobust.values import parse_value


def _lazy(name: str, module: str, cls: str) -> None:
    """Register ``name`` as a factory that imports ``module.cls`` only when called."""

    def factory(**kwargs: Any) -> MLLM:
        return getattr(importlib.import_module(module), cls)(**kwargs)

    factory.__doc__ = f"{cls} from {module} (imported on first use)."
    factory.target = (module, cls)  # type: ignore[attr-defined]
    MLLM_ADAPTERS.register(name)(factory)


_lazy("hf", "mmrobust.models.mllm.hf", "HFAdapter")  # Hugging Face transformers in process
_lazy("openai", "mmrobust.models.mllm.openai", "OpenAIAdapter")  # OpenAI-compatible chat completions
_lazy("scripted", "mmrobust.models.mllm.scripted", "ScriptedAdapter")  # replies from a rule or table


def adapter_parameters(name: str) -> dict[str, inspect.Parameter]:
    """The keyword options adapter ``name`` accepts (``model`` included), from its signature."""
    obj = MLLM_ADAPTERS.get(name)
    target = getattr(obj, "target", None)
    if target is not None:
        obj = getattr(importlib.import_module(target[0]), target[1])
    params = inspect.signature(obj).parameters
    return {k: p for k, p in params.items() if k != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def _convert(name: str, key: str, value: Any, param: inspect.Parameter) -> Any:
    """A text option typed by its parameter's default (text stays text for ``str`` parameters)."""
    if not isinstance(value, str):
        return value
    default, annotation = param.default, str(param.annotation)
    if default is not inspect.Parameter.empty and default is not None:
        return parse_value(value, like=default, name=f"{name} adapter option {key}")
    if annotation.startswith("str") or param.annotation is str:
        return value
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        raise ConfigError(f"{name} adapter option {key}: cannot read {value!r}; give a number, true/false or "
                          "a JSON value") from None


def adapter_options(name: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``options`` (values may be text, as from ``--adapter-arg key=value``) checked against adapter
    ``name``'s signature and typed by its defaults; a one-line ConfigError otherwise."""
    params = adapter_parameters(name)
    opts = dict(options or {})
    unknown = sorted(set(opts) - set(params) | ({"model"} & set(opts)))
    if unknown:
        accepted = sorted(k for k in params if k != "model")
        raise ConfigError(f"adapter {name!r} has no option(s) {unknown}; it accepts {accepted} "
                          "(the model is given with --model)")
    return {k: _convert(name, k, v, params[k]) for k, v in opts.items()}


def build_adapter(name: str, *, model: str, options: Mapping[str, Any] | None = None) -> MLLM:
    """Create adapter ``name`` for ``model`` with ``options`` checked and typed (see :func:`adapter_options`).

    Example::

        build_adapter("openai", model="Qwen/Qwen2-VL-7B-Instruct", options={"base_url": "http://127.0.0.1:8000/v1"})
    """
    return MLLM_ADAPTERS.create(name, model=model, **adapter_options(name, options))


__all__ = ["MLLM", "GenerationParams", "GenRequest", "GenResult", "adapter_options", "adapter_parameters",
           "build_adapter"]
