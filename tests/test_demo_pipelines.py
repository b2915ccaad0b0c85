"""The demo stories run end to end on tiny settings, write their records, and reuse finished stages."""
from __future__ import annotations

from mmrobust.stories.adversarial import AdversarialDemo, run_adversarial_demo
from mmrobust.stories.backdoor import BackdoorDemo, run_backdoor_demo
from mmrobust.reports.html import write_report
from mmrobust.jsonio import read_json

WORLD = {"n_train": 400, "n_test": 60, "model": "mmrobust-micro", "threads": 1}


def test_backdoor_story_tiny(tmp_path):
    s = BackdoorDemo(**WORLD, poison_rate=0.03, pretrain_steps=3, pretrain_batch=32, finetune_pairs=200,
                     finetune_steps=2, finetune_batch=16)
    out = tmp_path / "backdoor"
    first = run_backdoor_demo(out, s, progress=False, log=lambda m: None)
    assert [r["stage"] for r in first["stages"]] == ["poisoned CLIP", "MMCL finetune", "CleanCLIP", "PAR",
                                                     "supervised FT"]
    assert all(0 <= r["asr"] <= 1 and 0 < r["n_asr"] < r["n_clean"] == 60 for r in first["stages"])
    rec = read_json(out / "results_story.json")
    assert len(rec["poisoned_ids"]) == 12 and rec["config"]["poison_rate"] == 0.03
    assert (out / "backdoor.png").stat().st_size > 0 and "| PAR" in (out / "summary.md").read_text()
    models = sorted(out.glob("*/model/open_clip_model.safetensors"))
    stamps = [m.stat().st_mtime_ns for m in models]
    in_order = BackdoorDemo(**{**s.__dict__, "workers": 1})
    again = run_backdoor_demo(out, in_order, progress=False, log=lambda m: None)  # every stage is reused
    assert again["stages"] == first["stages"]
    assert len(models) == 5 and [m.stat().st_mtime_ns for m in models] == stamps  # nothing was trained again
    # finetunes run side by side (default, one thread each) give the numbers they give one after another
    fresh = run_backdoor_demo(tmp_path / "in-order" / "backdoor", in_order, progress=False, log=lambda m: None)
    assert fresh["stages"] == first["stages"]
    assert "backdoor" in write_report([out], tmp_path / "report.html").read_text()
    # another poison rate recomputes the poisoning and everything downstream of it
    weights = out / "pretrain" / "model" / "open_clip_model.safetensors"
    before = weights.stat().st_mtime_ns
    run_backdoor_demo(out, BackdoorDemo(**{**s.__dict__, "poison_rate": 0.05}), progress=False,
                                log=lambda m: None)
    assert len(read_json(out / "results_story.json")["poisoned_ids"]) == 20
    assert weights.stat().st_mtime_ns != before  # the poisoned CLIP was retrained on the new manifest
    from mmrobust.stories.stages import stamp

    assert read_json(out / "ft-par" / "eval" / "stage.json")["config"]["inputs"] == stamp(out / "ft-par" / "model")


def test_adversarial_story_tiny(tmp_path):
    s = AdversarialDemo(**WORLD, pretrain_steps=3, finetune_steps=2, finetune_batch=8, attack_steps=2,
                        eval_steps=2, n_eval=20)
    result = run_adversarial_demo(tmp_path / "adversarial", s, progress=False, log=lambda m: None)
    assert [r["model"] for r in result["rows"]] == ["CLIP", "FARE", "TeCoA"]
    for r in result["rows"]:
        assert r["autoattack@4/255"] <= r["clean"] and r["pgd@4/255"] <= r["clean"]
    assert "drift" in result["rows"][1] and (tmp_path / "adversarial" / "adversarial.png").is_file()
    for r in result["rows"][1:]:  # FARE and TeCoA: how far each tower moved from the original
        assert 0 <= r["agreement"] <= 1 and r["drift_clean"] >= 0
    tables = read_json(tmp_path / "adversarial" / "results_story.json")["tables"]
    assert [r["model"] for r in tables[1]["rows"]] == ["FARE", "TeCoA"]


def test_zero_shot_agreement_of_a_model_with_itself_and_another(tmp_path):
    from mmrobust.eval.robust import load_images

    from mmrobust.models.clip import create_clip
    from mmrobust.pipelines.evaluate import EvalData, labelled, zero_shot_agreement
    from mmrobust.world.shapes import generate_world

    world = generate_world(tmp_path / "w", n_train=10, n_test=40, seed=0).root
    a, b = create_clip("mmrobust-micro", seed=0), create_clip("mmrobust-micro", seed=1)
    ds = labelled(EvalData(manifest=str(world / "test.csv"), classes=str(world / "classes.json")), a)
    x, _, _ = load_images(ds, list(range(len(ds))))
    assert zero_shot_agreement(a, a, ds, x) == 1.0
    assert 0 <= zero_shot_agreement(a, b, ds, x) < 1.0  # two random models disagree somewhere
