"""Any OpenAI-compatible chat-completions server (vLLM, Ollama, SGLang, hosted APIs).

Images go inline as base64 data URLs in the first user turn (a request's earlier turns,
``GenRequest.history``, go into the ``messages`` list before its prompt); requests run on a bounded
pool of daemon threads; each attempt has a total deadline (``timeout_s``: connect, headers and body
together, so a server that trickles bytes cannot hold a request) and is retried with exponential
backoff (deterministic jitter, ``Retry-After`` honoured) on timeouts, connection errors, HTTP 408/409/429/5xx and
malformed replies. Other 4xx fail at once. Replies larger than ``max_body_bytes`` are refused.
The API key is read from an environment variable (default ``OPENAI_API_KEY``), sent only as a
bearer header, and redacted from every error message (servers echo headers in error bodies).
Closing the result iterator (Ctrl-C in the caller) cancels queued requests and cuts the ones in
flight at once; the worker threads never keep the process alive.

Example (a local vLLM server)::

    vllm serve Qwen/Qwen2-VL-2B-Instruct --port 8000
    adapter = OpenAIAdapter(model="Qwen/Qwen2-VL-2B-Instruct", base_url="http://127.0.0.1:8000/v1")
"""
from __future__ import annotations

import base64
import json
import math
import os
import queue
import random
import threading
import time
from typing import Any, Callable, Iterator, Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit

from mmrobust.errors import ConfigError, DataError
from mmrobust.models.mllm.base import GenerationParams, GenRequest, GenResult
from mmrobust.registry import MLLM_ADAPTERS
from mmrobust.models.mllm.deadline import Control, Watchdog, read_capped, watched_adapter_class
from mmrobust.models.mllm.deadline import Fatal as _Fatal, Retryable as _Retryable
from mmrobust.values import check_int, check_number
from mmrobust.safety import ensure_regular_file, redact

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
_MIME = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp", ".gif": "image/gif"}
_ERROR_CHARS = 300  # how much of a server's error body an error message keeps


def _next(done: queue.SimpleQueue) -> Any:
    """The next finished request. Waits in short slices: Ctrl-C (SIGINT) may be delivered to a worker
    thread blocked in a socket read, and Python runs its handler only when the main thread wakes, so a
    wait without a timeout could outlast a hung server."""
    while True:
        try:
            return done.get(timeout=0.1)
        except queue.Empty:
            continue

