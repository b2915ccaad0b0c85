"""The ``openai`` adapter against a real OpenAI-compatible server no one here wrote: ``transformers serve``.

The same tiny LLaVA answers MMR twice, greedily: in process through the ``hf`` adapter, and served
by ``transformers serve`` (the ``transformers[serving]`` extra, on CPU, offline, bound to
127.0.0.1 on a free port) through the ``openai`` adapter. Every per-question response must be the
same text. No normalisation beyond stripping whitespace is needed: the server renders the
processor's own chat template (it turns the adapter's ``image_url`` data-URL part into
``{"type": "image", "url": ...}``, which the template writes as ``<image>`` just like the ``hf``
adapter's ``{"type": "image"}``), loads the data URL to the same RGB image, decodes with
``skip_special_tokens=True`` like the ``hf`` adapter, and only leaves the text unstripped.

Server command (what ``_serve`` runs)::

    HF_HUB_OFFLINE=1 transformers serve <model dir> --device cpu --dtype float32 \\
        --host 127.0.0.1 --port <free port>

The positional model pins the server to that folder and loads it before the port opens, so
``GET /health`` answering 200 means it is ready; requests must then name the same path as ``model``.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from mmrobust.eval.mmr import RunSettings, load_mmr, run_mmr
from mmrobust.models.mllm import GenerationParams, build_adapter
from mmrobust.world.llava import build_tiny_llava
from mmrobust.world.mmr import generate_mmr_world

READY_DEADLINE_S = 120.0  # import + model load on a busy 2-core machine; a few seconds normally
SETTINGS = RunSettings(n_boot=0, params=GenerationParams(max_new_tokens=8, temperature=0.0))


def _serve_command() -> list[str]:
    """The ``transformers`` console script of this interpreter's environment, or skip the test."""
    from transformers.utils.import_utils import is_serve_available

    exe = Path(sys.executable).parent / "transformers"
    found = str(exe) if exe.is_file() else shutil.which("transformers")
    if found is None or not is_serve_available():
        pytest.skip("`transformers serve` is not installed: pip install 'transformers[serving]' accelerate")
    return [found, "serve"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(proc: subprocess.Popen, url: str, log: Path) -> None:
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


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, Path, str]]:
    """(MMR world, model folder, base URL of ``transformers serve`` serving that folder)."""
    cmd = _serve_command()
    world = generate_mmr_world(tmp_path / "world", pairs_per_category=1, seed=0, image_size=32).parent
    words = [item.question for item in load_mmr(world).items]  # stems + options: no <unk> in prompts
    model = build_tiny_llava(tmp_path / "tiny-llava", seed=0, image_size=32, extra_words=words)
    yield from _serving(cmd, world, model, tmp_path)


def _serving(cmd: list[str], world: Path, model: Path, tmp_path: Path) -> Iterator[tuple[Path, Path, str]]:
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*cmd, str(model), "--device", "cpu", "--dtype", "float32",
                                 "--host", "127.0.0.1", "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    try:
        _wait_ready(proc, f"http://127.0.0.1:{port}/health", log)
        yield world, model, f"http://127.0.0.1:{port}/v1"
    finally:
        _stop(proc)


def _responses(out: Path) -> dict[str, tuple[str, str | None]]:
    """uid -> (stripped response, parsed letter) from a run's samples file."""
    rows = [json.loads(line) for line in (out / "samples_mmr.jsonl").read_text().splitlines() if line.strip()]
    return {r["uid"]: (r["response"].strip(), r["pred"]) for r in rows}


def test_transformers_serve_gives_the_hf_adapters_answers(served: tuple[Path, Path, str], tmp_path: Path) -> None:
    world, model, base_url = served
    data = load_mmr(world)
    remote = build_adapter("openai", model=str(model),  # a pinned server wants its own model path here
                           options={"base_url": base_url, "timeout_s": 120, "max_retries": 0, "concurrency": 2})
    # batch_size=1: the server runs one unpadded request at a time; left-padded batches are
    # not bit-identical in float32, which would test batching rather than the server.
    local = build_adapter("hf", model=str(model), options={"device": "cpu", "dtype": "float32", "batch_size": 1})
    served_rec = run_mmr(data, remote, out_dir=tmp_path / "served", settings=SETTINGS)
    local_rec = run_mmr(data, local, out_dir=tmp_path / "local", settings=SETTINGS)

    assert served_rec["calls"]["n_errors"] == 0 and local_rec["calls"]["n_errors"] == 0
    got, want = _responses(tmp_path / "served"), _responses(tmp_path / "local")
    assert len(want) == 8 and got.keys() == want.keys()
    assert got == want  # same text, same parsed letter, question by question
    assert len({text for text, _ in want.values()}) > 1  # the answers depend on the input: not a vacuous match
    assert served_rec["metrics"]["overall"] == local_rec["metrics"]["overall"]


def test_transformers_serve_gives_the_trained_llavas_answers(tmp_path: Path) -> None:
    """The MMR story's trained tiny LLaVA (MMR-tuned, tiny settings), served: the same answers as in process."""
    from mmrobust.stories.mmr_trained import PARSER, PROMPT, run_mmr_trained_demo
    from test_demo_mmr_trained import TINY

    cmd = _serve_command()
    run_mmr_trained_demo(tmp_path / "story", TINY, progress=False, log=lambda m: None)
    world, model = tmp_path / "story" / "data" / "mmr-world", tmp_path / "story" / "mmr-tuned" / "model"
    settings = RunSettings(n_boot=0, prompt=PROMPT, parser=PARSER,
                           params=GenerationParams(max_new_tokens=16, temperature=0.0))
    serving = _serving(cmd, world, model, tmp_path)
    _, _, base_url = next(serving)
    try:
        remote = build_adapter("openai", model=str(model), options={"base_url": base_url, "timeout_s": 120,
                                                                    "max_retries": 0, "concurrency": 2})
        local = build_adapter("hf", model=str(model), options={"device": "cpu", "dtype": "float32", "batch_size": 1})
        data = load_mmr(world)
        served_rec = run_mmr(data, remote, out_dir=tmp_path / "served", settings=settings)
        local_rec = run_mmr(data, local, out_dir=tmp_path / "local", settings=settings)
    finally:
        serving.close()
    assert served_rec["calls"]["n_errors"] == 0 and local_rec["calls"]["n_errors"] == 0
    got, want = _responses(tmp_path / "served"), _responses(tmp_path / "local")
    assert got == want and len(want) == 16
    assert len({text for text, _ in want.values()}) > 1
