"""A scripted MLLM for tests and demos: replies come from a rule, a table or a function.

``model`` picks the rule: ``constant:<text>`` (always that reply), ``random`` (a seeded random
letter per request: chance level), ``file:<path.json>`` (a table ``{"id|POS": "B", ...}`` keyed by
request uid). ``responses`` (mapping or callable) overrides ``model`` from Python.

Example::

    adapter = ScriptedAdapter(model="random", seed=0)
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Callable, Collection, Iterator, Mapping, Sequence

from mmrobust.errors import ConfigError, DataError
from mmrobust.models.mllm.base import GenerationParams, GenRequest, GenResult
from mmrobust.registry import MLLM_ADAPTERS
from mmrobust.safety import ensure_regular_file


@MLLM_ADAPTERS.register("scripted")
class ScriptedAdapter:
    """Deterministic stand-in for a model; records the uids it was asked in ``calls``."""

    name = "scripted"
    multi_turn = True  # a rule given as a function sees the request's history (GenRequest.history)

    def __init__(
        self, *, model: str = "random", responses: Mapping[str, str] | Callable[[GenRequest], str] | None = None,
        seed: int = 0, errors: Collection[str] = (),
    ) -> None:
        self.model = model
        self.seed = seed
        self.errors = set(errors)
        self.calls: list[str] = []
        self._reply = self._rule(model, responses)

    def _rule(self, model: str, responses: Any) -> Callable[[GenRequest], str | None]:
        if callable(responses):
            return responses
        if responses is not None:
            return lambda r: responses.get(r.uid)
        kind, _, arg = model.partition(":")
        if kind == "constant":
            return lambda r: arg
        if kind == "random":
            return lambda r: random.Random(f"{self.seed}:{r.uid}").choice("ABCD")
        if kind == "file":
            table = _read_table(arg)
            return lambda r: table.get(r.uid)
        raise ConfigError(f"unknown scripted model {model!r}; use constant:<text>, random or file:<path.json>")

    def identity(self) -> dict[str, Any]:
        return {"adapter": self.name, "model": self.model, "seed": self.seed}

    def generate(self, requests: Sequence[GenRequest], params: GenerationParams) -> Iterator[tuple[int, GenResult]]:
        for i, req in enumerate(requests):
            self.calls.append(req.uid)
            if req.uid in self.errors:
                yield i, GenResult(error="scripted error")
                continue
            text = self._reply(req)
            if text is None:
                yield i, GenResult(error=f"no scripted reply for {req.uid}")
            elif not isinstance(text, str):
                yield i, GenResult(error=f"scripted reply for {req.uid} is a {type(text).__name__}, not text")
            else:
                yield i, GenResult(text=text)


def _read_table(path: str) -> dict[str, Any]:
    """The ``{"uid": "reply"}`` table in ``path``; a one-line ConfigError when it is anything else."""
    try:
        table = json.loads(ensure_regular_file(Path(path), "scripted replies file").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError, DataError) as e:
        raise ConfigError(f"scripted replies file {path!r} unreadable ({e}); give a JSON object uid -> reply") from None
    if not isinstance(table, dict):
        raise ConfigError(f"scripted replies file {path!r} holds a JSON {type(table).__name__}; give a JSON object "
                          "uid -> reply")
    return table
