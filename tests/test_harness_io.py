"""MMR for lmms-eval and VLMEvalKit without a model: the exports, lmms-eval's task functions and config loader,
the import of their logs into ``mmrobust mmr score``, and refusals of partial or mismatched logs.

The replies are known (``tests/_harness.known_replies``); the oracle scores them with mmrobust's library
directly. lmms-eval and Inspect runs against a served model are in ``test_harness_served.py``.
"""
from __future__ import annotations

import base64
import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from mmrobust.cli.main import main
from mmrobust.eval.mmr import load_mmr
from mmrobust.integrations import harness_questions
from mmrobust.integrations.lmms_eval import functions as fn
from mmrobust.world.mmr import generate_mmr_world
from _harness import known_replies, need_lmms_eval, oracle, sha

METRICS = ("ra", "mr", "n_pairs", "n_pairs_error", "n_unparseable")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return generate_mmr_world(tmp_path_factory.mktemp("harness") / "world", pairs_per_category=2, seed=0,
                              image_size=32).parent


def _score(args: list[str], capsys) -> tuple[int, str]:
    rc = main(["mmr", "score", *args, "--bootstrap", "0"])
    return rc, capsys.readouterr().err.strip()


def _overall(out: Path) -> dict:
    return json.loads((out / "results_mmr.json").read_text())["metrics"]["overall"]


