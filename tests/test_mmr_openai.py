"""The ``openai`` adapter against a local flaky chat-completions server on 127.0.0.1.

The server fails 30% of attempts (deterministically seeded per prompt and attempt): read timeouts,
HTTP 500s and malformed JSON. Runs must finish with every item answered exactly once in the cache,
and an interrupted (or killed) run must resume without asking again for cached items.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import pytest

from mmrobust.eval.mmr import RunSettings, load_mmr, run_mmr
from mmrobust.world.mmr import generate_mmr_world
from mmrobust.cli.main import main
from mmrobust.models.mllm import GenerationParams
from mmrobust.models.mllm.openai import OpenAIAdapter

TIMEOUT_S = 1.0  # client read timeout; "timeout" failures sleep longer than this


def reply_for(prompt: str) -> str:
    """The server's deterministic answer to a prompt (a letter, sometimes chatty)."""
    h = int(hashlib.sha256(prompt.encode()).hexdigest(), 16)
    letter = "ABCD"[h % 4]
    return letter if h % 3 else f"The answer is {letter}."


def flaky(rate: float = 0.3, seed: int = 0) -> Callable[[str, int], str]:
    """Outcome of attempt ``n`` at ``prompt``: ok, timeout, 500 or malformed."""

    def policy(prompt: str, n: int) -> str:
        u = random.Random(f"{seed}:{prompt}:{n}").random()
        return ("timeout", "500", "malformed")[int(u / rate * 3)] if u < rate else "ok"

    return policy


class FakeServer:
    """Threaded chat-completions server recording every hit as (prompt, outcome)."""

    def __init__(self, policy: Callable[[str, int], str], ok_delay_s: float = 0.0) -> None:
        self.policy, self.ok_delay_s = policy, ok_delay_s
        self.hits: list[tuple[str, str]] = []
        self.auth: set[str] = set()
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def prompts_hit(self, since: int = 0) -> Counter:
        with self.lock:
            return Counter(p for p, _ in self.hits[since:])

    def n_ok(self) -> int:
        with self.lock:
            return sum(o == "ok" for _, o in self.hits)

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                content = body["messages"][0]["content"]
                assert content[0]["image_url"]["url"].startswith("data:image/png;base64,")
                prompt = content[1]["text"]
                with server.lock:
                    n = sum(1 for p, _ in server.hits if p == prompt)
                    outcome = server.policy(prompt, n)
                    server.hits.append((prompt, outcome))
                    server.auth.add(self.headers.get("Authorization", ""))
                try:
                    self._respond(outcome, prompt)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout): expected

            def _respond(self, outcome: str, prompt: str) -> None:
                if outcome == "timeout":
                    time.sleep(TIMEOUT_S * 1.5)
                if outcome == "ok":
                    time.sleep(server.ok_delay_s)
                status, payload = {
                    "500": (500, b'{"error": "boom"}'),
                    "400": (400, b'{"error": "bad request"}'),
                    "malformed": (200, b'{"choices": [{"message": '),
                }.get(outcome, (200, json.dumps({"choices": [{"message": {"role": "assistant",
                                                  "content": reply_for(prompt)}}]}).encode()))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler

    def __enter__(self) -> "FakeServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mmr-world")
    generate_mmr_world(root, pairs_per_category=6, seed=0, image_size=32)  # 24 pairs, 48 questions
    return root


def _adapter(url: str, concurrency: int = 4) -> OpenAIAdapter:
    return OpenAIAdapter(model="fake-vlm", base_url=url, api_key_env="MMR_TEST_KEY", concurrency=concurrency,
                         timeout_s=TIMEOUT_S, max_retries=8, backoff_s=0.01, max_backoff_s=0.05)


def _cache_keys(path: Path) -> Counter:
    return Counter(json.loads(line)["key"] for line in path.read_text().splitlines() if line.strip())


def _settings() -> RunSettings:
    return RunSettings(n_boot=0, params=GenerationParams(max_new_tokens=8))


