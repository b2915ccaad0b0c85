"""Any OpenAI-compatible chat-completions server (vLLM, Ollama, SGLang, hosted APIs).

Images go inline as base64 data URLs; requests run on a bounded thread pool; each has a timeout
and is retried with exponential backoff (deterministic jitter, ``Retry-After`` honoured) on
timeouts, connection errors, HTTP 408/409/429/5xx and malformed replies. Other 4xx fail at once.
The API key is read from an environment variable (default ``OPENAI_API_KEY``), sent only as a
bearer header and never recorded.

Example (a local vLLM server)::

    vllm serve Qwen/Qwen2-VL-2B-Instruct --port 8000
    adapter = OpenAIAdapter(model="Qwen/Qwen2-VL-2B-Instruct", base_url="http://127.0.0.1:8000/v1")
"""
from __future__ import annotations

import base64
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from mmrobust.models.mllm.base import GenerationParams, GenRequest, GenResult

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
_MIME = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp", ".gif": "image/gif"}


class _Retryable(Exception):
    """A failure worth another try (carries an optional server-suggested delay)."""

    def __init__(self, msg: str, retry_after: float | None = None) -> None:
        super().__init__(msg)
        self.retry_after = retry_after


class OpenAIAdapter:
    """Chat-completions client with bounded concurrency, timeouts and retries."""

    name = "openai"

    def __init__(
        self, *, model: str, base_url: str = "http://127.0.0.1:8000/v1", api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8, timeout_s: float = 60.0, max_retries: int = 5, backoff_s: float = 1.0,
        max_backoff_s: float = 30.0, extra_body: dict[str, Any] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        import requests  # heavy-ish, only when this adapter is used

        self._requests = requests
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.concurrency = max(1, int(concurrency))
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.extra_body = dict(extra_body or {})
        self._sleep = sleep
        self._local = threading.local()

    def identity(self) -> dict[str, Any]:
        """Served model name + extra body fields. The URL is left out on purpose: the same model
        restarted on another host or port keeps its cache (use a separate cache file otherwise)."""
        return {"adapter": self.name, "model": self.model, "extra_body": self.extra_body}

    def describe(self) -> dict[str, Any]:
        """Identity plus connection settings, for the run record (no secrets)."""
        return {**self.identity(), "base_url": self.base_url, "api_key_env": self.api_key_env,
                "concurrency": self.concurrency, "timeout_s": self.timeout_s, "max_retries": self.max_retries}

    def generate(self, requests: Sequence[GenRequest], params: GenerationParams) -> Iterator[tuple[int, GenResult]]:
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="mmr-openai")
        stop = threading.Event()
        try:
            futures = {pool.submit(self._one, req, params, stop): i for i, req in enumerate(requests)}
            for fut in as_completed(futures):
                yield futures[fut], fut.result()
        finally:  # on interrupt: drop queued calls; in-flight ones end after their current attempt
            stop.set()
            pool.shutdown(wait=False, cancel_futures=True)

    def _one(self, req: GenRequest, params: GenerationParams, stop: threading.Event) -> GenResult:
        body = self._body(req, params)
        start = time.monotonic()
        last = "no attempt"
        for attempt in range(self.max_retries + 1):
            if stop.is_set():
                return GenResult(error="cancelled", attempts=attempt, latency_s=time.monotonic() - start)
            try:
                text = self._post(body)
                return GenResult(text=text, attempts=attempt + 1, latency_s=time.monotonic() - start)
            except _Retryable as e:
                last = str(e)
                if attempt < self.max_retries:
                    self._sleep(self._delay(req.uid, attempt, e.retry_after))
            except _Fatal as e:
                return GenResult(error=str(e), attempts=attempt + 1, latency_s=time.monotonic() - start)
        return GenResult(error=f"gave up after {self.max_retries + 1} attempts: {last}",
                         attempts=self.max_retries + 1, latency_s=time.monotonic() - start)

    def _delay(self, uid: str, attempt: int, retry_after: float | None) -> float:
        base = min(self.max_backoff_s, self.backoff_s * 2 ** attempt)
        jitter = 0.5 + 0.5 * random.Random(f"{uid}:{attempt}").random()  # deterministic, spreads retries
        delay = base * jitter
        return min(self.max_backoff_s, max(delay, retry_after or 0.0))

    def _body(self, req: GenRequest, params: GenerationParams) -> dict[str, Any]:
        path = Path(req.image_path)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        url = f"data:{_MIME.get(path.suffix.lower(), 'image/png')};base64,{data}"
        content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": req.prompt}]
        body = {"model": self.model, "messages": [{"role": "user", "content": content}],
                "max_tokens": params.max_new_tokens, "temperature": params.temperature}
        if params.top_p != 1.0:
            body["top_p"] = params.top_p
        return {**body, **self.extra_body}

    def _session(self):
        if not hasattr(self._local, "session"):
            self._local.session = self._requests.Session()
        return self._local.session

    def _post(self, body: dict[str, Any]) -> str:
        rq = self._requests
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        try:
            resp = self._session().post(f"{self.base_url}/chat/completions", json=body, headers=headers,
                                        timeout=self.timeout_s)
        except (rq.Timeout, rq.ConnectionError) as e:
            raise _Retryable(f"{type(e).__name__}: {e}") from e
        if resp.status_code in RETRY_STATUS:
            raise _Retryable(f"HTTP {resp.status_code}: {resp.text[:200]}", _retry_after(resp))
        if resp.status_code >= 400:
            raise _Fatal(f"HTTP {resp.status_code}: {resp.text[:300]}")
        return _reply_text(resp)


class _Fatal(Exception):
    """A failure that another try will not fix (bad request, auth, unknown model)."""


def _retry_after(resp: Any) -> float | None:
    try:
        return float(resp.headers.get("Retry-After", ""))
    except ValueError:
        return None


def _reply_text(resp: Any) -> str:
    """The assistant text of a chat-completions reply; malformed replies are retryable."""
    try:
        msg = resp.json()["choices"][0]["message"]
        content = msg["content"]
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise _Retryable(f"malformed reply ({type(e).__name__}): {resp.text[:200]!r}") from e
    if isinstance(content, list):  # content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if content is None:
        raise _Retryable("reply has no content")
    return str(content)
