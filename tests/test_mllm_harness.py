"""The shared MLLM harness through a toy benchmark registered in one small file (tests/toy_benchmark.py):
cache, resume without repeated calls, the results record, and its section in the HTML report."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import toy_benchmark  # noqa: F401  (registers the "colour-quiz" evaluation)
from mmrobust.errors import ConfigError
from mmrobust.eval.contract import run_evaluation
from mmrobust.models.mllm.scripted import ScriptedAdapter
from mmrobust.registry import EVALS
from mmrobust.reports.contract import write_record
from mmrobust.reports.html import write_report

REPLIES = {"red": "A", "green": "B.", "blue": "I think it is A"}  # blue is answered wrong


def _adapter(errors: tuple[str, ...] = ()) -> ScriptedAdapter:
    return ScriptedAdapter(model="toy", responses=lambda r: REPLIES[r.uid], errors=errors)


def test_toy_benchmark_runs_end_to_end_on_the_shared_harness(tmp_path: Path) -> None:
    assert "colour-quiz" in EVALS.list() and {"zeroshot", "backdoor", "retrieval", "robust", "mmr"} <= set(EVALS.list())
    data, out = tmp_path / "images", tmp_path / "run"
    data.mkdir()
    first = _adapter(errors=("green",))  # one API error: recorded, never turned into an answer
    rec = run_evaluation("colour-quiz", model=first, data=data, settings={"n_boot": 50}, out_dir=out)
    assert first.calls == ["red", "green", "blue"]
    assert rec.metrics["overall"]["n"] == 2 and rec.metrics["overall"]["n_errors"] == 1
    assert [s["status"] for s in rec.samples] == ["correct", "error", "wrong"]
    assert len((out / "cache.jsonl").read_text().splitlines()) == 2  # only answers are cached

    second = _adapter()
    rec = run_evaluation("colour-quiz", model=second, data=data, settings={"n_boot": 50}, out_dir=out)
    assert second.calls == ["green"]  # resumed: only the failed question is asked again
    assert rec.extra["calls"]["n_cached_before"] == 2 and rec.extra["calls"]["n_new_calls"] == 1
    o = rec.metrics["overall"]
    assert o["accuracy"] == pytest.approx(2 / 3) and o["says_a"] == pytest.approx(2 / 3) and o["accuracy_ci"]
    assert rec.metrics["per_group"]["blue"]["accuracy"] == 0.0 and rec.metrics["by_parser"]["lenient"]["n"] == 3

    written = write_record(out, rec)
    assert json.loads((out / "results_colour-quiz.json").read_text())["kind"] == "colour-quiz" == written["kind"]
    samples = [json.loads(x) for x in (out / "samples_colour-quiz.jsonl").read_text().splitlines()]
    assert [s["pred"] for s in samples] == ["A", "B", "A"] and written["files"]["samples"] == "samples_colour-quiz.jsonl"
    page = write_report([out], tmp_path / "report.html").read_text()
    assert "colour-quiz: accuracy per group" in page and "<th>accuracy (%)</th>" in page
    assert "<td class=\"num\">66.7</td>" in page and "unparseable answers count as wrong" in page


def test_settings_of_an_evaluation_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"has no setting\(s\) \['nboot'\]"):
        run_evaluation("colour-quiz", model=_adapter(), data=tmp_path, settings={"nboot": 5}, out_dir=tmp_path)
    with pytest.raises(ConfigError, match="unknown evaluation 'zeroshop'.*did you mean 'zeroshot'"):
        run_evaluation("zeroshop", model=None, data=None)
