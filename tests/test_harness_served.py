"""lmms-eval and Inspect, each run by its own CLI against ``transformers serve`` serving a tiny LLaVA (built on the
MMR world's vocabulary; seed 4 gives RA and MR strictly between 0 and 1 at 2 new tokens), print the RA / MR
that mmrobust computes from the same replies, and ask what mmrobust asks: every reply equals the reply
mmrobust's own ``openai`` adapter gets from the same server. A server that dies midway leaves lmms-eval
failures that mmrobust refuses (or, with --allow-errors, counts). Server helpers: ``tests/_serve.py``.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from _harness import harness_env, known_replies, need_lmms_eval, oracle, sha
from _serve import dying_server, serve_command, serving
from mmrobust.cli.main import main
from mmrobust.eval.mmr import RunSettings, load_mmr, run_mmr
from mmrobust.integrations import harness_questions
from mmrobust.models.mllm import GenerationParams, build_adapter
from mmrobust.world.llava import build_tiny_llava
from mmrobust.world.mmr import generate_mmr_world

pytestmark = pytest.mark.slow
MAX_NEW_TOKENS = 2
METRICS = ("ra", "mr", "n_pairs", "n_pairs_error", "n_unparseable")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(world, model folder, base URL, mmrobust's own replies uid -> stripped text) with the server up."""
    cmd = serve_command()
    root = tmp_path_factory.mktemp("served")
    world = generate_mmr_world(root / "world", pairs_per_category=2, seed=0, image_size=32).parent
    words = [item.question for item in load_mmr(world).items]
    model = build_tiny_llava(root / "tiny-llava", seed=4, image_size=32, extra_words=words)
    server = serving(cmd, model, root)
    base_url = next(server)
    try:
        adapter = build_adapter("openai", model=str(model), options={"base_url": base_url, "timeout_s": 120,
                                                                     "max_retries": 0, "concurrency": 2})
        settings = RunSettings(n_boot=0, params=GenerationParams(max_new_tokens=MAX_NEW_TOKENS, temperature=0.0))
        run_mmr(load_mmr(world), adapter, out_dir=root / "mmrobust", settings=settings)
        rows = [json.loads(x) for x in (root / "mmrobust" / "samples_mmr.jsonl").read_text().splitlines()]
        assert all(r["error"] is None for r in rows)
        yield world, model, base_url, {r["uid"]: r["response"].strip() for r in rows}
    finally:
        server.close()


def _score(log: Path, fmt: str, world: Path, out: Path, *extra: str) -> dict:
    assert main(["mmr", "score", str(log), "--format", fmt, "--data", str(world), "--out", str(out),
                 "--bootstrap", "0", *extra]) == 0
    return json.loads((out / "results_mmr.json").read_text())["metrics"]["overall"]


def _replies(out: Path) -> dict[str, str]:
    rows = [json.loads(x) for x in (out / "samples_mmr.jsonl").read_text().splitlines()]
    return {r["uid"]: r["response"] for r in rows}


