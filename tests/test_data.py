"""Datasets: manifests with custom columns, corrupt/missing images skipped and counted, synthetic world."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from mmrobust.data.manifest import PathPolicy
from mmrobust.data.datasets import ClassInfo, ImageTextDataset, LabelledDataset, collate
from mmrobust.world.shapes import SHAPES, generate_world
from mmrobust.errors import DataError
from mmrobust.eval.zeroshot import build_classifier, evaluate_zeroshot
from mmrobust.models import create_clip


def _manifest(tmp_path, world, extra_rows):
    rows = list(csv.DictReader(open(world.train_manifest)))[:10]
    out = tmp_path / "m.tsv"
    with out.open("w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["filepath", "title", "label"])
        for r in rows:
            w.writerow([str(world.root / r["image"]), r["caption"], r["label"]])
        for r in extra_rows:
            w.writerow(r)
    return out


def test_corrupt_and_missing_images_are_skipped_and_counted(tmp_path, tiny_world):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png at all")
    path = _manifest(tmp_path, tiny_world, [[str(bad), "a broken star", "star"], ["gone.png", "a lost ring", "ring"]])
    for preload in (True, False):
        ds = ImageTextDataset(path, image_size=32, image_col="filepath", caption_col="title", delimiter="\t",
                              preload=preload, paths=PathPolicy.of(path, data_root=tmp_path.parent))
        batch = collate([ds[i] for i in range(len(ds))])
        assert batch["n_dropped"] == 2 and batch["image"].shape == (10, 3, 32, 32)
        assert sorted(ds.skips.skipped) == [10, 11]
        assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    classes = ClassInfo.load(tiny_world.classes)
    lab = LabelledDataset(path, classes=classes, image_size=32, image_col="filepath", delimiter="\t", preload=True,
                          paths=PathPolicy.of(path, allow_outside=True))
    metrics, rows = evaluate_zeroshot(create_clip("mmrobust-tiny"), lab,
                                      build_classifier(create_clip("mmrobust-tiny"), classes.classnames, ["a {}"]))
    assert metrics["n"] == 10 and metrics["n_skipped"] == 2 and len(rows) == 10


def test_missing_column_is_a_clear_error(tmp_path, tiny_world):
    with pytest.raises(DataError, match=r"lacks column\(s\) \['title'\].*--caption-col"):
        ImageTextDataset(tiny_world.train_manifest, image_size=32, caption_col="title")
    with pytest.raises(DataError, match="not found"):
        ImageTextDataset(tmp_path / "nope.csv", image_size=32)


def test_synthetic_world_is_seeded_and_labelled(tmp_path):
    a = generate_world(tmp_path / "a", n_train=30, n_test=10, seed=7)
    b = generate_world(tmp_path / "b", n_train=30, n_test=10, seed=7)
    assert a.train_manifest.read_bytes() == b.train_manifest.read_bytes()
    assert (a.root / "train/000003.png").read_bytes() == (b.root / "train/000003.png").read_bytes()
    rows = list(csv.DictReader(open(a.train_manifest)))
    assert all(r["label"] in SHAPES and r["shape"] in r["caption"] for r in rows)
    assert len({r["caption"] for r in rows}) > 20  # several templates and attributes
    ds = ImageTextDataset(a.train_manifest, image_size=32, views=("image_aug", "caption_aug"), seed=0)
    x1, x2 = ds[(0, 3)], ds[(0, 3)]
    assert torch.equal(x1["image_aug"], x2["image_aug"]) and x1["caption_aug"] == x2["caption_aug"]
    assert not torch.equal(ds[(1, 3)]["image_aug"], x1["image_aug"]) or ds[(1, 3)]["caption_aug"] != x1["caption_aug"]
    assert np.isclose(float(x1["image"].max()), float(x1["image"].max()))