@MLLM_ADAPTERS.register("openai")
class OpenAIAdapter:
    """Chat-completions client with bounded concurrency, per-attempt deadlines and retries."""

    name = "openai"
    multi_turn = True  # a request's history goes into the messages list (base.GenRequest)

    def __init__(
        self, *, model: str, base_url: str = "http://127.0.0.1:8000/v1", api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8, timeout_s: float = 60.0, max_retries: int = 5, backoff_s: float = 1.0,
        max_backoff_s: float = 30.0, extra_body: dict[str, Any] | None = None, max_body_bytes: int = 8 << 20,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        import requests  # heavy-ish, only when this adapter is used

        self._requests = requests
        self.model = model
        self.base_url = _check_url(base_url)
        self.api_key_env = api_key_env
        self.concurrency = check_int("concurrency", concurrency, low=1, fix="e.g. concurrency=8")
        self.timeout_s = check_number("timeout_s", timeout_s, low=0, low_open=True, fix="e.g. timeout_s=60")
        self.max_retries = check_int("max_retries", max_retries, low=0, fix="0 sends each request once")
        self.backoff_s = check_number("backoff_s", backoff_s, low=0)
        self.max_backoff_s = check_number("max_backoff_s", max_backoff_s, low=0)
        self.max_body_bytes = check_int("max_body_bytes", max_body_bytes, low=1024)
        if extra_body is not None and not isinstance(extra_body, Mapping):
            raise ConfigError(f"extra_body must be a JSON object, got {type(extra_body).__name__}; "
                              'e.g. extra_body=\'{"seed": 0}\'')
        self.extra_body = dict(extra_body or {})
        self._sleep = sleep
        self._local = threading.local()

    def identity(self) -> dict[str, Any]:
        """Served model name + extra body fields. The URL is left out on purpose: the same model
        restarted on another host or port keeps its cache (use a separate cache file otherwise)."""
        return {"adapter": self.name, "model": self.model, "extra_body": self.extra_body}

    def describe(self) -> dict[str, Any]:
        """Identity plus connection settings, for the run record (no secrets: the URL loses any
        user:password part)."""
        return {**self.identity(), "base_url": _public_url(self.base_url), "api_key_env": self.api_key_env,
                "concurrency": self.concurrency, "timeout_s": self.timeout_s, "max_retries": self.max_retries}

    def secrets(self) -> tuple[str, ...]:
        """Credential values in use (the API key, a password in the URL), to redact from records."""
        found = (os.environ.get(self.api_key_env) or "", urlsplit(self.base_url).password or "")
        return tuple(s for s in found if s)

    def generate(self, requests: Sequence[GenRequest], params: GenerationParams) -> Iterator[tuple[int, GenResult]]:
        """Yield ``(index, result)`` as requests finish; closing the iterator cancels the rest."""
        todo: queue.SimpleQueue = queue.SimpleQueue()
        done: queue.SimpleQueue = queue.SimpleQueue()
        for item in enumerate(requests):
            todo.put(item)
        ctl = Control()
        for k in range(min(self.concurrency, len(requests))):  # daemons: a hung call never blocks exit
            threading.Thread(target=self._work, args=(todo, done, params, ctl), name=f"mmr-openai-{k}",
                             daemon=True).start()
        try:
            for _ in range(len(requests)):
                yield _next(done)
        finally:  # interrupted or finished: drop queued calls, cut the ones in flight now
            ctl.cancel()

    def _work(self, todo: queue.SimpleQueue, done: queue.SimpleQueue, params: GenerationParams,
              ctl: "Control") -> None:
        while not ctl.stop.is_set():
            try:
                i, req = todo.get_nowait()
            except queue.Empty:
                return
            try:
                result = self._one(req, params, ctl)
            except Exception as e:  # a bug or an odd library error: recorded for this item, never lost
                result = GenResult(error=self._clean(f"unexpected {type(e).__name__}: {e}"))
            done.put((i, result))

    def _one(self, req: GenRequest, params: GenerationParams, ctl: "Control") -> GenResult:
        start = time.monotonic()
        try:
            body = self._body(req, params)
        except _Fatal as e:
            return GenResult(error=self._clean(str(e)), attempts=0)
        last = "no attempt"
        for attempt in range(self.max_retries + 1):
            if ctl.stop.is_set():
                return GenResult(error="cancelled", attempts=attempt, latency_s=time.monotonic() - start)
            try:
                text = self._post(body, ctl)
                return GenResult(text=text, attempts=attempt + 1, latency_s=time.monotonic() - start)
            except _Retryable as e:
                last = str(e)
                if attempt < self.max_retries:
                    self._wait(self._delay(req.uid, attempt, e.retry_after), ctl)
            except _Fatal as e:
                return GenResult(error=self._clean(str(e)), attempts=attempt + 1, latency_s=time.monotonic() - start)
        return GenResult(error=self._clean(f"gave up after {self.max_retries + 1} attempts: {last}"),
                         attempts=self.max_retries + 1, latency_s=time.monotonic() - start)

    def _clean(self, message: str) -> str:
        """An error message safe to record: credentials redacted, then cut to a readable length."""
        return redact(message, self.secrets())[:2 * _ERROR_CHARS]

    def _wait(self, seconds: float, ctl: "Control") -> None:
        if self._sleep is not None:
            self._sleep(seconds)
        else:
            ctl.stop.wait(seconds)  # a cancelled run does not sit out its backoff

    def _delay(self, uid: str, attempt: int, retry_after: float | None) -> float:
        base = min(self.max_backoff_s, self.backoff_s * 2 ** attempt)
        jitter = 0.5 + 0.5 * random.Random(f"{uid}:{attempt}").random()  # deterministic, spreads retries
        delay = base * jitter
        return min(self.max_backoff_s, max(delay, retry_after or 0.0))

    def _body(self, req: GenRequest, params: GenerationParams) -> dict[str, Any]:
        try:  # a named pipe would block forever and a folder cannot be sent: refuse both
            path = ensure_regular_file(req.image_path, "image")
            data = base64.b64encode(path.read_bytes()).decode("ascii")
        except DataError as e:
            raise _Fatal(str(e)) from None
        except OSError as e:
            raise _Fatal(f"cannot read image {req.image_path} ({e.strerror or e})") from None
        url = f"data:{_MIME.get(path.suffix.lower(), 'image/png')};base64,{data}"
        body = {"model": self.model, "messages": chat_messages(req, url),
                "max_tokens": params.max_new_tokens, "temperature": params.temperature}
        if params.top_p != 1.0:
            body["top_p"] = params.top_p
        return {**body, **self.extra_body}

    def _session(self) -> Any:
        if not hasattr(self._local, "session"):
            session = self._requests.Session()
            adapter = watched_adapter_class()()
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._local.session = session
        return self._local.session

    def _post(self, body: dict[str, Any], ctl: "Control") -> str:
        """One attempt, bounded by ``timeout_s`` in total; the reply text or _Retryable/_Fatal."""
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        with Watchdog(self.timeout_s, ctl) as dog:
            status, raw, retry_after = self._exchange(body, headers, dog)
        if status in RETRY_STATUS:
            raise _Retryable(f"HTTP {status}: {_snippet(raw, self.secrets())}", retry_after)
        if status >= 400:
            raise _Fatal(f"HTTP {status}: {_snippet(raw, self.secrets())}")
        return _reply_text(raw, self.secrets())

    def _exchange(self, body: dict[str, Any], headers: dict[str, str], dog: "Watchdog"
                  ) -> tuple[int, bytes, float | None]:
        """Send ``body`` and read the whole reply (status, bytes, Retry-After) under ``dog``."""
        rq = self._requests
        try:
            resp = self._session().post(f"{self.base_url}/chat/completions", json=body, headers=headers,
                                        timeout=self.timeout_s, stream=True)
            try:
                raw = read_capped(resp, self.max_body_bytes, dog)
                return resp.status_code, raw, _retry_after(resp)
            finally:
                resp.close()
        except (rq.RequestException, OSError) as e:  # incl. a socket the watchdog shut
            dog.check()
            raise _Retryable(f"{type(e).__name__}: {e}") from None


def chat_messages(req: GenRequest, image_url: str) -> list[dict[str, Any]]:
    """The chat-completions ``messages`` of ``req``: the first user turn holds the image (``image_url``) and
    its text; later turns (a challenge's reply and pushback, ``GenRequest.history``) are plain text."""
    turns = req.conversation()
    first = [{"type": "image_url", "image_url": {"url": image_url}}, {"type": "text", "text": turns[0][1]}]
    return [{"role": "user", "content": first}, *({"role": role, "content": text} for role, text in turns[1:])]


def _check_url(url: Any) -> str:
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
        raise ConfigError(f"base_url {url!r} is not an http(s) URL; e.g. base_url=http://127.0.0.1:8000/v1")
    return url.rstrip("/")


def _public_url(url: str) -> str:
    """``url`` without a ``user:password@`` part."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=host))


def _snippet(raw: bytes, secrets: Sequence[str]) -> str:
    """The start of a server's body as text, credentials redacted *before* it is cut."""
    return redact(raw[:16 * _ERROR_CHARS].decode("utf-8", "replace"), secrets)[:_ERROR_CHARS]


def _retry_after(resp: Any) -> float | None:
    try:
        value = float(resp.headers.get("Retry-After", ""))
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _reply_text(raw: bytes, secrets: Sequence[str] = ()) -> str:
    """The assistant text of a chat-completions reply; anything else is a retryable malformed reply."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as e:  # RecursionError: absurdly nested JSON
        raise _Retryable(f"malformed reply (not JSON: {type(e).__name__}): {_snippet(raw, secrets)!r}") from None
    choices = data.get("choices") if isinstance(data, dict) else None
    first = choices[0] if isinstance(choices, list) and choices else None
    msg = first.get("message") if isinstance(first, dict) else None
    if not isinstance(msg, dict):
        raise _Retryable(f"malformed reply (no choices[0].message object): {_snippet(raw, secrets)!r}")
    content = msg.get("content")
    if isinstance(content, list):  # content parts: keep the text ones
        texts = [p.get("text") for p in content if isinstance(p, dict)]
        content = "".join(t for t in texts if isinstance(t, str)) if any(isinstance(t, str) for t in texts) else None
    if content is None:
        raise _Retryable("reply has no content")
    if not isinstance(content, str):
        raise _Retryable(f"reply content is a JSON {type(content).__name__}, not text")
    return content
