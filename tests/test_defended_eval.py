"""Randomized models in the robust evaluation (probe, warning, table label) and the defended evaluation
(`mmrobust eval robust --defense ttc`): paper protocol and adaptive attack side by side, labelled."""
from __future__ import annotations

import pytest
import torch

from mmrobust.data.datasets import ClassInfo, LabelledDataset
from mmrobust.eval.contract import run_evaluation
from mmrobust.eval.randomized import LABEL, probe_randomness
from mmrobust.jsonio import read_json
from mmrobust.models import create_clip, save_clip
from mmrobust.registry import DEFENSES

TINY = {"n_samples": 12, "batch_size": 6, "attack_options": {"steps": 3}, "eps": (4 / 255,)}


@pytest.fixture(scope="module")
def setup(micro_world):
    model = create_clip("mmrobust-micro", seed=0)
    classes = ClassInfo.load(micro_world.classes)
    ds = LabelledDataset(micro_world.test_manifest, classes=classes, image_size=16, preload=True)
    return model, ds


def test_probe_tells_a_randomized_model_from_a_deterministic_one(setup):
    model, _ = setup
    x = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    fixed = probe_randomness(lambda z: model.encode_image(z), x)
    assert fixed["randomized"] is False and fixed["max_logit_diff"] == 0.0
    defended = DEFENSES.build("ttc", {}, model=model, seed=0)
    noisy = probe_randomness(lambda z: defended.encode_image(z), x)
    assert noisy["randomized"] is True and noisy["max_logit_diff"] > 0 and noisy["n"] == 6


def test_robust_eval_of_a_randomized_model_without_eot_is_labelled_not_robustness(setup):
    model, ds = setup
    defended = DEFENSES.build("ttc", {"steps": "1"}, model=model, seed=0)
    plain = run_evaluation("robust", model=defended, data=ds, settings={**TINY, "attack": "pgd"})
    assert plain.metrics["randomness"]["randomized"] is True
    assert LABEL in plain.tables[0].title
    assert any("not a robustness number" in w and "eot_samples" in w for w in plain.warnings)
    with_eot = run_evaluation("robust", model=defended, data=ds,
                              settings={**TINY, "attack": "pgd", "attack_options": {"steps": 3, "eot_samples": 2}})
    assert "EOT over 2 samples" in with_eot.tables[0].title and LABEL not in with_eot.tables[0].title
    assert not any("not a robustness number" in w for w in with_eot.warnings)
    fixed = run_evaluation("robust", model=model, data=ds, settings={**TINY, "attack": "pgd"})
    assert fixed.metrics["randomness"]["randomized"] is False and "randomized" not in fixed.tables[0].title
    assert not any("not a robustness number" in w for w in fixed.warnings)


def test_defended_record_shows_both_protocols_side_by_side(setup):
    model, ds = setup
    rec = run_evaluation("robust-defended", model=model, data=ds,
                         settings={**TINY, "defense": "ttc", "defense_options": {"steps": "1"}, "eot_samples": 2,
                                   "draws": 3})
    m, table = rec.metrics, rec.tables[0]
    assert m["randomness"]["randomized"] and m["eot_samples"] == 2 and m["draws"] == 3
    assert m["defense_config"]["steps"] == 1 and rec.protocol["defense"]["name"] == "ttc"
    headings = [c.heading for c in table.columns]
    assert "paper protocol: pgd" in headings[2] and "not robustness" in headings[2]
    assert "EOT 2" in headings[3] and "adaptive: worst case" in headings[4]
    assert "from the paper-protocol images" in headings[3] and rec.protocol["warm_start"] == "paper"
    r = m["eps"]["4/255"]
    assert r["configs"]["through"]["eot_samples"] == 2 and r["configs"]["through"]["steps"] == 3
    assert r["configs"]["paper"]["steps"] == 10 and r["configs"]["paper"]["step_size"] == pytest.approx(1 / 255)
    assert r["adaptive_top1"] == min(r[f"{k}_top1"] for k in ("paper", "transfer", "through", "worst_per_image"))
    assert sum(r["worst_from"].values()) == len(rec.samples) == m["n"] == 12
    for row in rec.samples:
        assert row["robust@4/255"] <= row["clean_correct"]
        accs = {"clean": row["defended_clean"], **{k: row[f"{k}@4/255"] for k in ("paper", "transfer", "through")}}
        assert row["worst_from@4/255"] == min(accs, key=accs.get)  # the worst candidate on the first draws...
        for v in (*accs.values(), row["worst@4/255"]):  # ...scored on 3 fresh draws
            assert abs(v * 3 - round(v * 3)) < 1e-6


