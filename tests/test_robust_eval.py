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
