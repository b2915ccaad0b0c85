"""The backdoor matrix (`mmrobust study backdoor`) on tiny settings: every cell written, stages shared and
reused, the filter defenses retrain on the cleaned manifest, bad names refused in one line."""
from __future__ import annotations

import pytest

from mmrobust.cli.main import main
from mmrobust.data.manifest import read_csv
from mmrobust.errors import ConfigError
from mmrobust.jsonio import read_json
from mmrobust.stories.backdoor import BackdoorDemo
from mmrobust.stories.study import BackdoorStudy, run_study

BASE = BackdoorDemo(n_train=400, n_test=60, model="mmrobust-micro", threads=1, poison_rate=0.05, pretrain_steps=3,
                    pretrain_batch=32, finetune_pairs=200, finetune_steps=2, finetune_batch=16)


def test_study_matrix_tiny(tmp_path):
    study = BackdoorStudy(attacks=("badnet", "label-consistent", "badclip"),
                          defenses=("none", "cleanclip", "filter+par"), k=5, badclip_steps=5, workers=1)
    out = tmp_path / "study"
    result = run_study(study, seeds=[0, 1], out_dir=out, base=BASE, progress=False, log=lambda m: None)
    rec = read_json(out / "matrix" / "results_study.json")
    cells = rec["metrics"]["cells"]
    assert len(cells) == 2 * 3 * 3 and all(0 <= c["asr"] <= 1 and 0 <= c["clean_top1"] <= 1 for c in cells)
    for seed in (0, 1):
        for attack in study.attacks:
            own = read_json(out / f"seed-{seed}" / attack / "pretrain" / "eval" / "stage.json")["output"]
            none = next(c for c in cells if (c["seed"], c["attack"], c["defense"]) == (seed, attack, "none"))
            assert (none["asr"], none["clean_top1"]) == (own["asr"], own["clean_top1"])
            # the filter dropped 10% of the 400 pairs; the filtered pretraining ran once and PAR started from it
            kept = read_csv(out / f"seed-{seed}" / attack / "audit" / "run" / "manifest.csv").rows
            assert len(kept) == 360
            assert (out / f"seed-{seed}" / attack / "filtered" / "pretrain" / "model").is_dir()
            assert (out / f"seed-{seed}" / attack / "filtered" / "ft-par" / "model").is_dir()
    # label-consistent poisoning keeps the captions: every poisoned row already named the target
    lc = read_json(out / "seed-0" / "label-consistent" / "poisoned" / "poison.json")
    assert lc["label_consistent"] and all("star" in p["caption"] for p in lc["poisoned"])
    # BadCLIP's patch was optimized once per seed on a clean surrogate and is what the poison record names
    for seed in (0, 1):
        patch = out / f"seed-{seed}" / "badclip" / "patch" / "patch.png"
        trig = read_json(out / f"seed-{seed}" / "badclip" / "poisoned" / "poison.json")["trigger"]
        assert trig["name"] == "patch" and trig["config"]["file"] == str(patch.resolve())
        assert (out / f"seed-{seed}" / "surrogate" / "model").is_dir()
    det = rec["metrics"]["detection"]
    assert len(det) == 6 and all(0 <= d["auroc"] <= 1 for d in det)
    assert (out / "matrix" / "matrix.png").stat().st_size > 0
    assert "| badnet" in result["table"] and "cleanclip" in result["table"]
    models = sorted(out.glob("seed-*/*/**/model/open_clip_model.safetensors"))
    stamps = [m.stat().st_mtime_ns for m in models]
    again = run_study(study, seeds=[0, 1], out_dir=out, base=BASE, progress=False, log=lambda m: None)
    assert [m.stat().st_mtime_ns for m in models] == stamps  # every stage reused
    assert read_json(out / "matrix" / "results_study.json")["metrics"]["cells"] == cells
    assert again["table"] == result["table"]


def test_study_with_a_clean_reference_audits_against_a_held_out_world(tmp_path):
    study = BackdoorStudy(attacks=("badnet",), defenses=("none", "filter-retrain"), k=5, workers=1,
                          reference="clean", reference_pairs=80)
    out = tmp_path / "study"
    run_study(study, seeds=[0], out_dir=out, base=BASE, progress=False, log=lambda m: None)
    ref = out / "seed-0" / "reference-world"
    assert len(read_csv(ref / "train.csv").rows) == 80
    assert read_json(ref / "world.json")["seed"] != read_json(out / "seed-0" / "world" / "world.json")["seed"]
    audit = read_json(out / "seed-0" / "badnet" / "audit-clean" / "run" / "results_audit.json")
    assert audit["protocol"]["reference"] == {"data": str(ref / "train.csv"), "n": 80}
    assert not (out / "seed-0" / "badnet" / "audit").exists()  # the all-pairs audit is another stage
    kept = read_csv(out / "seed-0" / "badnet" / "audit-clean" / "run" / "manifest.csv").rows
    assert len(kept) == 360
    assert (out / "seed-0" / "badnet" / "filtered-clean" / "pretrain" / "model").is_dir()
    rec = read_json(out / "matrix" / "results_study.json")
    assert any("clean reference" in t["title"] for t in rec["tables"])


def test_study_refuses_unknown_names_and_foreign_summary(tmp_path, capsys):
    with pytest.raises(ConfigError, match="unknown attack nope"):
        BackdoorStudy(attacks=("badnet", "nope"))
    with pytest.raises(ConfigError, match="drop_rate"):
        BackdoorStudy(drop_rate=1.0)
    with pytest.raises(ConfigError, match="study k"):
        BackdoorStudy(k=0)
    with pytest.raises(ConfigError, match="unknown detector"):
        BackdoorStudy(detector="magic")
    with pytest.raises(ConfigError, match="reference 'mine' is not one of all, clean"):
        BackdoorStudy(reference="mine")
    with pytest.raises(ConfigError, match="reference_pairs"):
        BackdoorStudy(reference="clean", reference_pairs=10)
    assert main(["study", "backdoor", "--attacks", "badnet,nope", "--out", str(tmp_path / "s")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown attack nope" in err[0]
    (tmp_path / "mine" / "matrix").mkdir(parents=True)
    (tmp_path / "mine" / "matrix" / "summary.md").write_text("my notes")
    assert main(["study", "backdoor", "--attacks", "badnet", "--out", str(tmp_path / "mine")]) != 0
    assert "no study aggregation wrote it" in capsys.readouterr().err
    assert (tmp_path / "mine" / "matrix" / "summary.md").read_text() == "my notes"