def _lmms_eval(tasks: Path, model: str, base_url: str, out: Path, home: Path, *extra: str) -> tuple[dict, Path]:
    """Run lmms-eval's CLI on the exported task; (its results["mmr"], its samples file)."""
    cmd = [str(Path(sys.executable).parent / "lmms-eval"), "--include_path", str(tasks), "--tasks", "mmr",
           "--model", "openai", "--model_args", ",".join([f"model={model}", f"base_url={base_url}", *extra]),
           "--log_samples", "--output_path", str(out), "--verbosity", "WARNING"]
    done = subprocess.run(cmd, cwd=home, env=harness_env(home, OPENAI_API_KEY="none"), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [results] = out.glob("*/*_results.json")
    [samples] = out.glob("*/*_samples_mmr.jsonl")
    assert "mmr_ra" in done.stdout  # the table lmms-eval prints
    return json.loads(results.read_text())["results"]["mmr"], samples


def test_lmms_eval_prints_mmrobusts_ra_mr_for_the_same_replies(served, tmp_path):
    need_lmms_eval()
    world, model, base_url, own = served
    assert main(["mmr", "export", "--format", "lmms-eval", "--data", str(world), "--out", str(tmp_path / "tasks"),
                 "--max-new-tokens", str(MAX_NEW_TOKENS)]) == 0
    results, samples = _lmms_eval(tmp_path / "tasks", str(model), base_url, tmp_path / "runs", tmp_path,
                                  "num_concurrent=2", "max_retries=1")
    got = _score(samples, "lmms-eval", world, tmp_path / "scored")
    assert _replies(tmp_path / "scored") == own  # lmms-eval asked exactly what mmrobust asks
    assert len(set(own.values())) > 1
    assert results["mmr_ra,none"] == got["ra"] and results["mmr_mr,none"] == got["mr"]
    assert results["mmr_pairs,none"] == got["n_pairs"] == 8 and results["mmr_pairs_error,none"] == 0


def test_inspect_prints_mmrobusts_ra_mr_for_the_same_replies(served, tmp_path):
    pytest.importorskip("inspect_ai")
    from inspect_ai.log import read_eval_log

    import mmrobust.integrations.inspect_mmr as task_file

    world, model, base_url, own = served
    cmd = [str(Path(sys.executable).parent / "inspect"), "eval", f"{task_file.__file__}@mmr", "-T", f"data={world}",
           "-T", f"max_tokens={MAX_NEW_TOKENS}", "--model", f"openai-api/local/{model}", "--log-dir",
           str(tmp_path / "logs"), "--display", "plain", "--max-retries", "1"]
    env = harness_env(tmp_path, LOCAL_BASE_URL=base_url, LOCAL_API_KEY="none")
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [log_file] = (tmp_path / "logs").glob("*.eval")
    log = read_eval_log(str(log_file))
    metrics = {k: v.value for k, v in log.results.scores[0].metrics.items()}
    got = _score(log_file, "inspect", world, tmp_path / "scored")
    assert _replies(tmp_path / "scored") == own  # Inspect asked exactly what mmrobust asks
    assert metrics == {"ra": got["ra"], "mr": got["mr"], "pairs": got["n_pairs"]} and got["n_pairs"] == 8
    assert re.search(rf"\bra\s+{got['ra']:.3f}\b", done.stdout)  # the table Inspect prints


def test_a_server_dying_midway_leaves_lmms_eval_failures_mmrobust_refuses(tmp_path, capsys):
    need_lmms_eval()
    world = generate_mmr_world(tmp_path / "world", pairs_per_category=2, seed=0, image_size=32).parent
    assert main(["mmr", "export", "--format", "lmms-eval", "--data", str(world), "--out", str(tmp_path / "tasks"),
                 "--max-new-tokens", "4"]) == 0
    replies = known_replies(world)
    by_prompt = {q.prompt: q.uid for q in harness_questions(load_mmr(world))}
    with dying_server(lambda prompt: replies[by_prompt[prompt]], answers=12) as (base_url, answered):
        results, samples = _lmms_eval(tmp_path / "tasks", "stub", base_url, tmp_path / "runs", tmp_path,
                                      "num_concurrent=1", "max_retries=1", "retry_backoff_s=0")
    got = {by_prompt[p]: replies[by_prompt[p]] for p in answered}
    want = oracle(world, {uid: got.get(uid) for uid in replies})  # unanswered: failed requests
    assert len(answered) == 12 and want["n_pairs_error"] >= 2
    assert results["mmr_pairs_error,none"] == want["n_pairs_error"] and results["mmr_ra,none"] == want["ra"]
    before = sha(samples)
    rc = main(["mmr", "score", str(samples), "--format", "lmms-eval", "--data", str(world), "--out",
               str(tmp_path / "refused")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "4 of 16 requests failed in lmms-eval" in err and len(err.splitlines()) == 1
    assert sha(samples) == before and not (tmp_path / "refused").exists()
    allowed = _score(samples, "lmms-eval", world, tmp_path / "allowed", "--allow-errors")
    assert {k: allowed[k] for k in METRICS} == {k: want[k] for k in METRICS}
