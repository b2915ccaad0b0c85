"""`mmrobust card`: a CLIP card end to end through the CLI on a micro CLIP (world generated into the card folder),
reused section by section on a rerun, its verdicts moving with a threshold, an interrupted section resuming from
its partial file; the LVLM card on a tiny LLaVA; the hostile inputs (user files in --out, a model that does not
load, unknown names) refused in one line with nothing written."""
from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

from mmrobust.cli.main import main
from mmrobust.errors import ConfigError
from mmrobust.jsonio import read_json
from mmrobust.models import save_clip
from mmrobust.models.clip import create_clip
from mmrobust.pipelines.card_model import detect_kind
from mmrobust.pipelines.card_settings import card_budget, card_thresholds

# the quick budget cut down to seconds: 24 world images, 8 attacked for 2 steps at two radii
TINY_CLIP = ["--budget-opt", "world_images=24", "--budget-opt", "n_robust=8", "--budget-opt", "steps=2",
             "--budget-opt", "attack_batch=4", "--eps", "2/255,4/255"]


@pytest.fixture(scope="module")
def micro_clip(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("micro-clip") / "model"
    save_clip(create_clip("mmrobust-micro", seed=0), path)
    return str(path)


def _card(out: Path, model: str, *extra: str) -> int:
    return main(["card", "--model", model, "--out", str(out), *TINY_CLIP, *extra])


def _stamps(out: Path) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/stage.json")}


def test_clip_card_runs_reuses_and_moves_its_verdict_with_the_threshold(tmp_path, micro_clip, monkeypatch, capsys):
    out = tmp_path / "card"
    assert _card(out, micro_clip) == 0
    card = read_json(out / "card.json")
    assert card["kind"] == "clip" and [s["status"] for s in card["sections"]] == ["ran", "ran", "ran", "skipped"]
    robust = read_json(out / "robust" / "results_robust.json")
    line = next(v for v in card["summary"] if v["threshold"] == "robust_accuracy")
    # the headline is the robust record's own number at the headline eps, judged against the default 0.3
    assert line["value"] == robust["metrics"]["eps"]["4/255"]["robust_top1"]
    assert line["verdict"] == ("FAIL" if line["value"] < 0.3 else "PASS") and line["limit"] == 0.3
    assert read_json(out / "zeroshot" / "results_zeroshot.json")["metrics"]["n"] == 24
    classes = read_json(out / "classes" / "results_classes.json")
    assert sum(r["n"] for r in classes["metrics"]["classes"]) == 8  # every attacked image in one class row
    page = (out / "card.html").read_text()
    for text in ("Summary", "Robust accuracy under apgd-ce", "The classes that break first", "skipped: no --audit-data",
                 line["headline"]):
        assert text in page
    assert page.count("data:image/png;base64") >= 1  # the classes chart, embedded from the record's files.plots

    # rerun with the threshold moved: every section reused (no model load, no stage rewritten), verdict flipped
    before = _stamps(out)
    monkeypatch.setattr("mmrobust.pipelines.evaluate.load_model", _no_load)
    limit = "0%" if line["verdict"] == "FAIL" else "100%"
    capsys.readouterr()
    assert _card(out, micro_clip, "--threshold", f"robust_accuracy={limit}") == 0
    printed = capsys.readouterr().out
    assert printed.count(": reused") == 3
    again = read_json(out / "card.json")
    assert [s["status"] for s in again["sections"]] == ["reused", "reused", "reused", "skipped"]
    assert _stamps(out) == before
    flipped = next(v for v in again["summary"] if v["threshold"] == "robust_accuracy")
    assert flipped["value"] == line["value"] and flipped["verdict"] != line["verdict"]
    assert flipped["line"] in printed


def _no_load(*args, **kwargs):
    raise AssertionError("a reused section loaded the model")


def test_an_interrupted_section_resumes_from_its_partial_file(tmp_path, micro_clip, monkeypatch):
    from mmrobust.registry import ATTACKS

    calls = []
    real = ATTACKS.get("apgd-ce")

    @functools.wraps(real)
    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setitem(ATTACKS._items, "apgd-ce", counted)
    real_write = __import__("mmrobust.pipelines.evaluate", fromlist=["_write"])._write

    def killed(*args, **kwargs):  # the attack finished every chunk, then the run is killed before its record
        raise KeyboardInterrupt

    out = tmp_path / "card"
    monkeypatch.setattr("mmrobust.pipelines.evaluate._write", killed)
    assert _card(out, micro_clip, "--sections", "robust") == 130
    n_chunks = len(calls)
    assert n_chunks == 4 and (out / "robust" / "partial_robust.jsonl").is_file()  # 2 eps x 2 batches of 4
    assert not (out / "robust" / "stage.json").exists() and not (out / "card.html").exists()
    monkeypatch.setattr("mmrobust.pipelines.evaluate._write", real_write)
    assert _card(out, micro_clip, "--sections", "robust") == 0
    assert len(calls) == n_chunks  # every chunk came from the partial file
    assert read_json(out / "card.json")["sections"][0]["status"] == "ran"
    assert (out / "robust" / "results_robust.json").is_file() and not (out / "robust" / "partial_robust.jsonl").exists()


def test_hostile_out_folder_and_models_are_refused_in_one_line(tmp_path, micro_clip, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert _card(mine, micro_clip) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "notes.txt" in err and "did not write" in err
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"] and (mine / "notes.txt").read_text() == "keep me"

    assert _card(tmp_path / "a", micro_clip, "--threshold", "robustness=0.3") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown threshold 'robustness'" in err and "robust_accuracy" in err
    assert _card(tmp_path / "a", micro_clip, "--sections", "vqa") == 2
    assert "for LVLM models" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()  # refused before anything was written

    broken = tmp_path / "broken"
    broken.mkdir()
    for f in Path(micro_clip).iterdir():
        (broken / f.name).write_bytes(f.read_bytes()[:200] if f.suffix == ".safetensors" else f.read_bytes())
    out = tmp_path / "card"
    assert _card(out, str(broken)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "failed to load" in err and "finished sections are kept" in err
    # nothing but the generated data: no section folder, no number, no page
    assert sorted(p.name for p in out.iterdir()) == [".mmrobust-card.json", "data"]
    assert _card(out, str(tmp_path / "missing" / "model")) == 2
    assert "not found" in capsys.readouterr().err


def test_kind_detection_budget_and_threshold_parsing(tmp_path, micro_clip):
    assert detect_kind(micro_clip) == "clip" and detect_kind("ViT-B-32", pretrained="openai") == "clip"
    assert detect_kind("llava-hf/llava-1.5-7b-hf") == "lvlm"
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "llava_next"}))
    assert detect_kind(str(hf)) == "lvlm"
    (hf / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ConfigError, match="not a LLaVA-family"):
        detect_kind(str(hf))
    assert detect_kind(str(hf), kind="lvlm") == "lvlm"
    assert card_thresholds({"flip_rate": "10%", "misleading_rate": 0.2}).flip_rate == pytest.approx(0.1)
    with pytest.raises(ConfigError, match="share"):
        card_thresholds({"flip_rate": "150%"})
    full = card_budget("full", {"n_robust": "50"})
    assert full.attack == "autoattack" and full.n_robust == 50 and full.steps == 100
    with pytest.raises(ConfigError, match="unknown budget"):
        card_budget("huge")


