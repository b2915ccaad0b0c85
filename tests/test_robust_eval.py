"""Robust zero-shot evaluation: eps 0 leaves accuracy unchanged, attacks lower it, ids are recorded."""
from __future__ import annotations

import torch

from mmrobust.data.datasets import ClassInfo, LabelledDataset
from mmrobust.eval.robust import embedding_drift, evaluate_robust, sample_ids
from mmrobust.eval.zeroshot import build_classifier
from mmrobust.models import create_clip


def test_robust_eval_invariants(micro_world):
    model = create_clip("mmrobust-micro", seed=0)
    classes = ClassInfo.load(micro_world.classes)
    ds = LabelledDataset(micro_world.test_manifest, classes=classes, image_size=16, preload=True)
    clf = build_classifier(model, classes.classnames, classes.templates)
    m, rows = evaluate_robust(model, ds, clf, attack="pgd", eps=[0.0, 8 / 255], n_samples=40, seed=3,
                              attack_options={"steps": 5})
    assert m["n"] == 40 and len(rows) == 40
    assert m["eps"]["0/255"]["robust_top1"] == m["clean_top1"]
    assert m["eps"]["8/255"]["robust_top1"] <= m["clean_top1"]
    assert [r["index"] for r in rows] == sample_ids(len(ds), 40, 3)
    assert all(r["robust@8/255"] <= r["clean_correct"] for r in rows)


def test_embedding_drift_is_zero_for_identical_encoders_and_grows_under_attack():
    model, other = create_clip("mmrobust-micro", seed=0), create_clip("mmrobust-micro", seed=0)
    x = torch.rand(8, 3, 16, 16)
    d = embedding_drift(model, other, x, eps=4 / 255, steps=5)
    assert d["clean"] == 0.0 and d["adversarial"] > 0.0


def test_cli_eval_robust_writes_ids_seeds_config_and_adv_images(tmp_path, micro_world):
    from safetensors.torch import load_file

    from mmrobust.cli.main import main
    from mmrobust.models import save_clip
    from mmrobust.reports.records import read_json

    save_clip(create_clip("mmrobust-micro", seed=0), tmp_path / "m")
    out = tmp_path / "eval"
    assert main(["eval", "robust", "--model", str(tmp_path / "m"), "--data", str(micro_world.test_manifest),
                 "--classes", str(micro_world.classes), "--attack", "apgd-ce", "--eps", "2/255,4/255",
                 "--n-samples", "24", "--steps", "5", "--seed", "7", "--save-adv", "--reference", "mmrobust-micro",
                 "--out", str(out)]) == 0
    rec = read_json(out / "results_robust.json")
    assert rec["seeds"] == {"sample": 7, "attack": 7} and len(rec["sample_ids"]) == 24
    assert set(rec["metrics"]["eps"]) == {"2/255", "4/255"}
    assert rec["metrics"]["eps"]["4/255"]["config"]["steps"] == 5
    assert rec["metrics"]["eps"]["4/255"]["robust_top1"] <= rec["metrics"]["clean_top1"]
    assert set(rec["metrics"]["embedding_drift"]) == {"2/255", "4/255"}
    adv = load_file(str(out / "adv_4_255.safetensors"))
    assert adv["x_adv"].shape == (24, 3, 16, 16) and adv["index"].tolist() == rec["sample_ids"]
