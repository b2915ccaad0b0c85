"""One protocol for multimodal LLMs: requests in, (index, result) pairs out as they finish.

An adapter answers image + text requests. ``generate`` yields results as soon as each is known
(so a caller can cache it before the next one arrives and a kill loses at most the calls in
flight). A failed request yields ``GenResult(error=...)``; adapters never invent a reply.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Mapping, Protocol, Sequence, runtime_checkable

from mmrobust.errors import ConfigError


@dataclass(frozen=True)
class GenerationParams:
    """Decoding settings; ``temperature == 0`` means greedy (the MMR default)."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) \
                or self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}; "
                              "e.g. --max-new-tokens 64")
        if not _finite(self.temperature) or self.temperature < 0:
            raise ConfigError(f"temperature must be a finite number >= 0 (0 = greedy), got {self.temperature!r}")
        if not _finite(self.top_p) or not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p!r}; 1 keeps every token")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _finite(value: Any) -> bool:
    """A real, finite number (bools and text are not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_number(name: str, value: Any, *, low: float, low_open: bool = False, fix: str = "") -> float:
    """``value`` as a float if it is finite and ``>= low`` (``> low`` with ``low_open``); a one-line
    ConfigError naming ``name`` and ``fix`` otherwise. Shared by the adapters' constructors."""
    if not _finite(value) or value < low or (low_open and value == low):
        bound = f"{'>' if low_open else '>='} {low:g}"
        raise ConfigError(f"{name} must be a finite number {bound}, got {value!r}" + (f"; {fix}" if fix else ""))
    return float(value)


def check_int(name: str, value: Any, *, low: int, fix: str = "") -> int:
    """``value`` if it is an integer ``>= low``; a one-line ConfigError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}" + (f"; {fix}" if fix else ""))
    return value


@dataclass(frozen=True)
class GenRequest:
    """One question: the image file and the text that follows it. ``meta`` is for logging and
    scripted adapters only (item id and question type; never the ground truth)."""

    uid: str
    prompt: str
    image_path: str
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GenResult:
    """A reply (``text``) or a failure (``error``), never both."""

    text: str | None = None
    error: str | None = None
    attempts: int = 1
    latency_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and self.text is not None


@runtime_checkable
class MLLM(Protocol):
    """What the MMR runner needs from a model."""

    name: str

    def identity(self) -> dict[str, Any]:
        """What determines this model's replies (model id, revision, dtype...), for the cache key.
        Never secrets."""
        ...

    # Optional: ``secrets() -> Sequence[str]``, credential values in use (e.g. an API key), which the
    # harness removes from anything it records (see ``secrets_of``).

    def generate(self, requests: Sequence[GenRequest], params: GenerationParams) -> Iterator[tuple[int, GenResult]]:
        """Yield ``(index into requests, result)`` for every request, in completion order."""
        ...


def secrets_of(adapter: Any) -> tuple[str, ...]:
    """The credential values ``adapter`` declares through an optional ``secrets()`` method (else none)."""
    fn = getattr(adapter, "secrets", None)
    return tuple(s for s in (fn() if callable(fn) else ()) if isinstance(s, str) and s)
