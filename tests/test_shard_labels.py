"""ImageNet-style webdataset shards (KEY.png + KEY.cls, no caption): TeCoA trains on their labels exactly as on
the same rows in a CSV; FARE trains with captions from the class names; bad labels are skipped and listed."""
from __future__ import annotations

import csv
import io
import json
import tarfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mmrobust.cli.main import main
from mmrobust.data.datasets import ClassInfo
from mmrobust.data.shards import ShardImageTextDataset
from mmrobust.errors import DataError
from mmrobust.models import create_clip

COMMON = ["--model", "mmrobust-micro", "--steps", "3", "--batch-size", "8", "--lr", "1e-3", "--warmup", "0",
          "--quiet", "--opt", "attack_steps=1"]


def _label_shards(world, folder: Path, *, n: int = 48, bad: dict[int, bytes] | None = None) -> tuple[str, Path]:
    """The first ``n`` training rows as two shards of KEY.png + KEY.cls (the label index; ``bad`` replaces
    some), and the same rows as a CSV manifest; returns (pattern, manifest)."""
    names = ClassInfo.load(world.classes).classnames
    with open(world.train_manifest, newline="") as f:
        rows = [{**r, "label": str(names.index(r["label"]))} for r in list(csv.DictReader(f))[:n]]  # the index
    folder.mkdir(parents=True)
    for s, part in enumerate((rows[: n // 2], rows[n // 2:])):
        with tarfile.open(folder / f"{s:05d}.tar", "w") as tar:
            for k, row in enumerate(part):
                i = s * (n // 2) + k
                for ext, data in (("png", (world.root / row["image"]).read_bytes()),
                                  ("cls", (bad or {}).get(i, row["label"].encode()))):
                    info = tarfile.TarInfo(f"{i:06d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    manifest = folder.parent / "same.csv"
    with manifest.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "caption", "label"])
        w.writerows([[str(world.root / r["image"]), "x", r["label"]] for r in rows])
    return str(folder / "{00000..00001}.tar"), manifest


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "model" / "open_clip_model.safetensors")


def test_tecoa_on_label_shards_equals_the_same_rows_in_a_csv(micro_world, tmp_path, capsys):
    pattern, manifest = _label_shards(micro_world, tmp_path / "sh")
    classes = str(micro_world.root / "classes.json")
    assert main(["train", "--task", "tecoa", "--data", f"shards:{pattern}", "--classes", classes,
                 "--out", str(tmp_path / "a"), *COMMON]) == 0, capsys.readouterr().err
    assert main(["train", "--task", "tecoa", "--data", str(manifest), "--label-col", "label", "--classes", classes,
                 "--allow-outside-paths", "--out", str(tmp_path / "b"), *COMMON]) == 0, capsys.readouterr().err
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # same batches, same labels
    start = {f"visual.{k}": v for k, v in create_clip("mmrobust-micro").model.visual.state_dict().items()}
    assert sum(not torch.equal(a[k], v) for k, v in start.items()) > len(start) // 2  # and the weights moved
    metrics = json.loads((tmp_path / "a" / "results.json").read_text())["metrics"]
    assert metrics["n_samples"] == 48 and metrics["n_incomplete_samples"] == 0 and metrics["n_skipped_images"] == 0


def test_label_only_shards_give_class_captions_and_skip_bad_labels(micro_world, tmp_path):
    pattern, _ = _label_shards(micro_world, tmp_path / "sh", bad={3: b"seven", 5: b"99"})
    names = ClassInfo.load(micro_world.root / "classes.json").classnames
    ds = ShardImageTextDataset(pattern, image_size=16, labels=True, classnames=names)
    with open(micro_world.train_manifest, newline="") as f:
        truth = [names.index(r["label"]) for r in list(csv.DictReader(f))[:48]]
    items = ds.__getitems__(list(range(8)))
    assert items[3] is None and items[5] is None  # "seven" does not parse, 99 is past the classes
    for i in (0, 1, 2, 4, 6, 7):
        assert items[i]["label"] == truth[i] and items[i]["caption"] == f"a photo of a {names[truth[i]]}."
    skipped = ds.summary()
    assert skipped["n_incomplete"] == 0 and sorted(ds.skips.skipped) == [3, 5]
    # without class names the caption is needed: label-only shards have no trainable pair
    with pytest.raises(DataError, match="and a .txt caption"):
        ShardImageTextDataset(pattern, image_size=16)


def test_fare_on_label_only_shards_needs_the_class_names(micro_world, tmp_path, capsys):
    pattern, _ = _label_shards(micro_world, tmp_path / "sh")
    assert main(["train", "--task", "fare", "--data", f"shards:{pattern}", "--out", str(tmp_path / "x"),
                 *COMMON]) == 2
    err = capsys.readouterr().err.strip()
    assert "has an image" in err and ".txt caption" in err and len(err.splitlines()) == 1
    assert main(["train", "--task", "tecoa", "--data", f"shards:{pattern}", "--out", str(tmp_path / "y"),
                 *COMMON]) == 2
    assert "pass --classes" in capsys.readouterr().err
    assert main(["train", "--task", "fare", "--data", f"shards:{pattern}", "--classes",
                 str(micro_world.root / "classes.json"), "--out", str(tmp_path / "z"), *COMMON]) == 0
    assert (tmp_path / "z" / "model" / "open_clip_model.safetensors").is_file()


def test_classes_imagenet_names_the_1000_classes_in_index_order():
    info = ClassInfo.load("imagenet")
    assert len(info.classnames) == 1000 and info.classnames[0] == "tench" and all("{}" in t for t in info.templates)


def test_classes_imagenet_is_the_file_if_one_is_named_so_and_not_a_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "imagenet").mkdir()  # an ImageNet data folder beside the run: still the 1000 names
    assert len(ClassInfo.load("imagenet").classnames) == 1000


def test_a_csv_label_index_outside_the_classes_is_a_one_line_error_in_training_and_evaluation(micro_world, tmp_path):
    from mmrobust.data.datasets import ImageTextDataset, LabelledDataset

    names = ClassInfo.load(micro_world.classes).classnames
    (tmp_path / "a.png").write_bytes((micro_world.root / "train" / "000000.png").read_bytes())
    for bad in ("-1", str(len(names))):
        manifest = tmp_path / f"m{bad}.csv"
        manifest.write_text(f"image,caption,label\na.png,a star,{bad}\n")
        ds = ImageTextDataset(manifest, image_size=16, label_col="label", classnames=names)
        with pytest.raises(DataError, match=f"label index {bad} is outside the {len(names)} classes"):
            ds[0]
        with pytest.raises(DataError, match=f"row 0: label index {bad} is outside the {len(names)} classes"):
            LabelledDataset(manifest, classes=ClassInfo.load(micro_world.classes), image_size=16)  # evaluation