def test_flaky_server_run_answers_every_item_exactly_once(world: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMR_TEST_KEY", "sk-test-secret")
    data = load_mmr(world)
    with FakeServer(flaky()) as srv:
        record = run_mmr(data, _adapter(srv.url), out_dir=tmp_path / "run", settings=_settings())
    outcomes = Counter(o for _, o in srv.hits)
    assert outcomes["ok"] >= 48  # (more only if a slow machine timed out a good reply)
    assert min(outcomes["timeout"], outcomes["500"], outcomes["malformed"]) >= 1, outcomes
    assert 0.15 < 1 - outcomes["ok"] / sum(outcomes.values()) < 0.45  # about 30% of attempts failed
    assert record["calls"]["n_errors"] == 0 and record["metrics"]["overall"]["n_pairs"] == 24
    keys = _cache_keys(tmp_path / "run" / "cache.jsonl")
    assert len(keys) == 48 and set(keys.values()) == {1}  # every item answered exactly once
    rows = [json.loads(x) for x in (tmp_path / "run" / "samples_mmr.jsonl").read_text().splitlines()]
    asked = {p for p, o in srv.hits if o == "ok"}
    assert {r["response"] for r in rows} <= {reply_for(p) for p in asked}
    assert srv.auth == {"Bearer sk-test-secret"}  # key from the environment, sent as bearer
    for name in ("results_mmr.json", "samples_mmr.jsonl", "cache.jsonl"):
        assert "sk-test-secret" not in (tmp_path / "run" / name).read_text()  # and never written down


def test_interrupted_run_resumes_without_repeating_cached_calls(world: Path, tmp_path: Path) -> None:
    data = load_mmr(world)
    cache = tmp_path / "cache.jsonl"

    def kill_after(n: int) -> Callable[[int, int], None]:
        def progress(done: int, total: int) -> None:
            if done == n:
                raise KeyboardInterrupt  # what Ctrl-C does mid-run
        return progress

    with FakeServer(flaky(seed=1)) as srv:
        with pytest.raises(KeyboardInterrupt):
            run_mmr(data, _adapter(srv.url), out_dir=tmp_path / "a", cache_path=cache, settings=_settings(),
                    progress=kill_after(15))
        first = _cache_keys(cache)
        cached_prompts = {json.loads(x)["prompt"] for x in cache.read_text().splitlines()}
        assert len(first) == 15
        time.sleep(TIMEOUT_S * 1.6)  # let abandoned in-flight attempts drain before counting
        mark = len(srv.hits)
        record = run_mmr(data, _adapter(srv.url), out_dir=tmp_path / "b", cache_path=cache, settings=_settings())
        second = srv.prompts_hit(since=mark)
    assert not (set(second) & cached_prompts)  # no repeated call for a cached item
    assert record["calls"]["n_cached_before"] == 15 and record["calls"]["n_new_calls"] == 33
    keys = _cache_keys(cache)
    assert len(keys) == 48 and set(keys.values()) == {1}


def test_fatal_errors_are_recorded_not_retried_and_retried_next_run(world: Path, tmp_path: Path) -> None:
    data = load_mmr(world)
    bad = data.paired_items()[0]
    bad_prompt = bad.question + "\nAnswer with the option's letter from the given choices directly."
    with FakeServer(lambda p, n: "400" if p == bad_prompt else "ok") as srv:
        rec = run_mmr(data, _adapter(srv.url), out_dir=tmp_path / "a", settings=_settings())
        assert srv.prompts_hit()[bad_prompt] == 1  # a 400 is not retried
    assert rec["calls"]["n_errors"] == 1
    assert rec["metrics"]["overall"]["n_pairs_error"] == 1 and rec["metrics"]["overall"]["n_pairs"] == 23
    rows = [json.loads(x) for x in (tmp_path / "a" / "samples_mmr.jsonl").read_text().splitlines()]
    err = [r for r in rows if r["status"] == "error"]
    assert len(err) == 1 and err[0]["pred"] is None and "HTTP 400" in err[0]["error"]
    with FakeServer(lambda p, n: "ok") as srv:
        rec = run_mmr(data, _adapter(srv.url), out_dir=tmp_path / "a", settings=_settings())
        assert list(srv.prompts_hit()) == [bad_prompt]  # only the failed item is asked again
    assert rec["calls"]["n_errors"] == 0 and rec["metrics"]["overall"]["n_pairs"] == 24


def test_killed_process_resumes_from_its_cache(world: Path, tmp_path: Path) -> None:
    """SIGKILL a real `mmrobust mmr run` mid-way, then rerun: cached items are not asked again."""
    out = tmp_path / "run"
    with FakeServer(flaky(seed=2), ok_delay_s=0.05) as srv:
        args = ["mmr", "run", "--data", str(world), "--adapter", "openai", "--model", "fake-vlm",
                "--adapter-arg", f"base_url={srv.url}", "--out", str(out), "--adapter-arg", f"timeout_s={TIMEOUT_S}",
                "--adapter-arg", "max_retries=8", "--adapter-arg", "backoff_s=0.01", "--adapter-arg", "concurrency=2",
                "--bootstrap", "0", "--max-new-tokens", "8"]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
        proc = subprocess.Popen([sys.executable, "-m", "mmrobust.cli.main", *args], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 120
            while srv.n_ok() < 12 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(timeout=30)
            proc.stderr.close()
        cached = [json.loads(x) for x in (out / "cache.jsonl").read_text().splitlines() if x.strip()]
        assert 1 <= len(cached) < 48  # killed mid-way
        mark = len(srv.hits)
        assert main(args) == 0
        second = srv.prompts_hit(since=mark)
    assert not (set(second) & {c["prompt"] for c in cached})
    result = json.loads((out / "results_mmr.json").read_text())
    assert result["calls"]["n_cached_before"] == len(cached) and result["calls"]["n_errors"] == 0
    keys = _cache_keys(out / "cache.jsonl")
    assert len(keys) == 48 and set(keys.values()) == {1}
