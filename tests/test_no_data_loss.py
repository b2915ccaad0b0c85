"""Zero data loss: poison, train and generate never delete or rewrite what they did not write, and a
refused run leaves every byte of the folders it was pointed at as it was."""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmrobust.cli.main import main
from mmrobust.data.poison import BadNet, poison_manifest
from mmrobust.errors import ConfigError


def _hashes(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``root``."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _source(root: Path, n: int = 12) -> Path:
    """root/train.csv with n rows whose images are root/images/NNNNNNNN.png (the names poison writes)."""
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / "images" / f"{i:08d}.png")
        rows.append([f"images/{i:08d}.png", f"a photo of a {'star' if i % 2 else 'circle'}."])
    with (root / "train.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["image", "caption"], *rows])
    return root / "train.csv"


def _cli(argv: list, capsys) -> tuple[int, str]:
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err.strip()


def _one_line(err: str) -> None:
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err


POISON = ["poison", "--target", "star", "--count", "3", "--trigger-param", "size=2"]


@pytest.mark.parametrize("overwrite", [False, True])
def test_poison_into_the_source_folder_keeps_every_byte(tmp_path, capsys, overwrite):
    data = tmp_path / "data"
    manifest = _source(data)
    before = _hashes(tmp_path)
    rc, err = _cli([*POISON, "--manifest", manifest, "--out", data, *(["--overwrite"] if overwrite else [])], capsys)
    assert rc == 2 and "holds the source manifest" in err
    _one_line(err)
    assert _hashes(tmp_path) == before


def test_poison_into_a_folder_above_the_sources_is_refused(tmp_path, capsys):
    manifest = _source(tmp_path / "data" / "set")
    before = _hashes(tmp_path)
    rc, err = _cli([*POISON, "--manifest", manifest, "--out", tmp_path, "--overwrite"], capsys)
    assert rc == 2 and "holds the source manifest" in err
    # a manifest elsewhere whose images lie inside --out
    other = tmp_path / "elsewhere.csv"
    other.write_text("image,caption\n" + "".join(f"data/set/images/{i:08d}.png,a star\n" for i in range(12)))
    before = _hashes(tmp_path)
    rc, err = _cli([*POISON, "--manifest", other, "--out", tmp_path / "data", "--overwrite"], capsys)
    assert rc == 2 and "holds source image" in err
    _one_line(err)
    assert _hashes(tmp_path) == before


def test_overwrite_deletes_only_files_the_earlier_record_lists(tmp_path):
    manifest = _source(tmp_path / "data")
    out = tmp_path / "out"
    trig = BadNet(size=2, location="top_left")
    poison_manifest(manifest=manifest, out_dir=out, trigger=trig, target="star", count=4, seed=0)
    (out / "notes.txt").write_text("mine")
    (out / "stage").mkdir()
    (out / "stage" / "keep.json").write_text("{}")
    rec = poison_manifest(manifest=manifest, out_dir=out, trigger=trig, target="star", count=2, seed=5, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine" and (out / "stage" / "keep.json").is_file()
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"{i:08d}.png" for i in rec.poisoned_ids]
    # a file under images/ that no record lists is never deleted, so the run refuses
    (out / "images" / "holiday.png").write_bytes(b"my photo")
    before = _hashes(tmp_path)
    with pytest.raises(ConfigError, match="no poison.json of mmrobust poison lists") as e:
        poison_manifest(manifest=manifest, out_dir=out, trigger=trig, target="star", count=2, overwrite=True)
    assert "\n" not in str(e.value) and _hashes(tmp_path) == before


@pytest.mark.parametrize("record", ["garbage", "foreign", None])
def test_overwrite_refuses_files_without_a_record_of_ours(tmp_path, record):
    manifest = _source(tmp_path / "data")
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.csv").write_text("image,caption\nx.png,my own manifest\n")
    if record == "garbage":
        (out / "poison.json").write_text("{not json")
    elif record == "foreign":
        (out / "poison.json").write_text(json.dumps({"format": "someone-else/1", "poisoned": []}))
    before = _hashes(tmp_path)
    with pytest.raises(ConfigError) as e:
        poison_manifest(manifest=manifest, out_dir=out, trigger="badnet", target="star", count=1, overwrite=True)
    assert "\n" not in str(e.value) and _hashes(tmp_path) == before


def test_a_failed_poison_run_removes_only_what_it_wrote(tmp_path):
    manifest = _source(tmp_path / "data")
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    (out / "readme.md").write_text("kept")
    before = _hashes(tmp_path)
    with pytest.raises(ConfigError, match="does not fit"):  # the 9 px patch does not fit the 8 px images
        poison_manifest(manifest=manifest, out_dir=out, trigger=BadNet(size=9, location="top_left"), target="star",
                        count=2)
    assert _hashes(tmp_path) == before and (out / "images").is_dir()


def _train(world, out, *extra) -> list:
    return ["train", "--task", "clip", "--model", "mmrobust-micro", "--data", world.train_manifest, "--out", out,
            "--steps", "2", "--batch-size", "8", "--warmup", "1", "--quiet", *extra]


def test_train_rerun_without_resume_is_refused_and_overwrite_says_what_it_replaces(tmp_path, micro_world, capsys):
    out = tmp_path / "run"
    assert _cli(_train(micro_world, out), capsys)[0] == 0
    (out / "my_notes.txt").write_text("mine")
    before = _hashes(out)
    rc, err = _cli(_train(micro_world, out), capsys)
    assert rc == 2 and "already holds a training run" in err and "--overwrite" in err
    _one_line(err)
    assert _hashes(out) == before
    rc, err = _cli(_train(micro_world, out, "--overwrite", "--seed", "3"), capsys)
    assert rc == 0 and "replacing config.yaml" in err and "checkpoints/last.pt" in err
    assert (out / "my_notes.txt").read_text() == "mine"
    assert len((out / "train_log.jsonl").read_text().splitlines()) == 2  # one run's rows, not two runs mixed
    assert "seed: 3" in (out / "config.yaml").read_text()


@pytest.mark.parametrize("change", [["--lr", "1e-3"], ["--opt", "nosuch=1"], ["--init-seed", "4"],
                                    ["--resume", "--overwrite"]])
def test_a_refused_resume_leaves_the_run_byte_identical(tmp_path, micro_world, capsys, change):
    out = tmp_path / "run"
    assert _cli(_train(micro_world, out), capsys)[0] == 0
    before = _hashes(out)
    rc, err = _cli([*_train(micro_world, out, "--resume"), *change], capsys)
    assert rc == 2
    _one_line(err)
    assert _hashes(out) == before


def test_overwrite_refuses_a_folder_whose_config_is_not_ours(tmp_path, micro_world, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.yaml").write_text("my: own settings\n")
    (out / "results.json").write_text("{}")
    before = _hashes(out)
    rc, err = _cli(_train(micro_world, out, "--overwrite"), capsys)
    assert rc == 2 and "no config.yaml written by mmrobust train" in err
    assert _hashes(out) == before


def test_generate_refuses_an_existing_world_unless_overwrite(tmp_path, capsys):
    args = ["generate", "--out", tmp_path / "w", "--n-train", "4", "--n-test", "2", "--image-size", "8"]
    assert _cli(args, capsys)[0] == 0
    (tmp_path / "w" / "train.csv").write_text("my edited manifest\n")
    before = _hashes(tmp_path)
    rc, err = _cli([*args, "--seed", "1"], capsys)
    assert rc == 2 and "already holds train.csv" in err and "--overwrite" in err
    _one_line(err)
    assert _hashes(tmp_path) == before
    assert _cli([*args, "--seed", "1", "--overwrite"], capsys)[0] == 0
    assert (tmp_path / "w" / "train.csv").read_text().startswith("image,caption")


def test_a_killed_poison_run_is_replaced_with_overwrite(tmp_path, monkeypatch):
    """A run killed while writing images (no cleanup ran) leaves files its in-progress record marks as
    the tool's: --overwrite replaces them and gives the same result as an uninterrupted run."""
    import mmrobust.data.poison.poison as poison

    manifest = _source(tmp_path / "data")
    clean = poison_manifest(manifest=manifest, out_dir=tmp_path / "clean", trigger=BadNet(size=3), target="star", count=4)
    real_save, saved = poison._save_png, []

    def dying_save(img, path):
        if len(saved) == 2:
            raise KeyboardInterrupt  # the kill
        saved.append(path)
        real_save(img, path)

    monkeypatch.setattr(poison, "_save_png", dying_save)
    monkeypatch.setattr(poison, "discard_written", lambda *a: None)  # SIGKILL: no cleanup
    with pytest.raises(KeyboardInterrupt):
        poison_manifest(manifest=manifest, out_dir=tmp_path / "out", trigger=BadNet(size=3), target="star", count=4)
    monkeypatch.undo()
    assert json.loads((tmp_path / "out" / "poison.json").read_text())["status"] == "writing" and len(saved) == 2
    with pytest.raises(ConfigError, match="already holds a poisoned manifest"):
        poison_manifest(manifest=manifest, out_dir=tmp_path / "out", trigger=BadNet(size=3), target="star", count=4)
    again = poison_manifest(manifest=manifest, out_dir=tmp_path / "out", trigger=BadNet(size=3), target="star", count=4,
                            overwrite=True)
    assert again.poisoned_ids == clean.poisoned_ids
    assert _hashes(tmp_path / "out" / "images") == _hashes(tmp_path / "clean" / "images")


@pytest.mark.parametrize("command, mine", [
    (["generate", "--n-train", "4", "--n-test", "2", "--image-size", "8"], "train.csv"),
    (["mmr", "make-train", "--images", "3"], "train.jsonl"),
    (["mmr", "make-data", "--pairs-per-category", "1", "--image-size", "16"], "questions.json"),
])
def test_writers_never_replace_a_users_files_with_or_without_overwrite(tmp_path, capsys, command, mine):
    """A folder the tool never wrote (no marker record of its own) keeps its files: refused without
    --overwrite, and refused with it too; each refusal one line, every byte kept."""
    out = tmp_path / "d"
    out.mkdir()
    (out / mine).write_text("the user's own file\n")
    before = _hashes(out)
    for extra in ([], ["--overwrite"]):
        rc, err = _cli([*command, "--out", out, *extra], capsys)
        assert rc == 2 and mine in err and ("--overwrite" in err if not extra else "did not write" in err), err
        _one_line(err)
        assert _hashes(out) == before


@pytest.mark.parametrize("command", [
    ["mmr", "make-train", "--images", "3"],
    ["mmr", "make-data", "--pairs-per-category", "1", "--image-size", "16"],
])
def test_writers_replace_their_own_output_only_with_overwrite(tmp_path, capsys, command):
    out = tmp_path / "d"
    assert _cli([*command, "--out", out], capsys)[0] == 0
    (out / "notes.txt").write_text("mine")
    before = _hashes(out)
    rc, err = _cli([*command, "--out", out, "--seed", "1"], capsys)
    assert rc == 2 and "already holds" in err and "--overwrite" in err
    _one_line(err)
    assert _hashes(out) == before
    assert _cli([*command, "--out", out, "--seed", "1", "--overwrite"], capsys)[0] == 0
    assert (out / "notes.txt").read_text() == "mine" and _hashes(out) != before


def test_make_tiny_llava_refuses_a_folder_with_files(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")
    rc, err = _cli(["mmr", "make-tiny-llava", "--out", tmp_path], capsys)
    assert rc == 2 and "choose a new --out" in err
    _one_line(err)
    assert (tmp_path / "config.json").read_text() == "{}"
