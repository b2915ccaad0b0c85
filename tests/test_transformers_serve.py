"""The ``openai`` adapter against a real OpenAI-compatible server no one here wrote: ``transformers serve``.

The same tiny LLaVA answers MMR twice, greedily: in process through the ``hf`` adapter, and served
by ``transformers serve`` (the ``transformers[serving]`` extra, on CPU, offline, bound to
127.0.0.1 on a free port) through the ``openai`` adapter. Every per-question response must be the
same text. No normalisation beyond stripping whitespace is needed: the server renders the
processor's own chat template (it turns the adapter's ``image_url`` data-URL part into
``{"type": "image", "url": ...}``, which the template writes as ``<image>`` just like the ``hf``
adapter's ``{"type": "image"}``), loads the data URL to the same RGB image, decodes with
``skip_special_tokens=True`` like the ``hf`` adapter, and only leaves the text unstripped.

The server command and its readiness check are in ``tests/_serve.py``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest

from mmrobust.eval.mmr import RunSettings, load_mmr, run_mmr
from mmrobust.models.mllm import GenerationParams, build_adapter
from mmrobust.world.llava import build_tiny_llava
from mmrobust.world.mmr import generate_mmr_world
from _serve import serve_command, serving

SETTINGS = RunSettings(n_boot=0, params=GenerationParams(max_new_tokens=8, temperature=0.0))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, Path, str]]:
    """(MMR world, model folder, base URL of ``transformers serve`` serving that folder)."""
    cmd = serve_command()
    world = generate_mmr_world(tmp_path / "world", pairs_per_category=1, seed=0, image_size=32).parent
    words = [item.question for item in load_mmr(world).items]  # stems + options: no <unk> in prompts
    model = build_tiny_llava(tmp_path / "tiny-llava", seed=0, image_size=32, extra_words=words)
    yield from _serving(cmd, world, model, tmp_path)


def _serving(cmd: list[str], world: Path, model: Path, tmp_path: Path) -> Iterator[tuple[Path, Path, str]]:
    server = serving(cmd, model, tmp_path)
    try:
        yield world, model, next(server)
    finally:
        server.close()


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

    cmd = serve_command()
    run_mmr_trained_demo(tmp_path / "story", TINY, progress=False, log=lambda m: None)
    world, model = tmp_path / "story" / "data" / "mmr-world", tmp_path / "story" / "mmr-tuned" / "model"
    settings = RunSettings(n_boot=0, prompt=PROMPT, parser=PARSER,
                           params=GenerationParams(max_new_tokens=16, temperature=0.0))
    server = _serving(cmd, world, model, tmp_path)
    _, _, base_url = next(server)
    try:
        remote = build_adapter("openai", model=str(model), options={"base_url": base_url, "timeout_s": 120,
                                                                    "max_retries": 0, "concurrency": 2})
        local = build_adapter("hf", model=str(model), options={"device": "cpu", "dtype": "float32", "batch_size": 1})
        data = load_mmr(world)
        served_rec = run_mmr(data, remote, out_dir=tmp_path / "served", settings=settings)
        local_rec = run_mmr(data, local, out_dir=tmp_path / "local", settings=settings)
    finally:
        server.close()
    assert served_rec["calls"]["n_errors"] == 0 and local_rec["calls"]["n_errors"] == 0
    got, want = _responses(tmp_path / "served"), _responses(tmp_path / "local")
    assert got == want and len(want) == 16
    assert len({text for text, _ in want.values()}) > 1
