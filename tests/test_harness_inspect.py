"""MMR as an Inspect task, run by Inspect itself (``inspect_ai.eval``) with its ``mockllm`` provider answering the
known replies (``tests/_harness.known_replies``): Inspect's RA / MR metrics equal mmrobust's scoring of the same
replies, and ``mmrobust mmr score --format inspect`` refuses unfinished, partial or failed logs in one line.
The same task against a served model through ``openai-api`` is in ``test_harness_served.py``."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from _harness import known_replies, oracle, sha
from mmrobust.cli.main import main
from mmrobust.eval.mmr import load_mmr
from mmrobust.integrations import harness_questions
from mmrobust.world.mmr import generate_mmr_world

pytest.importorskip("inspect_ai")

from inspect_ai import eval as inspect_eval  # noqa: E402
from inspect_ai.log import read_eval_log, write_eval_log  # noqa: E402
from inspect_ai.model import ModelOutput, ModelUsage, get_model  # noqa: E402

from mmrobust.integrations.inspect_mmr import mmr  # noqa: E402

METRICS = ("ra", "mr", "n_pairs", "n_pairs_error", "n_unparseable")


def _mock(world: Path, fail_uid: str | None = None):
    """Inspect's mockllm answering each prompt with its known reply (raising for ``fail_uid``)."""
    questions = harness_questions(load_mmr(world))
    by_prompt = {q.prompt: q.uid for q in questions}
    assert len(by_prompt) == len(questions)  # every prompt names one question
    replies = known_replies(world)

    def answer(messages, tools, tool_choice, config) -> ModelOutput:
        uid = by_prompt[messages[-1].text]
        if uid == fail_uid:
            raise RuntimeError("the server went away")
        out = ModelOutput.from_content(model="mockllm", content=replies[uid])
        out.usage = ModelUsage(input_tokens=1, output_tokens=1, total_tokens=2)  # no tokenizer download
        return out

    return get_model("mockllm/model", custom_outputs=answer)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("inspect")
    world = generate_mmr_world(root / "world", pairs_per_category=2, seed=0, image_size=32).parent
    fail_uid = harness_questions(load_mmr(world))[5].uid
    [clean] = inspect_eval(mmr(data=str(world)), model=_mock(world), log_dir=str(root / "logs"), display="none")
    [failed] = inspect_eval(mmr(data=str(world)), model=_mock(world, fail_uid), log_dir=str(root / "logs-failed"),
                            display="none", fail_on_error=False)
    return root, world, clean, failed, fail_uid


def _metrics(log) -> dict:
    return {k: v.value for k, v in log.results.scores[0].metrics.items()}


def _score(log: Path, world: Path, out: Path, capsys, *extra: str) -> tuple[int, str]:
    rc = main(["mmr", "score", str(log), "--format", "inspect", "--data", str(world), "--out", str(out),
               "--bootstrap", "0", *extra])
    return rc, capsys.readouterr().err.strip()


def _overall(out: Path) -> dict:
    return json.loads((out / "results_mmr.json").read_text())["metrics"]["overall"]


def test_inspects_ra_mr_are_mmrobusts_on_the_same_replies(runs, capsys):
    root, world, clean, _, _ = runs
    want = oracle(world, known_replies(world))
    assert clean.status == "success" and 0 < want["ra"] < 1 and 0 < want["mr"] < 1
    assert _metrics(clean) == {"ra": want["ra"], "mr": want["mr"], "pairs": want["n_pairs"]}
    rc, _ = _score(Path(clean.location), world, root / "scored", capsys)
    assert rc == 0 and {k: _overall(root / "scored")[k] for k in METRICS} == {k: want[k] for k in METRICS}


def test_a_failed_request_is_refused_or_counted_never_scored(runs, capsys):
    root, world, _, failed, fail_uid = runs
    log = Path(failed.location)
    before = sha(log)
    rc, err = _score(log, world, root / "refused", capsys)
    assert rc == 2 and f"1 of 16 requests failed in inspect (first: {fail_uid}" in err and len(err.splitlines()) == 1
    assert not (root / "refused").exists() and sha(log) == before
    rc, _ = _score(log, world, root / "allowed", capsys, "--allow-errors")
    got = _overall(root / "allowed")
    want = oracle(world, {**known_replies(world), fail_uid: None})
    assert rc == 0 and got["n_pairs_error"] == 1 and {k: got[k] for k in METRICS} == {k: want[k] for k in METRICS}
    assert _metrics(failed)["ra"] == want["ra"]  # Inspect scored the other pairs alike


def test_partial_unfinished_and_repeated_logs_are_refused(runs, tmp_path, capsys):
    _, world, clean, _, _ = runs
    full = read_eval_log(clean.location)
    cut = full.model_copy(update={"samples": full.samples[:-3]})
    unfinished = full.model_copy(update={"status": "cancelled"})
    twice = full.model_copy(update={"samples": full.samples + full.samples[:1]})
    cases = {"cut": (cut, "lacks 3 of 16 questions"), "unfinished": (unfinished, "did not finish (status cancelled"),
             "twice": (twice, "more than once")}
    for name, (log, message) in cases.items():
        path = tmp_path / f"{name}.json"
        write_eval_log(log, str(path))
        rc, err = _score(path, world, tmp_path / f"out-{name}", capsys)
        assert rc == 2 and message in err and len(err.splitlines()) == 1, (name, err)
    rc, err = _score(tmp_path / "cut.json", world, tmp_path / "out", capsys, "--allow-errors")
    assert rc == 2 and "lacks 3 of 16" in err  # --allow-errors keeps failures as errors; it never invents replies
    (tmp_path / "junk.json").write_text('{"not": "a log"}')
    rc, err = _score(tmp_path / "junk.json", world, tmp_path / "out", capsys)
    assert rc == 2 and "not an Inspect log" in err
