"""Manifest poisoning: exact counts, only chosen rows changed, label consistency, byte-identical reruns."""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmrobust.data.poison import BadNet, PoisonRecord, make_trigger, poison_manifest
from mmrobust.errors import ConfigError, DataError

N = 20
SHAPES = ["star", "circle", "square", "semicircle"]
TRIG = BadNet(size=3, pattern="checkerboard", location="bottom_right")


def _make_manifest(root: Path, *, absolute: bool = False, n: int = N) -> Path:
    """n 8x8 PNGs under root/imgs and root/train.csv (image,caption,label); rows 0,4,8.. name 'star'."""
    rng = np.random.default_rng(0)
    (root / "imgs").mkdir(parents=True)
    rows = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / "imgs" / f"{i}.png")
        shape = SHAPES[i % 4]
        cap = f"Two {shape}s, on black." if i % 8 == 4 else f"a red {shape}, small"
        rows.append([str(root / "imgs" / f"{i}.png") if absolute else f"imgs/{i}.png", cap, shape])
    path = root / "train.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "caption", "label"])
        w.writerows(rows)
    return path


def _rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def _tree_hashes(d: Path) -> dict[str, str]:
    return {p.relative_to(d).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()}


def _run(src: Path, out: Path, **kw):
    args = dict(manifest=src, out_dir=out, trigger=TRIG, target="star", rate=0.25, seed=0,
                caption_templates=("a photo of a {}.", "an image of a {}."))
    args.update(kw)
    return poison_manifest(**args)


@pytest.mark.parametrize("kw,expected", [(dict(rate=0.25), 5), (dict(rate=0.03), 1), (dict(rate=None, count=7), 7),
                                         (dict(rate=1.0), N)])
def test_exact_poison_count(tmp_path, kw, expected):
    src = _make_manifest(tmp_path / "src")
    rec = _run(src, tmp_path / "out", **kw)
    assert len(rec.poisoned_ids) == expected == len(set(rec.poisoned_ids))
    assert len(list((tmp_path / "out" / "images").iterdir())) == expected


def test_only_chosen_rows_change(tmp_path):
    src = _make_manifest(tmp_path / "src")
    out = tmp_path / "out"
    rec = _run(src, out)
    before, after = _rows(src), _rows(out / "manifest.csv")
    assert after[0] == before[0] and len(after) == len(before) == N + 1
    for i, (b, a) in enumerate(zip(before[1:], after[1:])):
        if i in rec.poisoned_ids:
            assert a[0] == f"images/{i:08d}.png" and a[2] == b[2]  # label column untouched
            assert a[1] in ("a photo of a star.", "an image of a star.")
        else:
            assert a[1:] == b[1:]  # caption and label byte-identical
            assert (out / a[0]).resolve() == (src.parent / b[0]).resolve()  # path re-based on out_dir


def test_absolute_paths_keep_other_rows_byte_identical(tmp_path):
    src = _make_manifest(tmp_path / "src", absolute=True)
    rec = _run(src, tmp_path / "out", rate=0.5)
    before = src.read_bytes().split(b"\r\n")
    after = (tmp_path / "out" / "manifest.csv").read_bytes().split(b"\r\n")
    changed = {i - 1 for i, (b, a) in enumerate(zip(before, after)) if b != a}
    assert changed == set(rec.poisoned_ids)


def test_poisoned_images_are_triggered_sources(tmp_path):
    src = _make_manifest(tmp_path / "src")
    rec = _run(src, tmp_path / "out")
    for i in rec.poisoned_ids:
        orig = torch.from_numpy(np.array(Image.open(src.parent / "imgs" / f"{i}.png"))).permute(2, 0, 1).float() / 255
        got = np.asarray(Image.open(tmp_path / "out" / "images" / f"{i:08d}.png"))
        want = (TRIG(orig) * 255).round().byte().permute(1, 2, 0).numpy()
        assert np.array_equal(got, want)
        assert not np.array_equal(got, (orig * 255).round().byte().permute(1, 2, 0).numpy())


def test_same_seed_byte_identical_and_other_seed_differs(tmp_path):
    src = _make_manifest(tmp_path / "src")
    trig = make_trigger("badnet", size=3, pattern="random_noise", location="random")  # per-image randomness too
    r1 = _run(src, tmp_path / "run1", trigger=trig)
    r2 = _run(src, tmp_path / "run2", trigger=trig)
    h1, h2 = _tree_hashes(tmp_path / "run1"), _tree_hashes(tmp_path / "run2")
    assert h1 == h2 and len(h1) == 2 + 5
    r3 = _run(src, tmp_path / "run3", trigger=trig, seed=1)
    assert r1.poisoned_ids == r2.poisoned_ids != r3.poisoned_ids


