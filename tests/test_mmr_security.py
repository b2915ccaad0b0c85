"""Hostile input for the MMR tool chain: image paths leaving their folder, named pipes, servers that
echo credentials, trickle bytes, hang or send odd JSON, Ctrl-C mid-run, and out-of-range settings.
Every case ends as an anomaly, a recorded per-item error or a one-line error, never a hang or a
traceback, and no credential reaches a file."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import pytest
from PIL import Image

from mmrobust.cli.main import main
from mmrobust.errors import ConfigError, DataError
from mmrobust.eval.mllm import HarnessSettings, MLLMTask, Question, run_task
from mmrobust.eval.mmr import RunSettings, load_mmr, read_response_file, run_mmr, score_responses
from mmrobust.models.mllm import GenerationParams, GenRequest
from mmrobust.models.mllm.openai import OpenAIAdapter
from mmrobust.models.mllm.scripted import ScriptedAdapter
from mmrobust.world.mmr import generate_mmr_world

KEY = "k3y-0f-the-test-7d1e"  # shaped like no known token, so only the literal redaction can catch it
QUESTION = "What shape is it?\nA. circle\nB. square\nC. star\nD. ring"

Handler = Callable[[BaseHTTPRequestHandler, str], None]  # (request handler, prompt) -> writes a reply


def send(h: BaseHTTPRequestHandler, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
    h.send_response(status)
    for k, v in {"Content-Type": "application/json", "Content-Length": str(len(payload)), **(headers or {})}.items():
        h.send_header(k, v)
    h.end_headers()
    h.wfile.write(payload)


def answer(text: str) -> bytes:
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()


class Server:
    """A chat-completions server on 127.0.0.1 whose replies come from ``handle``; records prompts."""

    def __init__(self, handle: Handler) -> None:
        self.handle = handle
        self.prompts: list[str] = []
        self.lock = threading.Lock()
        self.release = threading.Event()  # set on exit: handlers that hang return
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.httpd.release = self.release  # handlers reach it as h.server.release

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def hits(self, since: int = 0) -> Counter:
        with self.lock:
            return Counter(self.prompts[since:])

    def _handler(self) -> type:
        server = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][0]["content"][1]["text"]
                with server.lock:
                    server.prompts.append(prompt)
                try:
                    server.handle(self, prompt)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client cut the call: expected

        return H

    def __enter__(self) -> "Server":
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mmr-sec-world")
    generate_mmr_world(root, pairs_per_category=1, seed=0, image_size=16)  # 4 pairs, 8 questions
    return root


def adapter(url: str, **kw) -> OpenAIAdapter:
    opts = dict(model="fake-vlm", base_url=url, api_key_env="MMR_SEC_KEY", concurrency=2, timeout_s=2.0,
                max_retries=1, backoff_s=0.01, max_backoff_s=0.02)
    return OpenAIAdapter(**{**opts, **kw})


def ask(url: str, tmp_path: Path, **kw):
    """One request through the adapter; its result."""
    img = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(img)
    return dict(adapter(url, **kw).generate([GenRequest("u", QUESTION, str(img))], GenerationParams()))[0]


# ---------------------------------------------------------------- 1. paths


def _question_file(folder: Path, images: list[str]) -> Path:
    rows = []
    for k, image in enumerate(images):
        pid = f"attribute/shape/{k:02d}"
        rows += [{"id": pid, "image": image, "question": QUESTION, "ground_truth": "A", "question_type": t}
                 for t in ("POS", "NEG")]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "q.json").write_text(json.dumps(rows))
    return folder / "q.json"


def test_image_paths_outside_the_root_are_anomalies_unless_allowed(tmp_path: Path) -> None:
    secret = tmp_path / "private.png"
    Image.new("RGB", (8, 8)).save(secret)
    data_dir = tmp_path / "a" / "b" / "data"
    (data_dir / "images").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(data_dir / "images" / "ok.png")
    (data_dir / "images" / "link.png").symlink_to(secret)  # inside by name, outside in fact
    qfile = _question_file(data_dir, ["ok.png", str(secret), "../../../private.png", "link.png", "../../nowhere.png"])
    data = load_mmr(qfile)
    kinds = Counter((a["kind"], a["id"]) for a in data.anomalies if a["kind"] == "image_outside_root")
    assert set(kinds) == {("image_outside_root", f"attribute/shape/0{k}") for k in (1, 2, 3, 4)}
    assert [p.id for p in data.pairs] == ["attribute/shape/00"]
    assert all(Path(i.image).resolve().is_relative_to(data_dir.resolve()) for i in data.items)
    allowed = load_mmr(qfile, allow_outside=True)
    assert [p.id for p in allowed.pairs] == [f"attribute/shape/0{k}" for k in range(4)]  # 04 is just missing
    assert {a["kind"] for a in allowed.anomalies} == {"image_missing"}


def test_named_pipes_are_never_opened(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "images").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(data_dir / "images" / "ok.png")
    os.mkfifo(data_dir / "images" / "pipe.png")
    data = load_mmr(_question_file(data_dir, ["ok.png", "pipe.png"]))  # would block forever if opened
    assert [a["kind"] for a in data.anomalies if a["id"] == "attribute/shape/01"][:1] == ["image_not_file"]
    assert [p.id for p in data.pairs] == ["attribute/shape/00"]
    os.mkfifo(tmp_path / "pipe.json")
    with pytest.raises(DataError, match="not a regular file"):
        load_mmr(tmp_path / "pipe.json")
    os.mkfifo(tmp_path / "pipe.jsonl")
    with pytest.raises(DataError, match="not a regular file"):
        score_responses(tmp_path / "pipe.jsonl", out_dir=tmp_path / "s", n_boot=0)


class _PipeTask(MLLMTask):
    name = "pipe-quiz"

    def __init__(self, images: list[Path]) -> None:
        self.images = images

    def questions(self) -> list[Question]:
        return [Question(uid=p.name, image=str(p), prompt=QUESTION, ground_truth="A") for p in self.images]


def test_harness_records_an_unreadable_image_as_an_error_and_never_sends_it(tmp_path: Path) -> None:
    good, pipe = tmp_path / "good.png", tmp_path / "pipe.png"
    Image.new("RGB", (8, 8)).save(good)
    os.mkfifo(pipe)
    model = ScriptedAdapter(model="constant:A")
    rec = run_task(_PipeTask([good, pipe, tmp_path / "gone.png"]), model, out_dir=tmp_path / "run",
                   settings=HarnessSettings(n_boot=0))
    assert model.calls == ["good.png"]
    status = {s["uid"]: (s["status"], s["error"]) for s in rec.samples}
    assert status["good.png"] == ("correct", None)
    assert status["pipe.png"][0] == "error" and "not a regular file" in status["pipe.png"][1]
    assert status["gone.png"][0] == "error" and "not found" in status["gone.png"][1]
    assert rec.extra["calls"]["n_errors"] == 2 and rec.extra["calls"]["n_cached_before"] == 0


def test_cli_refuses_outside_paths_unless_allowed(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.png"
    Image.new("RGB", (8, 8)).save(outside)
    data_dir = tmp_path / "data"
    (data_dir / "images").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(data_dir / "images" / "ok.png")
    _question_file(data_dir, ["ok.png", str(outside)])
    base = ["mmr", "run", "--data", str(data_dir), "--adapter", "scripted", "--model", "constant:A", "--bootstrap", "0"]
    assert main([*base, "--out", str(tmp_path / "r1")]) == 0
    r1 = json.loads((tmp_path / "r1" / "results_mmr.json").read_text())
    assert r1["metrics"]["overall"]["n_pairs"] == 1
    assert [a["kind"] for a in r1["anomalies"]].count("image_outside_root") == 2
    assert main([*base, "--out", str(tmp_path / "r2"), "--allow-outside-paths"]) == 0
    assert json.loads((tmp_path / "r2" / "results_mmr.json").read_text())["metrics"]["overall"]["n_pairs"] == 2


# ---------------------------------------------------------------- 2. secrets


def _echo(h: BaseHTTPRequestHandler, prompt: str) -> None:
    """Echo the request headers: as JSON in a 401, as text in a 500, inside the reply of a 200."""
    auth = h.headers.get("Authorization", "")
    kind = zlib.crc32(prompt.encode()) % 3
    if kind == 0:
        send(h, 401, json.dumps({"error": {"message": "bad key", "headers": dict(h.headers)}}).encode())
    elif kind == 1:
        send(h, 500, f"upstream failed; request was: Authorization: {auth}\nX-Api-Key: {KEY}".encode())
    else:
        send(h, 200, answer(f"A. (debug: you sent {auth}, token={KEY})"))


def test_echoed_credentials_never_reach_a_file(world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMR_SEC_KEY", KEY)
    out = tmp_path / "run"
    with Server(_echo) as srv:
        rec = run_mmr(load_mmr(world), adapter(srv.url), out_dir=out, settings=RunSettings(n_boot=0))
        url = srv.url
    rows = [json.loads(x) for x in (out / "samples_mmr.jsonl").read_text().splitlines()]
    errors = [r["error"] for r in rows if r["error"]]
    assert rec["calls"]["n_errors"] == len(errors) >= 1 and all("HTTP" in e for e in errors)
    assert all("[REDACTED]" in e for e in errors)
    assert all(r["status"] == "error" and r["pred"] is None for r in rows if r["error"])
    assert any(r["pred"] == "A" for r in rows)  # the chatty 200 replies still parse
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {"cache.jsonl", "samples_mmr.jsonl", "results_mmr.json"} <= {p.name for p in files}
    for p in files:
        assert KEY.encode() not in p.read_bytes(), p
    # a password in the URL is not recorded either
    a = adapter(url.replace("http://", "http://user:pa55word-xyz@"))
    assert "pa55word" not in json.dumps(a.describe()) and "pa55word-xyz" in a.secrets()


# ---------------------------------------------------------------- 3. hangs


def _trickle_body(h: BaseHTTPRequestHandler, prompt: str) -> None:
    payload = answer("A")
    h.send_response(200)
    h.send_header("Content-Length", str(len(payload)))
    h.end_headers()
    for b in payload:  # one byte every 0.2 s: a per-read timeout never fires
        h.wfile.write(bytes([b]))
        h.wfile.flush()
        if h.server.release.wait(0.2):
            return


def _trickle_headers(h: BaseHTTPRequestHandler, prompt: str) -> None:
    h.wfile.write(b"HTTP/1.1 200 OK\r\n")
    for b in b"X-Slow: " + b"a" * 200:
        h.wfile.write(bytes([b]))
        h.wfile.flush()
        if h.server.release.wait(0.2):
            return


@pytest.mark.parametrize("trickle", [_trickle_body, _trickle_headers])
def test_trickling_server_is_cut_at_the_deadline(tmp_path: Path, trickle: Handler) -> None:
    with Server(trickle) as srv:
        start = time.monotonic()
        res = ask(srv.url, tmp_path, timeout_s=1.0, max_retries=0)
        took = time.monotonic() - start
    assert res.text is None and "1s deadline" in res.error and res.attempts == 1
    assert took < 3.0, took


SLOW_AFTER = 4  # the slow server answers this many requests at once, then hangs


def _slow_server(state: dict) -> Handler:
    def handle(h: BaseHTTPRequestHandler, prompt: str) -> None:
        with state["lock"]:
            state["n"] += 1
            fast = state["fast"] or state["n"] <= SLOW_AFTER
        if not fast:
            h.server.release.wait(60)  # hangs well past any test timeout
        send(h, 200, answer("B"))
    return handle


def test_ctrl_c_stops_a_run_at_once_keeps_its_cache_and_a_rerun_resumes(world: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    state = {"n": 0, "fast": False, "lock": threading.Lock()}
    with Server(_slow_server(state)) as srv:
        args = ["mmr", "run", "--data", str(world), "--adapter", "openai", "--model", "fake-vlm", "--out", str(out),
                "--adapter-arg", f"base_url={srv.url}", "--adapter-arg", "timeout_s=120", "--adapter-arg",
                "concurrency=2", "--bootstrap", "0", "--max-new-tokens", "8"]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
        # as in a terminal: a suite run as a background job (nohup, `&`) would hand the child an ignored SIGINT
        proc = subprocess.Popen([sys.executable, "-m", "mmrobust.cli.main", *args], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            deadline = time.monotonic() + 120
            while (sum(srv.hits().values()) < SLOW_AFTER + 2 or _lines(out / "cache.jsonl") < SLOW_AFTER) \
                    and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.2)  # both workers now wait on a hung reply
            start = time.monotonic()
            proc.send_signal(signal.SIGINT)
            rc = proc.wait(timeout=20)
            took = time.monotonic() - start
            err = proc.stderr.read().decode()
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stderr.close()
        assert rc == 130 and took < 5.0, (rc, took, err[-2000:])
        assert "Traceback" not in err and "interrupted" in err
        raw = (out / "cache.jsonl").read_bytes()
        assert raw.endswith(b"\n")
        cached = [json.loads(x) for x in raw.splitlines()]  # every line complete JSON
        assert len(cached) == SLOW_AFTER
        state["fast"] = True
        mark = sum(srv.hits().values())
        assert main(args) == 0
        again = srv.hits(since=mark)
    assert not set(again) & {c["prompt"] for c in cached} and sum(again.values()) == 8 - SLOW_AFTER
    result = json.loads((out / "results_mmr.json").read_text())
    assert result["calls"]["n_cached_before"] == SLOW_AFTER and result["calls"]["n_errors"] == 0


def _lines(path: Path) -> int:
    return len(path.read_bytes().splitlines()) if path.exists() else 0


# ---------------------------------------------------------------- 4. ranges and score files


@pytest.mark.parametrize("kw", [{"max_new_tokens": 0}, {"max_new_tokens": -5}, {"max_new_tokens": 2.5},
                                {"temperature": -0.1}, {"temperature": float("nan")}, {"top_p": 0.0},
                                {"top_p": 1.5}, {"top_p": -1}])
def test_generation_params_out_of_range(kw: dict) -> None:
    with pytest.raises(ConfigError, match=next(iter(kw))):
        GenerationParams(**kw)


@pytest.mark.parametrize("kw", [{"max_retries": -1}, {"timeout_s": -1.0}, {"timeout_s": 0}, {"concurrency": 0},
                                {"backoff_s": -1}, {"max_backoff_s": float("inf")}, {"max_body_bytes": 0},
                                {"base_url": "127.0.0.1:8000"}, {"base_url": "ftp://h/v1"},
                                {"extra_body": ["seed", 0]}])
def test_openai_adapter_options_out_of_range(kw: dict) -> None:
    with pytest.raises(ConfigError, match=next(iter(kw))):
        adapter("http://127.0.0.1:9/v1", **kw)


@pytest.mark.parametrize("cls", [RunSettings, HarnessSettings])
@pytest.mark.parametrize("kw", [{"n_boot": -1}, {"seed": -1}, {"n_boot": 1.5}, {"params": {"max_new_tokens": 8}}])
def test_run_settings_out_of_range(cls: type, kw: dict) -> None:
    with pytest.raises(ConfigError, match=next(iter(kw))):
        cls(**kw)


def test_hf_batch_size_is_checked_before_loading() -> None:
    from mmrobust.models.mllm.hf import HFAdapter

    with pytest.raises(ConfigError, match="batch_size"):
        HFAdapter(model="no/such-model", batch_size=0)


@pytest.mark.parametrize("extra", [["--max-new-tokens", "0"], ["--temperature", "-1"], ["--top-p", "0"],
                                   ["--top-p", "1.5"], ["--bootstrap", "-1"], ["--limit", "0"], ["--seed", "-1"]])
def test_cli_rejects_out_of_range_numbers(world: Path, tmp_path: Path, extra: list[str],
                                          capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as e:
        main(["mmr", "run", "--data", str(world), "--adapter", "scripted", "--model", "random", "--out",
              str(tmp_path), *extra])
    assert e.value.code == 2 and extra[0] in capsys.readouterr().err


@pytest.mark.parametrize("arg", ["max_retries=-1", "timeout_s=-1", "concurrency=0", "extra_body=[1]"])
def test_cli_rejects_bad_adapter_options_in_one_line(world: Path, tmp_path: Path, arg: str,
                                                     capsys: pytest.CaptureFixture) -> None:
    rc = main(["mmr", "run", "--data", str(world), "--adapter", "openai", "--model", "m", "--out", str(tmp_path),
               "--adapter-arg", "base_url=http://127.0.0.1:9/v1", "--adapter-arg", arg])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and arg.split("=")[0] in err
    assert not (tmp_path / "cache.jsonl").exists()


def test_score_file_with_bad_rows(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    def row(pid: str, qtype: str, gt: object, text: object) -> dict:
        return {"question_id": pid, "prompt": QUESTION, "text": text, "groundtruth": gt, "question_type": qtype}

    rows = [row("attribute/shape/01", "POS", "A", "A"), row("attribute/shape/01", "NEG", "B", "B"),
            row("attribute/shape/02", "POS", "E", "A"), row("attribute/shape/02", "NEG", "B", "B"),
            row("attribute/shape/03", "POS", "A", 7), row("attribute/shape/03", "NEG", "B", "B"),
            row("attribute/shape/04", "POS", ["A"], "A"), row("attribute/shape/04", "NEG", "B", "B")]
    path = tmp_path / "answers.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    rec = score_responses(path, out_dir=tmp_path / "o", n_boot=0)
    bad = [(a["kind"], a["id"]) for a in rec["anomalies"]]
    assert bad == [("bad_ground_truth", "attribute/shape/02"), ("bad_ground_truth", "attribute/shape/04")]
    o = rec["metrics"]["overall"]
    assert o["n_pairs"] == 1 and o["ra"] == 1.0 and o["n_pairs_error"] == 1  # 03: a non-text reply is an error
    samples = [json.loads(x) for x in (tmp_path / "o" / "samples_mmr.jsonl").read_text().splitlines()]
    assert [s["pred"] for s in samples if s["id"] == "attribute/shape/03"].count(None) == 1
    path.write_text(json.dumps(rows[0]) + "\n" + json.dumps(["not", "an", "object"]) + "\n")
    with pytest.raises(DataError, match=r"answers.jsonl:2 is a JSON list"):
        read_response_file(path)
    assert main(["mmr", "score", str(path), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "answers.jsonl:2" in err
    path.write_bytes(b'{"id": "\xff"}\n')
    with pytest.raises(DataError, match="not UTF-8"):
        read_response_file(path)


# ---------------------------------------------------------------- 5. odd replies


ODD = {
    "a list": b"[1, 2]",
    "a string": b'"A"',
    "no choices": b'{"id": "x"}',
    "empty choices": b'{"choices": []}',
    "choices not a list": b'{"choices": {"0": {"message": {"content": "A"}}}}',
    "message a string": b'{"choices": [{"message": "A"}]}',
    "content a number": b'{"choices": [{"message": {"content": 1}}]}',
    "content a dict": b'{"choices": [{"message": {"content": {"text": "A"}}}]}',
    "content parts not text": b'{"choices": [{"message": {"content": [{"text": 5}, "A"]}}]}',
    "content null": b'{"choices": [{"message": {"content": null}}]}',
    "not utf-8": b'{"choices": [{"message": {"content": "\xff\xfe"}}]}',
    "deeply nested": b"[" * 200_000 + b"]" * 200_000,
    "huge": b'{"choices": [{"message": {"content": "' + b"A" * (3 << 20) + b'"}}]}',
    "cut": b'{"choices": [{"message": ',
}


@pytest.mark.parametrize("name", list(ODD))
def test_odd_replies_become_recorded_errors(tmp_path: Path, name: str) -> None:
    with Server(lambda h, p: send(h, 200, ODD[name], {"Retry-After": "nan"})) as srv:
        res = ask(srv.url, tmp_path, max_body_bytes=1 << 20)
    assert res.text is None and res.error, res
    assert "unexpected" not in res.error  # handled as a known failure, not caught as a bug


def test_content_parts_and_an_empty_reply_are_text(tmp_path: Path) -> None:
    parts = b'{"choices": [{"message": {"content": [{"type": "text", "text": "B."}, {"type": "image"}]}}]}'
    with Server(lambda h, p: send(h, 200, parts)) as srv:
        assert ask(srv.url, tmp_path).text == "B."
    with Server(lambda h, p: send(h, 200, answer(""))) as srv:
        assert ask(srv.url, tmp_path).text == ""  # an empty reply is an answer (unparseable), not an error


def test_unreadable_image_is_a_per_item_error_in_the_adapter(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.png")
    with Server(lambda h, p: send(h, 200, answer("A"))) as srv:
        res = dict(adapter(srv.url).generate([GenRequest("u", QUESTION, str(tmp_path / "pipe.png"))],
                                             GenerationParams()))[0]
        assert srv.hits() == Counter()
    assert res.text is None and "not a regular file" in res.error
