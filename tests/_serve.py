"""``transformers serve`` (the ``transformers[serving]`` extra) serving a model folder on CPU, offline, bound to
127.0.0.1 on a free port: an OpenAI-compatible server no one here wrote, for the tests of the ``openai``
adapter and of the harness integrations (lmms-eval, Inspect).

Server command (what :func:`serving` runs)::

    HF_HUB_OFFLINE=1 transformers serve <model dir> --device cpu --dtype float32 \\
        --host 127.0.0.1 --port <free port>

The positional model pins the server to that folder and loads it before the port opens, so
``GET /health`` answering 200 means it is ready; requests must then name the same path as ``model``.
:func:`dying_server` is a stand-in that answers a few requests and then dies, for the harnesses' failure paths.
"""
from __future__ import annotations

import contextlib
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

READY_DEADLINE_S = 120.0  # import + model load on a busy 2-core machine; a few seconds normally


def serve_command() -> list[str]:
    """The ``transformers`` console script of this interpreter's environment, or skip the test."""
    from transformers.utils.import_utils import is_serve_available

    exe = Path(sys.executable).parent / "transformers"
    found = str(exe) if exe.is_file() else shutil.which("transformers")
    if found is None or not is_serve_available():
        pytest.skip("`transformers serve` is not installed: pip install 'transformers[serving]' accelerate")
    return [found, "serve"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(proc: subprocess.Popen, url: str, log: Path) -> None:
    """Poll ``url`` until it answers 200; fail (with the server's log) on exit or past the deadline."""
    import requests

    deadline = time.monotonic() + READY_DEADLINE_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"transformers serve exited with {proc.returncode} before it was ready:\n"
                        f"{log.read_text()[-3000:]}")
        try:
            if requests.get(url, timeout=1.0).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.25)
    pytest.fail(f"transformers serve was not ready after {READY_DEADLINE_S:.0f} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def serving(cmd: list[str], model: Path, log_dir: Path) -> Iterator[str]:
    """Serve ``model`` with ``cmd`` (:func:`serve_command`); yields the base URL (``http://127.0.0.1:PORT/v1``)
    once ready, stops the server when closed. Its log goes to ``log_dir/serve.log``."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    log = log_dir / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*cmd, str(model), "--device", "cpu", "--dtype", "float32",
                                 "--host", "127.0.0.1", "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    try:
        wait_ready(proc, f"http://127.0.0.1:{port}/health", log)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop(proc)


@contextlib.contextmanager
def dying_server(answer: Callable[[str], str], *, answers: int) -> Iterator[tuple[str, list[str]]]:
    """A minimal OpenAI-compatible chat server that answers ``answers`` requests (``answer(prompt text)``), then
    dies: its socket closes and every later connection is refused, as when a real server crashes midway.
    Yields (base URL, the prompt texts it answered, in order)."""
    answered: list[str] = []
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            parts = body["messages"][-1]["content"]
            text = next(p["text"] for p in parts if p.get("type") == "text") if isinstance(parts, list) else parts
            with lock:
                if len(answered) >= answers:
                    return  # no reply: the connection drops
                answered.append(text)
                last = len(answered) == answers
            reply = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                                "choices": [{"index": 0, "finish_reason": "stop",
                                             "message": {"role": "assistant", "content": answer(text)}}],
                                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)
            if last:
                threading.Thread(target=die, daemon=True).start()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    def die() -> None:
        server.shutdown()
        server.server_close()

    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", answered
    finally:
        if thread.is_alive():
            die()
        thread.join(timeout=10)