def test_model_card_follows_the_page(tmp_path, micro_clip):
    pytest.importorskip("mmrobust.reports.model_card", reason="the model card writer (mmrobust.reports.model_card) "
                                                               "is another branch's; --model-card needs it")
    out = tmp_path / "card"
    assert _card(out, micro_clip, "--sections", "zeroshot", "--model-card") == 0
    text = (out / "model_card" / "README.md").read_text()
    assert text.startswith("---") and "model-index" in text


def test_lvlm_card_on_a_tiny_llava(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("pycocoevalcap")
    from mmrobust.world.llava import build_tiny_llava

    words = ("What shape colour is the in picture ? Answer question using a single word or phrase . Provide "
             "one-sentence caption for provided image circle square triangle star red blue green")
    llava = build_tiny_llava(tmp_path / "llava", seed=0, image_size=32, extra_words=[words])
    out = tmp_path / "card"
    tiny = ["vqa_per_category=1", "caption_images=2", "mmr_pairs_per_category=1", "lvlm_steps=1", "targeted_steps=1",
            "n_boot=0", "max_new_tokens=3", "lvlm_batch=4", "templates=[are-you-sure]"]
    args = ["card", "--model", str(llava), "--out", str(out), "--target", "circle",
            *[a for t in tiny for a in ("--budget-opt", t)]]
    assert main(args) == 0
    card = read_json(out / "card.json")
    assert card["kind"] == "lvlm"
    assert {s["name"]: s["status"] for s in card["sections"]} == {n: "ran" for n in
                                                                  ("vqa", "caption", "targeted", "mmr", "challenge")}
    by = {v["section"]: v for v in card["summary"]}
    assert set(by) == {"vqa", "caption", "targeted", "mmr", "challenge"}
    vqa = read_json(out / "vqa" / "results_vqa-attack.json")["metrics"]
    assert by["vqa"]["value"] == vqa["adversarial"]["accuracy"] and vqa["inside_eps"]
    assert read_json(out / "mmr" / "results_mmr.json")["metrics"]["overall"]["n_pairs"] == 4  # 4 world categories
    assert "results_challenge.json" in {p.name for p in (out / "challenge").iterdir()}
    assert main(args) == 0  # the rerun reuses all five
    assert {s["status"] for s in read_json(out / "card.json")["sections"]} == {"reused"}


def test_the_audit_section_searches_neighbours_in_the_audit_reference(tmp_path, micro_clip, micro_world, capsys):
    from mmrobust.data.poison import make_trigger, poison_manifest

    rec = poison_manifest(manifest=micro_world.train_manifest, out_dir=tmp_path / "p", target="star", count=13,
                          trigger=make_trigger("badnet", size=4))
    out = tmp_path / "card"
    assert _card(out, micro_clip, "--sections", "audit", "--audit-data", str(rec.manifest), "--poison-record",
                 str(rec.record_path), "--audit-reference", str(micro_world.test_manifest)) == 0
    audit = read_json(out / "audit" / "results_audit.json")
    assert audit["protocol"]["reference"] == {"data": str(micro_world.test_manifest), "n": 64}
    line = next(v for v in read_json(out / "card.json")["summary"] if v["section"] == "audit")
    assert "neighbours among the clean pairs of" in line["line"]
    capsys.readouterr()
    assert main(["card", "--model", micro_clip, "--out", str(tmp_path / "no"), "--audit-reference",
                 str(micro_world.test_manifest)]) == 2
    err = capsys.readouterr().err
    assert "--audit-reference goes with --audit-data" in err and err.count("\n") == 1
