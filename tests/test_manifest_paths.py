"""Manifests and poison records are untrusted: image paths stay inside their data root unless allowed."""
from __future__ import annotations

import csv
import json
import shutil

import pytest

from mmrobust.cli.main import main
from mmrobust.data.datasets import ImageTextDataset
from mmrobust.data.manifest import PathPolicy
from mmrobust.data.poison import PoisonRecord, poison_manifest
from mmrobust.errors import DataError


def _manifest(folder, rows):
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "m.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["image", "caption"], *rows])
    return folder / "m.csv"


def test_paths_outside_the_manifest_folder_are_skipped_and_named(tmp_path, micro_world):
    inside = tmp_path / "data" / "a.png"
    inside.parent.mkdir()
    shutil.copy(micro_world.root / "train" / "000000.png", inside)
    outside = str(micro_world.root / "train" / "000001.png")
    m = _manifest(tmp_path / "data", [["a.png", "x"], [outside, "y"], ["../../../../etc/passwd", "z"]])
    ds = ImageTextDataset(m, image_size=16, preload=True)
    assert sorted(ds.skips.skipped) == [1, 2] and all("outside the data root" in r and "--data-root" in r
                                                        for r in ds.skips.skipped.values())
    wide = ImageTextDataset(m, image_size=16, preload=True, paths=PathPolicy.of(m, data_root=tmp_path.parent))
    assert sorted(wide.skips.skipped) == [2]  # the world is inside the wider root; /etc is not
    anywhere = ImageTextDataset(m, image_size=16, preload=True, paths=PathPolicy.of(m, allow_outside=True))
    assert sorted(anywhere.skips.skipped) == [2] and "outside the data root" not in anywhere.skips.skipped[2]


def test_cli_skips_outside_paths_unless_allowed(tmp_path, micro_world, capsys):
    m = _manifest(tmp_path / "data", [[str(micro_world.root / "test" / f"{i:06d}.png"), "c"] for i in range(8)])
    base = ["train", "--task", "clip", "--model", "mmrobust-micro", "--data", str(m), "--steps", "1",
            "--batch-size", "4", "--quiet"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 2
    assert "outside the data root" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "b"), "--allow-outside-paths"]) == 0
    assert main([*base, "--out", str(tmp_path / "c"), "--data-root", str(micro_world.root)]) == 0


def test_a_poisoned_manifest_reads_its_source_folder_only_while_the_record_is_genuine(tmp_path, micro_world):
    world = tmp_path / "world"
    shutil.copytree(micro_world.root, world)
    rec = poison_manifest(manifest=world / "train.csv", out_dir=tmp_path / "p",
                          trigger={"name": "badnet", "config": {"size": 3}}, target="star", count=4)
    ds = ImageTextDataset(rec.manifest, image_size=16, preload=True)
    assert not ds.skips.skipped  # untouched rows point back into the (verified) source folder
    record = json.loads(rec.record_path.read_text())
    record["source_sha256"] = "0" * 64  # a copied or forged record does not widen the root
    rec.record_path.write_text(json.dumps(record))
    ds = ImageTextDataset(rec.manifest, image_size=16, preload=True)
    assert len(ds.skips.skipped) == len(ds) - 4


def test_a_poison_record_may_not_point_its_manifest_elsewhere(tmp_path):
    (tmp_path / "poison.json").write_text(json.dumps({"manifest": "../../etc/passwd", "poisoned_ids": [1],
                                                      "n_rows": 2, "target": "x", "seed": 0, "trigger": {}}))
    with pytest.raises(DataError, match="points outside"):
        PoisonRecord.load(tmp_path / "poison.json")


def test_poison_skips_source_images_outside_its_data_root(tmp_path, micro_world):
    rows = [[str(micro_world.root / "train" / f"{i:06d}.png"), "a photo of a star."] for i in range(6)]
    m = _manifest(tmp_path / "src", rows)
    with pytest.raises(DataError, match="could be read"):
        poison_manifest(manifest=m, out_dir=tmp_path / "p", trigger={"name": "badnet", "config": {"size": 3}},
                        target="star", count=2)
    rec = poison_manifest(manifest=m, out_dir=tmp_path / "q", trigger={"name": "badnet", "config": {"size": 3}},
                          target="star", count=2, allow_outside=True)
    assert len(rec.poisoned_ids) == 2


def test_a_symlink_loop_in_a_manifest_is_a_skipped_row_never_a_traceback(tmp_path, micro_world, capsys):
    """Python's Path.resolve raises RuntimeError("Symlink loop") there: the row is skipped with its reason in
    train, poison and the dataset, and the path checks of question / instruction files say it in one line."""
    from mmrobust.safety import resolve_inside

    data = tmp_path / "data"
    data.mkdir()
    for i in range(4):
        shutil.copy(micro_world.root / "train" / f"{i:06d}.png", data / f"{i}.png")
    (data / "loop1").symlink_to("loop2")
    (data / "loop2").symlink_to("loop1")
    m = _manifest(data, [*([f"{i}.png", "a star"] for i in range(4)), ["loop1", "a circle"]])
    ds = ImageTextDataset(m, image_size=16, preload=True)
    assert list(ds.skips.skipped) == [4] and "symlink loop" in ds.skips.skipped[4]
    assert main(["train", "--task", "clip", "--model", "mmrobust-micro", "--data", str(m), "--steps", "1",
                 "--batch-size", "2", "--quiet", "--out", str(tmp_path / "run")]) == 0
    assert main(["poison", "--data", str(m), "--target", "star", "--count", "1", "--out", str(tmp_path / "p")]) == 0
    with pytest.raises(DataError, match=r"image '.*loop1' is a symlink loop; fix or remove the link"):
        resolve_inside(data, "loop1", what="image")
    assert "Traceback" not in capsys.readouterr().err