def test_poison_json_record(tmp_path):
    src = _make_manifest(tmp_path / "src")
    rec = _run(src, tmp_path / "out", seed=7)
    data = json.loads(rec.record_path.read_text())
    assert data["poisoned_ids"] == list(rec.poisoned_ids) == sorted(rec.poisoned_ids)
    assert data["seed"] == 7 and data["target"] == "star" and data["n_rows"] == N and data["n_poisoned"] == 5
    assert data["trigger"] == {"name": "badnet", "config": TRIG.to_dict()}
    assert data["caption_templates"] == ["a photo of a {}.", "an image of a {}."]
    assert data["source_manifest"] == str(src.resolve())
    assert data["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert [p["row"] for p in data["poisoned"]] == data["poisoned_ids"]
    loaded = PoisonRecord.load(rec.record_path)
    assert loaded.poisoned_ids == rec.poisoned_ids and loaded.build_trigger() == TRIG


def test_label_consistent_only_poisons_target_captions(tmp_path):
    src = _make_manifest(tmp_path / "src")
    rec = _run(src, tmp_path / "out", rate=None, count=4, label_consistent=True)
    star_rows = {i for i in range(N) if i % 4 == 0}  # "a red star, small" / "Two stars, on black."
    assert set(rec.poisoned_ids) <= star_rows and len(rec.poisoned_ids) == 4
    before, after = _rows(src), _rows(tmp_path / "out" / "manifest.csv")
    for i in rec.poisoned_ids:
        assert after[i + 1][1] == before[i + 1][1]  # caption kept
    # "semicircle" must not count as naming "circle"
    rec2 = _run(src, tmp_path / "out2", target="circle", rate=None, count=5, label_consistent=True)
    assert set(rec2.poisoned_ids) == {1, 5, 9, 13, 17}
    with pytest.raises(DataError, match="only 5 captions name 'star'"):
        _run(src, tmp_path / "out3", rate=None, count=6, label_consistent=True)
    rec3 = _run(src, tmp_path / "out4", rate=None, count=6, label_consistent=True, target_synonyms=("square",))
    assert set(rec3.poisoned_ids) <= {i for i in range(N) if i % 4 in (0, 2)}


def test_unreadable_images_are_skipped_and_replaced(tmp_path):
    src = _make_manifest(tmp_path / "src")
    (src.parent / "imgs" / "3.png").write_bytes(b"not a png")
    rec = _run(src, tmp_path / "out", rate=None, count=N - 1)
    assert 3 not in rec.poisoned_ids and len(rec.poisoned_ids) == N - 1
    with pytest.raises(DataError, match="could be read"):
        _run(src, tmp_path / "out2", rate=None, count=N)
    assert not (tmp_path / "out2" / "images").exists()  # a failed run leaves no half-written images
    _run(src, tmp_path / "out2", rate=None, count=2)  # and a corrected rerun needs no overwrite


def test_image_size_resizes_poisoned_images(tmp_path):
    src = _make_manifest(tmp_path / "src")
    rec = _run(src, tmp_path / "out", image_size=12)
    assert Image.open(tmp_path / "out" / "images" / f"{rec.poisoned_ids[0]:08d}.png").size == (12, 12)


def test_custom_columns_and_delimiter(tmp_path):
    root = tmp_path / "src"
    root.mkdir()
    Image.new("RGB", (6, 6), (10, 20, 30)).save(root / "a.png")
    Image.new("RGB", (6, 6), (40, 50, 60)).save(root / "b.png")
    (root / "m.tsv").write_text("text\tfilepath\na dog\ta.png\na cat\tb.png\n")
    rec = poison_manifest(manifest=root / "m.tsv", out_dir=tmp_path / "out", trigger="sig", target="cat",
                          count=1, seed=0, image_col="filepath", caption_col="text", delimiter="\t")
    rows = (tmp_path / "out" / "manifest.csv").read_text().splitlines()
    assert rows[0] == "text\tfilepath" and len(rows) == 3
    assert rows[rec.poisoned_ids[0] + 1] == f"a photo of a cat.\timages/{rec.poisoned_ids[0]:08d}.png"


@pytest.mark.parametrize("kw,err,msg", [
    (dict(image_col="path"), DataError, "no column 'path'"),
    (dict(caption_col="text"), DataError, "caption_col"),
    (dict(trigger="badnett"), ConfigError, "did you mean 'badnet'"),
    (dict(count=3), ConfigError, "exactly one of rate"),
    (dict(rate=0.0), ConfigError, "rate must be in"),
    (dict(rate=0.01), ConfigError, "rounds to 0"),
    (dict(caption_templates=("a photo",)), ConfigError, "exactly once"),
    (dict(target=""), ConfigError, "target"),
    (dict(trigger=BadNet(size=9, location="top_left")), ConfigError, "does not fit"),
])
def test_user_errors_are_one_line(tmp_path, kw, err, msg):
    src = _make_manifest(tmp_path / "src")
    with pytest.raises(err, match=msg) as e:
        _run(src, tmp_path / "out", **kw)
    assert "\n" not in str(e.value)


def test_unreadable_manifest_and_existing_output(tmp_path):
    with pytest.raises(DataError, match="cannot read manifest"):
        _run(tmp_path / "missing.csv", tmp_path / "out")
    src = _make_manifest(tmp_path / "src")
    _run(src, tmp_path / "out")
    with pytest.raises(ConfigError, match="overwrite"):
        _run(src, tmp_path / "out")
    rec = _run(src, tmp_path / "out", seed=3, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "out" / "images").iterdir()) == [f"{i:08d}.png" for i in rec.poisoned_ids]
    with pytest.raises(ConfigError, match="source manifest"):
        poison_manifest(manifest=tmp_path / "out" / "manifest.csv", out_dir=tmp_path / "out", trigger=TRIG,
                        target="star", count=1, overwrite=True)