def test_importing_the_integrations_imports_no_harness():
    code = ("import sys, mmrobust.integrations, mmrobust.integrations.score, mmrobust.integrations.lmms_eval, "
            "mmrobust.integrations.vlmevalkit, mmrobust.cli.mmr; harnesses = ('lmms_eval', 'inspect_ai', 'datasets', "
            "'openpyxl', 'pandas'); print(sorted(m for m in harnesses if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ----------------------------------------------------------------------------------------------- lmms-eval


def _export_lmms(world: Path, out: Path, *extra: str) -> Path:
    assert main(["mmr", "export", "--format", "lmms-eval", "--data", str(world), "--out", str(out), *extra]) == 0
    return out / "mmr"


def test_lmms_eval_task_folder_loads_with_lmms_evals_loader_and_scores_like_mmrobust(world, tmp_path):
    need_lmms_eval()
    from lmms_eval.utils import load_yaml_config

    folder = _export_lmms(world, tmp_path / "tasks", "--max-new-tokens", "3")
    config = load_yaml_config(str(folder / "mmr.yaml"), mode="full")  # lmms-eval's own reader, !function and all
    assert config["task"] == "mmr" and config["generation_kwargs"]["max_new_tokens"] == 3
    assert config["dataset_kwargs"]["data_files"]["test"] == str(folder / "mmr.jsonl")  # resolved beside the YAML
    assert config["process_results"].__name__ == "mmr_process_results"
    aggregations = {m["metric"]: m["aggregation"] for m in config["metric_list"]}

    docs = [json.loads(line) for line in (folder / "mmr.jsonl").read_text().splitlines()]
    questions = harness_questions(load_mmr(world))
    assert [d["uid"] for d in docs] == [q.uid for q in questions]
    assert [config["doc_to_text"](d) for d in docs] == [q.prompt for q in questions]  # mmrobust's own prompts
    [image] = config["doc_to_visual"](docs[0])
    assert image.tobytes() == Image.open(questions[0].image).convert("RGB").tobytes()

    replies = known_replies(world)
    failed = docs[-1]["uid"]  # a request lmms-eval could not complete: an error, never a reply
    texts = {**replies, failed: "[LMMS_EVAL_REQUEST_FAILED after 5 retries] Connection error."}
    results = [config["process_results"](d, [texts[d["uid"]]]) for d in docs]
    got = {name: agg([r[name] for r in results]) for name, agg in aggregations.items()}
    want = oracle(world, {**replies, failed: None})
    assert want["n_pairs_error"] == 1 and 0 < want["ra"] < 1 and 0 < want["mr"] < 1
    assert got == {"mmr_ra": want["ra"], "mmr_mr": want["mr"], "mmr_pairs": want["n_pairs"],
                   "mmr_pairs_error": want["n_pairs_error"]}


def test_lmms_eval_export_refuses_to_overwrite_and_bad_names(world, tmp_path, capsys):
    _export_lmms(world, tmp_path / "t")
    before = sha(tmp_path / "t" / "mmr" / "mmr.jsonl")
    assert main(["mmr", "export", "--format", "lmms-eval", "--data", str(world), "--out", str(tmp_path / "t")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert sha(tmp_path / "t" / "mmr" / "mmr.jsonl") == before
    foreign = tmp_path / "f" / "mmr"
    foreign.mkdir(parents=True)
    (foreign / "mmr.yaml").write_text("mine\n")
    assert main(["mmr", "export", "--format", "lmms-eval", "--data", str(world), "--out", str(tmp_path / "f"),
                 "--overwrite"]) == 2
    assert "did not write them" in capsys.readouterr().err and (foreign / "mmr.yaml").read_text() == "mine\n"
    assert main(["mmr", "export", "--format", "lmms-eval", "--data", str(world), "--out", str(tmp_path / "g"),
                 "--name", "mmr; rm"]) == 2
    assert "task name" in capsys.readouterr().err
    lone = tmp_path / "lone.json"  # one question, no pair: nothing to export, and nothing written
    lone.write_text(json.dumps([{"id": "a/b/01", "question": "Q?\nA. x\nB. y", "ground_truth": "A",
                                 "question_type": "POS", "image": "missing.png"}]))
    assert main(["mmr", "export", "--format", "vlmevalkit", "--data", str(lone), "--out", str(tmp_path / "h")]) == 2
    assert "no valid POS/NEG pair" in capsys.readouterr().err and not (tmp_path / "h").exists()


def _lmms_samples(world: Path, folder: Path, texts: dict[str, str]) -> list[dict]:
    """Lines shaped as lmms-eval 0.7's --log_samples writes them (see test_harness_served for a real one)."""
    docs = [json.loads(line) for line in (folder / "mmr.jsonl").read_text().splitlines()]
    lines = []
    for i, d in enumerate(docs):
        rows = fn.mmr_process_results(d, [texts[d["uid"]].strip()])
        lines.append({"doc_id": i, "target": d["ground_truth"], "filtered_resps": texts[d["uid"]],
                      "input": d["prompt"], **rows})
    return lines


def _write_jsonl(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def test_lmms_eval_samples_import_and_its_refusals(world, tmp_path, capsys):
    folder = _export_lmms(world, tmp_path / "tasks")
    replies = known_replies(world)
    lines = _lmms_samples(world, folder, replies)
    log = _write_jsonl(tmp_path / "samples_mmr.jsonl", lines)
    rc, _ = _score([str(log), "--format", "lmms-eval", "--data", str(world), "--out", str(tmp_path / "s")], capsys)
    assert rc == 0
    want = oracle(world, replies)
    assert {k: _overall(tmp_path / "s")[k] for k in METRICS} == {k: want[k] for k in METRICS}
    predict_only = [{k: v for k, v in x.items() if not k.startswith("mmr_")} for x in lines]  # by doc_id
    _write_jsonl(tmp_path / "p.jsonl", predict_only)
    assert _score([str(tmp_path / "p.jsonl"), "--format", "lmms-eval", "--data", str(world), "--out",
                   str(tmp_path / "sp")], capsys)[0] == 0
    assert {k: _overall(tmp_path / "sp")[k] for k in METRICS} == {k: want[k] for k in METRICS}

    failed = dict(replies)
    failed[lines[3]["mmr_ra"]["uid"]] = "[LMMS_EVAL_REQUEST_FAILED after 5 retries] Connection refused"
    other_truth = [dict(x, target="D" if x["target"] != "D" else "A") if i == 2 else x for i, x in enumerate(
        predict_only)]
    cases = {
        "cut": (lines[:-2], f"lacks 2 of {len(lines)} questions (missing: {lines[-2]['mmr_ra']['uid']}"),
        "twice": (lines + lines[:1], "more than once"),
        "failed": (_lmms_samples(world, folder, failed), "1 of 16 requests failed in lmms-eval"),
        "truth": (other_truth, "gives ground truth"),
        "prompt": ([dict(x, input=x["input"] + " Think.") if i == 5 else x for i, x in enumerate(lines)],
                   "another text than the 'official' prompt"),
        "foreign": ([dict(x, mmr_ra=dict(x["mmr_ra"], uid="other/x/01|POS")) if i == 0 else x
                     for i, x in enumerate(lines)], "does not hold"),
    }
    for name, (bad, message) in cases.items():
        path = _write_jsonl(tmp_path / f"{name}.jsonl", bad)
        before = sha(path)
        rc, err = _score([str(path), "--format", "lmms-eval", "--data", str(world), "--out", str(tmp_path / name)],
                         capsys)
        assert rc == 2 and message in err and len(err.splitlines()) == 1, (name, err)
        assert sha(path) == before and not (tmp_path / name).exists()  # nothing written, the log untouched
    (tmp_path / "cut.jsonl").write_text((tmp_path / "samples_mmr.jsonl").read_text()[:-40])
    rc, err = _score([str(tmp_path / "cut.jsonl"), "--format", "lmms-eval", "--data", str(world)], capsys)
    assert rc == 2 and "is not JSON" in err

    rc, _ = _score([str(tmp_path / "failed.jsonl"), "--format", "lmms-eval", "--data", str(world), "--out",
                    str(tmp_path / "allowed"), "--allow-errors"], capsys)
    got, want = _overall(tmp_path / "allowed"), oracle(world, {**failed, lines[3]["mmr_ra"]["uid"]: None})
    assert rc == 0 and got["n_pairs_error"] == 1 and {k: got[k] for k in METRICS} == {k: want[k] for k in METRICS}


# ---------------------------------------------------------------------------------------------- VLMEvalKit


def _vlm_frame(world: Path, out: Path):
    """The exported TSV as VLMEvalKit loads it (pandas, tab-separated), images resolved as its base class does."""
    pd = pytest.importorskip("pandas")
    assert main(["mmr", "export", "--format", "vlmevalkit", "--data", str(world), "--out", str(out)]) == 0
    frame = pd.read_csv(out / "MMR_mmrobust.tsv", sep="\t")
    images = {str(i): str(im) for i, im in zip(frame["index"], frame["image"])}
    resolved = [images[images[str(i)]] if len(images[str(i)]) <= 64 else images[str(i)] for i in frame["index"]]
    return frame, resolved


def test_vlmevalkit_tsv_holds_the_questions_in_its_mcq_columns(world, tmp_path):
    frame, images = _vlm_frame(world, tmp_path / "vlm")
    questions = harness_questions(load_mmr(world))
    items = {i.uid: i for i in load_mmr(world).items}
    assert list(frame.columns[:10]) == ["index", "image", "question", "A", "B", "C", "D", "answer", "category",
                                        "l2-category"]
    assert list(frame["index"]) == list(range(len(questions)))
    assert list(frame["uid"]) == [q.uid for q in questions]
    assert list(frame["answer"]) == [q.ground_truth for q in questions]
    assert list(frame["question"]) == [items[q.uid].stem for q in questions]
    for (_, row), q, encoded in zip(frame.iterrows(), questions, images):
        assert {k: row[k] for k in q.options} == dict(q.options)
        pixels = Image.open(io.BytesIO(base64.b64decode(encoded))).convert("RGB").tobytes()
        assert pixels == Image.open(q.image).convert("RGB").tobytes()
    assert sum(len(str(x)) <= 64 for x in frame["image"]) == len(questions) // 2  # each NEG reuses its POS image


def _predictions(frame, replies: dict[str, str]):
    pred = frame.drop(columns=["image"]).copy()  # what VLMEvalKit's infer_data_job dumps
    pred["prediction"] = [replies[u] for u in pred["uid"]]
    return pred


def test_vlmevalkit_predictions_round_trip_xlsx_and_tsv(world, tmp_path, capsys):
    pytest.importorskip("openpyxl")
    frame, _ = _vlm_frame(world, tmp_path / "vlm")
    replies = known_replies(world)
    pred = _predictions(frame, replies)
    pred.to_excel(tmp_path / "m_MMR_mmrobust.xlsx", index=False)
    pred.to_csv(tmp_path / "m_MMR_mmrobust.tsv", sep="\t", index=False, quoting=csv.QUOTE_ALL)
    pred.to_json(tmp_path / "m_MMR_mmrobust.json", orient="records")
    want = oracle(world, replies)
    for suffix in ("xlsx", "tsv", "json"):
        out = tmp_path / f"score-{suffix}"
        assert _score([str(tmp_path / f"m_MMR_mmrobust.{suffix}"), "--format", "vlmevalkit", "--data", str(world),
                       "--out", str(out)], capsys)[0] == 0
        assert {k: _overall(out)[k] for k in METRICS} == {k: want[k] for k in METRICS}, suffix
    samples = [json.loads(x) for x in (tmp_path / "score-xlsx" / "samples_mmr.jsonl").read_text().splitlines()]
    assert {s["prompt_variant"] for s in samples} == {"vlmevalkit"}  # not mmrobust's prompt: recorded as such


def test_vlmevalkit_hostile_prediction_files(world, tmp_path, capsys):
    frame, _ = _vlm_frame(world, tmp_path / "vlm")
    pred = _predictions(frame, known_replies(world))
    n = len(pred)
    failed = pred.copy()
    failed.loc[4, "prediction"] = "Failed to obtain answer via API. Connection reset"
    cases = {
        "missing": (pred.drop(index=[3, 7]), f"lacks 2 of {n} questions"),
        "extra": (pred.assign(index=[i if i != 5 else n + 3 for i in pred["index"]]), "whose index is not a question"),
        "twice": (pred.drop(columns=["uid"]).assign(index=[i if i != 5 else 4 for i in pred["index"]]),
                  "more than once"),
        "other-uid": (pred.assign(index=[i if i != 5 else 4 for i in pred["index"]]),
                      "it was exported from other data"),
        "no-prediction": (pred.rename(columns={"prediction": "answer_text"}), "lacks the column(s) prediction"),
        "no-index": (pred.drop(columns=["index"]), "lacks the column(s) index"),
        "bad-index": (pred.astype({"index": str}).assign(index=["x"] + list(pred["index"][1:].astype(str))),
                      "is not a whole number"),
        "answer": (pred.assign(answer=["D" if a != "D" else "A" for a in pred["answer"]]), "gives ground truth"),
        "failed": (failed, "1 of 16 requests failed in vlmevalkit"),
    }
    for name, (bad, message) in cases.items():
        path = tmp_path / f"{name}.tsv"
        bad.to_csv(path, sep="\t", index=False, quoting=csv.QUOTE_ALL)
        rc, err = _score([str(path), "--format", "vlmevalkit", "--data", str(world), "--out", str(tmp_path / name)],
                         capsys)
        assert rc == 2 and message in err and len(err.splitlines()) == 1, (name, err)
        assert not (tmp_path / name).exists()
    (tmp_path / "broken.xlsx").write_bytes(b"PK\x03\x04 not really a workbook")
    rc, err = _score([str(tmp_path / "broken.xlsx"), "--format", "vlmevalkit", "--data", str(world)], capsys)
    assert rc == 2 and "not a readable .xlsx" in err
    rc, err = _score([str(tmp_path / "failed.tsv"), "--format", "vlmevalkit"], capsys)
    assert rc == 2 and "needs --data" in err
    rc, err = _score([str(tmp_path / "failed.tsv"), "--format", "vlmevalkit", "--data", str(world), "--out",
                      str(tmp_path / "allowed"), "--allow-errors"], capsys)
    assert rc == 0 and _overall(tmp_path / "allowed")["n_pairs_error"] == 1
