"""The clip-benchmark path: `mmrobust eval zeroshot --data clip_benchmark:NAME --data-root ROOT` asks the
package's own builder for the dataset, class names and templates. Offline, the builder makes its `dummy`
dataset and reads a webdataset export (`wds/NAME`, the layout its `clip_benchmark_export_wds` writes) that
the test writes; the same images as a class-folder tree give the same predictions."""
from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest

pytest.importorskip("clip_benchmark", reason="clip-benchmark is an optional extra (pip install 'mmrobust[benchmarks]')")

from mmrobust.cli.main import main  # noqa: E402
from mmrobust.data.clip_benchmark import BenchmarkSplit, parse_benchmark_spec  # noqa: E402
from mmrobust.errors import DataError  # noqa: E402
from mmrobust.world.shapes import render_scene, sample_scene  # noqa: E402

NAMES = ["circle", "square", "triangle"]


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _export(root, n=9):
    """A clip-benchmark webdataset export of world scenes, and the same images as a class-folder tree."""
    rng = np.random.default_rng(0)
    (root / "cb" / "test").mkdir(parents=True)
    (root / "cb" / "test" / "nshards.txt").write_text("1\n")
    (root / "cb" / "classnames.txt").write_text("\n".join(NAMES) + "\n")
    (root / "cb" / "zeroshot_classification_templates.txt").write_text("a photo of a {c}.\n")
    with tarfile.open(root / "cb" / "test" / "0.tar", "w") as tar:
        for i in range(n):
            y = i % len(NAMES)
            img = render_scene(sample_scene(rng, shapes=[NAMES[y]]), image_size=32, rng=rng)
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            _add(tar, f"s{i:04d}.png", buf.getvalue())
            _add(tar, f"s{i:04d}.cls", str(y).encode())
            (root / "tree" / NAMES[y]).mkdir(parents=True, exist_ok=True)
            img.save(root / "tree" / NAMES[y] / f"s{i:04d}.png")
    return root / "cb", root / "tree"


def _eval(tmp_path, data, *extra):
    out = tmp_path / data.replace(":", "_").replace("/", "_")
    assert main(["eval", "zeroshot", "--model", "mmrobust-micro", "--data", data, "--out", str(out), *extra]) == 0
    metrics = json.loads((out / "results_zeroshot.json").read_text())["metrics"]
    samples = [json.loads(line) for line in (out / "samples_zeroshot.jsonl").read_text().splitlines()]
    return metrics, sorted((s["label"], s["pred"]) for s in samples)


def test_builders_webdataset_export_reads_like_the_same_class_folder(tmp_path):
    cb, tree = _export(tmp_path)
    split = BenchmarkSplit("wds/mini", root=cb, image_size=32)
    assert split.classes.classnames == tuple(NAMES) and split.classes.templates == ("a photo of a {}.",)
    assert len(split) == 9 and [split[i]["label"] for i in range(9)] == [i % 3 for i in range(9)]
    item = split[4]
    assert item["image"].shape == (3, 32, 32) and 0 <= item["image"].min() <= item["image"].max() <= 1
    bench, bench_preds = _eval(tmp_path, "clip_benchmark:wds/mini", "--data-root", str(cb))
    folder, folder_preds = _eval(tmp_path, f"folder:{tree}")
    assert bench["n"] == folder["n"] == 9 and bench["top1"] == folder["top1"]
    assert bench_preds == folder_preds  # same images, names and template: the same predictions


def test_builders_dummy_dataset_through_the_cli(tmp_path):
    metrics, preds = _eval(tmp_path, "clip_benchmark:dummy", "--data-root", str(tmp_path))
    assert metrics["n"] == 1 and preds[0][0] == 0 and preds[0][1] in (0, 1)


def test_bad_benchmark_data_are_one_line_errors(tmp_path, capsys):
    assert parse_benchmark_spec("clip_benchmark:cifar10") == "cifar10" and parse_benchmark_spec("x.csv") is None
    with pytest.raises(DataError, match="names no dataset"):
        parse_benchmark_spec("clip_benchmark:")
    cases = ((["--data", "clip_benchmark:cifar10"], "needs --data-root"),
             (["--data", "clip_benchmark:cifar10", "--data-root", str(tmp_path)], "is not under"),
             (["--data", "clip_benchmark:no-such-set", "--data-root", str(tmp_path)], "has no dataset"),
             (["--data", "clip_benchmark:cifar10", "--data-root", str(tmp_path / "missing")], "does not exist"),
             (["--data", "clip_benchmark:dummy", "--data-root", str(tmp_path), "--classes", "c.json"],
              "--classes is not used"))
    for argv, msg in cases:
        rc = main(["eval", "zeroshot", "--model", "mmrobust-micro", "--out", str(tmp_path / "e"), *argv])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and msg in err, err
    assert not list(tmp_path.glob("cifar-10*"))  # nothing was downloaded
