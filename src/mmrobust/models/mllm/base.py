"""One protocol for multimodal LLMs: requests in, (index, result) pairs out as they finish.

An adapter answers image + text requests. ``generate`` yields results as soon as each is known
(so a caller can cache it before the next one arrives and a kill loses at most the calls in
flight). A failed request yields ``GenResult(error=...)``; adapters never invent a reply.

A request may continue a conversation: ``history`` holds the earlier turns, (role, text) pairs that start
with the user's question (the image goes with it) and alternate with the assistant's replies; the
request's ``prompt`` is then the next user turn (the challenge protocol's pushback, ``eval.challenge``).
Adapters that send the history declare ``multi_turn = True``; the harness refuses to send a history to
any other adapter, so a second turn is never silently asked as a first.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Mapping, Protocol, Sequence, runtime_checkable

from mmrobust.errors import ConfigError
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


Turn = tuple[str, str]  # (role, text), role "user" or "assistant"
ROLES = ("user", "assistant")


def check_history(history: Any) -> tuple[Turn, ...]:
    """``history`` as a tuple of (role, text) turns that alternate user / assistant, starting with the user
    and ending with the assistant (so the next turn is the user's); a one-line ConfigError otherwise."""
    if not isinstance(history, (list, tuple)):
        raise ConfigError(f"a conversation history is a sequence of (role, text) turns, got {type(history).__name__}")
    turns = tuple(tuple(t) if isinstance(t, (list, tuple)) else t for t in history)
    for k, turn in enumerate(turns):
        ok = isinstance(turn, tuple) and len(turn) == 2 and turn[0] == ROLES[k % 2] and isinstance(turn[1], str)
        if not ok:
            raise ConfigError(f"conversation turn {k} is {turn!r:.80}; a history alternates ('user', text) and "
                              "('assistant', text) pairs, starting with the user")
    if len(turns) % 2:
        raise ConfigError("a conversation history must end with the assistant's reply (the next turn is the user's)")
    return turns


@dataclass(frozen=True)
class GenRequest:
    """One question: the image file and the text that follows it. ``meta`` is for logging and
    scripted adapters only (item id and question type; never the ground truth). ``history``: the
    earlier turns of the conversation (see the module docstring); empty for a single question."""

    uid: str
    prompt: str
    image_path: str
    meta: Mapping[str, Any] = field(default_factory=dict)
    history: tuple[Turn, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "history", check_history(self.history))

    def conversation(self) -> list[Turn]:
        """Every turn to send, in order: the history, then ``("user", prompt)``. The image belongs to the
        first turn."""
        return [*self.history, ("user", self.prompt)]


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
    # harness removes from anything it records (see ``secrets_of``); ``multi_turn = True`` when the adapter
    # sends a request's ``history`` (see ``takes_history``).

    def generate(self, requests: Sequence[GenRequest], params: GenerationParams) -> Iterator[tuple[int, GenResult]]:
        """Yield ``(index into requests, result)`` for every request, in completion order."""
        ...


def secrets_of(adapter: Any) -> tuple[str, ...]:
    """The credential values ``adapter`` declares through an optional ``secrets()`` method (else none)."""
    fn = getattr(adapter, "secrets", None)
    return tuple(s for s in (fn() if callable(fn) else ()) if isinstance(s, str) and s)


def takes_history(adapter: Any) -> bool:
    """Whether ``adapter`` sends a request's conversation ``history`` (its ``multi_turn`` attribute)."""
    return getattr(adapter, "multi_turn", False) is True