def test_cli_eval_robust_with_a_defense(tmp_path, micro_world, capsys):
    from mmrobust.cli.main import main

    save_clip(create_clip("mmrobust-micro", seed=0), tmp_path / "m")
    common = ["eval", "robust", "--model", str(tmp_path / "m"), "--data", str(micro_world.test_manifest),
              "--classes", str(micro_world.classes), "--eps", "1/255,4/255", "--n-samples", "8", "--steps", "2"]
    out = tmp_path / "out"
    assert main([*common, "--out", str(out), "--defense", "ttc", "--defense-opt", "steps=1", "--eot-samples", "2",
                 "--draws", "2"]) == 0
    rec = read_json(out / "results_robust-defended.json")
    assert rec["config"]["defense"] == "ttc" and rec["config"]["defense_options"] == {"steps": 1}
    assert set(rec["metrics"]["eps"]) == {"1/255", "4/255"} and not (out / "partial_robust.jsonl").exists()
    rows = [r["eps"] for r in rec["tables"][0]["rows"]]
    assert rows == ["0 (clean)", "1/255", "4/255"]
    assert rec["config"]["warm_start"] == "paper" and rec["protocol"]["warm_start"] == "paper"  # the default
    assert main([*common, "--out", str(tmp_path / "w"), "--defense", "ttc", "--warm-start", "none", "--attack", "pgd",
                 "--defense-opt", "steps=1", "--eot-samples", "2", "--draws", "2"]) == 0
    assert read_json(tmp_path / "w" / "results_robust-defended.json")["protocol"]["warm_start"] == "none"
    assert main([*common, "--out", str(tmp_path / "v"), "--defense", "ttc", "--attack", "pgd"]) == 2
    assert "--warm-start none" in capsys.readouterr().err
    assert main([*common, "--out", str(tmp_path / "x"), "--eot-samples", "3"]) == 2
    assert "name it with --defense" in capsys.readouterr().err
    assert main([*common, "--out", str(tmp_path / "y"), "--defense", "ttc", "--attack-opt", "eot_samples=3"]) == 2
    assert "--eot-samples" in capsys.readouterr().err


def _demo_runs(root, world, seeds):
    """A `mmrobust demo --seeds` layout: RUNS/seed-K/adversarial/clip/model and RUNS/seed-K/world."""
    for k in seeds:
        save_clip(create_clip("mmrobust-micro", seed=k), root / f"seed-{k}" / "adversarial" / "clip" / "model")
        (root / f"seed-{k}" / "world").symlink_to(world.root, target_is_directory=True)
    return root


def test_study_ttc_over_seeds_aggregates_and_writes_nothing_under_runs(tmp_path, micro_world, capsys):
    from mmrobust.cli.main import main

    runs = _demo_runs(tmp_path / "runs", micro_world, (0, 1))
    before = sorted(p.relative_to(runs) for p in runs.rglob("*"))
    out = tmp_path / "study"
    args = ["study", "ttc", "--runs", str(runs), "--seeds", "0,1", "--out", str(out), "--eps", "4/255",
            "--n-samples", "6", "--steps", "2", "--eot-samples", "2", "--draws", "2", "--defense-opt", "steps=1"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "paper protocol" in printed and "worst case" in printed and "over 2 seeds" in printed
    rec = read_json(out / "results_seeds.json")
    assert set(rec["metrics"]["per_seed"]["results_robust-defended.json"]) == {"0", "1"}
    for k in (0, 1):
        seed_rec = read_json(out / f"seed-{k}" / "results_robust-defended.json")
        assert seed_rec["seeds"]["sample"] == k and seed_rec["config"]["defense_options"] == {"steps": 1}
    assert sorted(p.relative_to(runs) for p in runs.rglob("*")) == before
    assert main(args) == 0  # finished seeds are reused
    assert main([*args[:3], str(tmp_path / "none"), *args[4:]]) == 2
    assert "mmrobust demo --seeds" in capsys.readouterr().err