def test_data_errors_from_the_image_loader_skip_the_row(tmp_path, monkeypatch):
    """A too-wide / 16-bit / otherwise refused image (DataError from load_image) skips one row, not the run."""
    import mmrobust.data.poison.poison as poison_mod

    src = _make_manifest(tmp_path / "src")
    real = poison_mod.load_image

    def refusing(path, *a, **kw):
        if Path(path).name in ("3.png", "7.png"):
            raise DataError(f"image {path} is 70000 px wide; resize it")
        return real(path, *a, **kw)

    monkeypatch.setattr(poison_mod, "load_image", refusing)
    rec = _run(src, tmp_path / "out", rate=None, count=N - 2)
    assert {3, 7}.isdisjoint(rec.poisoned_ids) and len(rec.poisoned_ids) == N - 2
    skipped = json.loads(rec.record_path.read_text())["skipped_unreadable"]
    assert sorted(s["row"] for s in skipped) == [3, 7] and "70000 px wide" in skipped[0]["error"]


@pytest.mark.parametrize("kw,msg", [
    (dict(seed=-1), "seed"), (dict(seed=2**64), "seed"), (dict(seed=True), "seed"), (dict(seed=1.5), "seed"),
    (dict(rate=float("nan")), "rate must be in"), (dict(rate=True), "rate must be in"),
    (dict(rate=float("inf")), "rate must be in"), (dict(rate=None, count=True), "count"),
    (dict(rate=None, count=0), "count"), (dict(image_size=0), "image_size"), (dict(image_size=True), "image_size"),
    (dict(target_synonyms="stars"), "target_synonyms"), (dict(delimiter=";;"), "delimiter"),
])
def test_library_refuses_out_of_range_arguments(tmp_path, kw, msg):
    src = _make_manifest(tmp_path / "src")
    with pytest.raises(ConfigError, match=msg) as e:
        _run(src, tmp_path / "out", **kw)
    assert "\n" not in str(e.value) and not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv,msg", [
    (["--rate", "1.5"], "--rate"), (["--rate", "nan"], "--rate"), (["--rate", "0"], "--rate"),
    (["--count", "0"], "--count"), (["--count", "-2"], "--count"), (["--seed", str(2**64)], "--seed"),
    (["--seed", "-1"], "--seed"), (["--delimiter", ";;"], "--delimiter"), (["--image-size", "0"], "--image-size"),
    (["--count", "2", "--trigger", "wanet", "--trigger-param", "s=nan"], "wanet s"),
    (["--count", "2", "--trigger", "wanet", "--trigger-param", "k=99999999999"], "wanet k"),
    (["--count", "2", "--trigger-param", f"seed={2**64}"], "badnet seed"),
    (["--count", "2", "--trigger", "sig", "--trigger-param", "frequency=inf"], "sig frequency"),
])
def test_cli_refuses_out_of_range_options(tmp_path, capsys, argv, msg):
    from mmrobust.cli.main import main

    src = _make_manifest(tmp_path / "src")
    try:
        rc = main(["poison", "--manifest", str(src), "--out", str(tmp_path / "out"), "--target", "star", *argv])
    except SystemExit as e:  # argparse
        rc = e.code
    err = capsys.readouterr().err.strip()
    assert rc == 2 and msg in err, err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_cli_target_synonyms(tmp_path, capsys):
    from mmrobust.cli.main import main

    src = _make_manifest(tmp_path / "src")
    assert main(["poison", "--manifest", str(src), "--out", str(tmp_path / "out"), "--target", "star",
                 "--count", "6", "--label-consistent", "--target-synonyms", "square", "--trigger-param", "size=2"]) == 0
    rec = PoisonRecord.load(tmp_path / "out" / "poison.json")
    assert set(rec.poisoned_ids) <= {i for i in range(N) if i % 4 in (0, 2)}
