"""One protocol for multimodal LLMs: requests in, (index, result) pairs out as they finish.

An adapter answers image + text requests. ``generate`` yields results as soon as each is known
(so a caller can cache it before the next one arrives and a kill loses at most the calls in
flight). A failed request yields ``GenResult(error=...)``; adapters never invent a reply.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Mapping, Protocol, Sequence, runtime_checkable

from mmrobust.models.limits import MAX_NEW_TOKENS
from mmrobust.values import check_int, check_number


@dataclass(frozen=True)
class GenerationParams:
    """Decoding settings; ``temperature == 0`` means greedy (the MMR default)."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        check_int("max_new_tokens", self.max_new_tokens, low=1, high=MAX_NEW_TOKENS, fix="e.g. --max-new-tokens 64")
        check_number("temperature", self.temperature, low=0, fix="0 = greedy")
        check_number("top_p", self.top_p, low=0, high=1, low_open=True, fix="1 keeps every token")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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
