"""Image-folder datasets: ImageNet's class-folder layout with the shipped 1k names and OpenAI templates,
any class-folder tree, through `mmrobust eval zeroshot --data imagenet:PATH`."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from mmrobust.cli.main import main
from mmrobust.data.image_folder import folder_split, imagenet_classes, parse_folder_spec
from mmrobust.errors import DataError
from mmrobust.world.shapes import render_scene, sample_scene

WNIDS = {"n01440764": "tench", "n01443537": "goldfish", "n09999999": None}  # the last is not an ImageNet id


def _tree(root, names, per_class=3):
    rng = np.random.default_rng(0)
    for name in names:
        (root / name).mkdir(parents=True)
        for k in range(per_class):
            render_scene(sample_scene(rng), image_size=32, rng=rng).save(root / name / f"img_{k}.JPEG")
        (root / name / "notes.txt").write_text("not an image")
    return root


def test_imagenet_metadata_is_the_standard_1k():
    wnids, names, templates = imagenet_classes()
    assert len(wnids) == len(names) == 1000 and len(set(wnids)) == 1000
    assert (wnids[0], names[0]) == ("n01440764", "tench") and (wnids[1], names[1]) == ("n01443537", "goldfish")
    assert len(templates) == 80 and all("{}" in t for t in templates) and templates[0] == "a bad photo of a {}."


def test_imagenet_folder_keeps_standard_indices_and_evaluates_through_the_cli(tmp_path, capsys):
    root = _tree(tmp_path / "val", ["n01443537", "n01440764"])
    manifest, classes, data_root = folder_split(f"imagenet:{root}", tmp_path / "split")
    rows = manifest.read_text().splitlines()[1:]
    assert len(rows) == 6 and sorted({int(r.split(",")[1]) for r in rows}) == [0, 1]  # tench 0, goldfish 1
    info = json.loads(classes.read_text())
    assert len(info["classnames"]) == 1000 and len(info["templates"]) == 80 and data_root == root.resolve()
    out = tmp_path / "eval"
    assert main(["eval", "zeroshot", "--model", "mmrobust-micro", "--data", f"imagenet:{root}", "--out", str(out)]) == 0
    metrics = json.loads((out / "results_zeroshot.json").read_text())["metrics"]
    assert metrics["n"] == 6 and metrics["n_skipped"] == 0 and 0 <= metrics["top1"] <= metrics["top5"] <= 1
    samples = [json.loads(line) for line in (out / "samples_zeroshot.jsonl").read_text().splitlines()]
    assert len(samples) == 6 and {s["label"] for s in samples} == {0, 1}


def test_generic_folder_names_classes_after_folders(tmp_path):
    root = _tree(tmp_path / "pets", ["golden_retriever", "tabby_cat"], per_class=2)
    manifest, classes, _ = folder_split(f"folder:{root}", tmp_path / "split")
    assert json.loads(classes.read_text())["classnames"] == ["golden retriever", "tabby cat"]
    assert len(manifest.read_text().splitlines()) == 5


def test_bad_folders_are_one_line_errors(tmp_path, capsys):
    bad = _tree(tmp_path / "bad", ["n01440764", "n09999999"], per_class=1)
    with pytest.raises(DataError, match="n09999999"):
        folder_split(f"imagenet:{bad}", tmp_path / "s1")
    good = _tree(tmp_path / "good", ["n01440764"], per_class=1)
    with pytest.raises(DataError, match="inside the image folder"):
        folder_split(f"imagenet:{good}", good / "eval" / "data")
    assert not (good / "eval").exists()  # nothing written into the user's tree
    with pytest.raises(DataError, match="does not exist"):
        folder_split(f"folder:{tmp_path / 'missing'}", tmp_path / "s2")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="no images"):
        folder_split(f"folder:{tmp_path / 'empty'}", tmp_path / "s3")
    assert parse_folder_spec("runs/world/test.csv") is None and parse_folder_spec("C:/data/x.csv") is None
    for argv, msg in ((["--data", f"imagenet:{bad}", "--classes", "c.json"], "--classes is not used"),
                      (["--data", str(tmp_path / "m.csv")], "needs --classes")):
        rc = main(["eval", "zeroshot", "--model", "mmrobust-micro", "--out", str(tmp_path / "e"), *argv])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and msg in err, err


def test_a_symlink_out_of_the_tree_is_refused(tmp_path, capsys):
    root = _tree(tmp_path / "val", ["n01440764"], per_class=1)
    secret = tmp_path / "outside.png"
    render_scene(sample_scene(np.random.default_rng(1)), image_size=32).save(secret)
    os.symlink(secret, root / "n01440764" / "leak.png")
    rc = main(["eval", "zeroshot", "--model", "mmrobust-micro", "--data", f"imagenet:{root}",
               "--out", str(tmp_path / "e")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "points outside" in err and len(err.splitlines()) == 1


def test_fare_and_tecoa_train_on_a_class_folder_tree(tmp_path, capsys):
    """`mmrobust train --data imagenet:PATH` (FARE on ImageNet's layout): labels, names and the caption come
    from the folders; TeCoA's classifier gets the shipped 1000 names; the weights move."""
    import torch
    from safetensors.torch import load_file

    from mmrobust.models import create_clip

    start = {k: v.clone() for k, v in create_clip("mmrobust-micro").model.visual.state_dict().items()}
    root = _tree(tmp_path / "train", ["n01443537", "n01440764"], per_class=4)
    for task in ("fare", "tecoa"):
        out = tmp_path / task
        rc = main(["train", "--task", task, "--model", "mmrobust-micro", "--data", f"imagenet:{root}", "--out", str(out),
                   "--steps", "2", "--batch-size", "4", "--lr", "1e-3", "--warmup", "0", "--quiet",
                   "--opt", "attack_steps=1"])
        assert rc == 0, capsys.readouterr().err
        rows = (out / "data" / "manifest.csv").read_text().splitlines()
        assert rows[0] == "image,label,caption" and rows[1].endswith(",0,a photo of a tench.") and len(rows) == 9
        results = json.loads((out / "results.json").read_text())
        assert results["metrics"]["steps"] == 2 and results["metrics"]["n_skipped_images"] == 0
        weights = load_file(out / "model" / "open_clip_model.safetensors")
        moved = [k for k, v in start.items() if not torch.equal(weights[f"visual.{k}"], v)]
        assert all(torch.isfinite(v).all() for v in weights.values()) and len(moved) > len(start) // 2
    rc = main(["train", "--task", "tecoa", "--model", "mmrobust-micro", "--data", f"folder:{root}", "--out",
               str(tmp_path / "x"), "--steps", "1", "--classes", "c.json"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--classes not used" in err and len(err.splitlines()) == 1
