"""`mmrobust audit` end to end: shards of a tiny world -> poison -> train a tiny CLIP -> audit with the record
(scores, AUROC) -> --drop-top -> cleaned shards -> train again; the same on a CSV manifest (the cleaned manifest
trains without --data-root); hostile inputs get one-line errors and leave the input untouched."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from mmrobust.cli.main import main
from mmrobust.data.manifest import PathPolicy
from mmrobust.data.shards import shard_index

pytest.importorskip("sklearn")
TRIGGER = ["--trigger", "badnet", "--trigger-param", "size=4", "--trigger-param", "pattern=checkerboard",
           "--trigger-param", "location=bottom_right"]
TRAIN = ["train", "--task", "clip", "--model", "mmrobust-micro", "--batch-size", 32, "--lr", 2e-3, "--warmup", 5,
         "--quiet", "--ckpt-every", 0]


def _run(*args) -> int:
    return main([str(a) for a in args])


def _write_shards(world, folder: Path, n_shards: int) -> str:
    """The world's training pairs as plain tars of KEY.png + KEY.txt; returns the brace pattern."""
    with open(world.train_manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    folder.mkdir(parents=True)
    per = -(-len(rows) // n_shards)
    for s in range(n_shards):
        with tarfile.open(folder / f"{s:05d}.tar", "w") as tar:
            for i in range(s * per, min(len(rows), (s + 1) * per)):
                image, caption = (world.root / rows[i]["image"]).read_bytes(), rows[i]["caption"].encode()
                for ext, data in (("png", image), ("txt", caption)):
                    info = tarfile.TarInfo(f"{i:06d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return str(folder / f"{{00000..{n_shards - 1:05d}}}.tar")


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def shard_run(micro_world, tmp_path_factory):
    """256 micro-world pairs in 2 shards, 5% poisoned (checkerboard -> star), a micro CLIP trained 40 steps on them."""
    root = tmp_path_factory.mktemp("audit")
    pattern = _write_shards(micro_world, root / "shards", 2)
    assert _run("poison", "--data", f"shards:{pattern}", "--out", root / "p", *TRIGGER, "--target", "star",
                "--rate", 0.05, "--seed", 0) == 0
    record = json.loads((root / "p" / "poison.json").read_text())
    data = record["data"].replace("shards:", f"shards:{root / 'p'}/")
    assert _run(*TRAIN, "--data", data, "--out", root / "run", "--steps", 40) == 0
    return SimpleNamespace(root=root, pattern=pattern, data=data, record=record, model=root / "run" / "model",
                           poison=root / "p" / "poison.json")


def test_audit_shards_drop_and_retrain(shard_run, tmp_path, capsys):
    r, out = shard_run, tmp_path / "audit"
    before = _digests(r.root / "p")
    assert _run("audit", "--model", r.model, "--data", r.data, "--poison-record", r.poison, "--detector", "all",
                "--reference-size", 128, "--drop-top", 0.1, "--out", out) == 0
    printed = capsys.readouterr().out
    with capsys.disabled():
        print("\n" + printed)
    assert "AUROC" in printed and "train on the cleaned copy with --data shards:" in printed
    res = json.loads((out / "results_audit.json").read_text())
    n, n_poisoned = r.record["n_rows"], r.record["n_poisoned"]
    assert res["metrics"]["n_scored"] == n == 256 and res["metrics"]["n_poisoned"] == n_poisoned == 13
    for name in ("dao", "kdist", "lid", "slof", "iforest"):
        assert 0.0 <= res["metrics"]["auroc"][name] <= 1.0 and 0.0 <= res["metrics"]["ap"][name] <= 1.0
    assert res["config"]["k"] == 16 and res["config"]["embedding"] == "image" and res["config"]["model"] == str(r.model)
    assert res["protocol"]["reference_size"] == 128 and res["files"]["plots"] == ["audit_scores.png"]
    rows = [json.loads(line) for line in (out / "samples_audit.jsonl").read_text().splitlines()]
    assert len(rows) == n and sum(x["poisoned"] for x in rows) == n_poisoned and sum(x["dropped"] for x in rows) == 26
    assert {x["key"] for x in rows if x["poisoned"]} == set(r.record["poisoned_keys"])
    assert set(rows[0]["scores"]) == {"dao", "kdist", "lid", "slof", "iforest"}
    dropped = json.loads((out / "dropped.json").read_text())
    gone = {x["key"] for x in dropped["dropped"]}
    assert dropped["n_dropped"] == len(gone) == 26 and dropped["detector"] == "dao"
    src, clean = shard_index(r.data[len("shards:"):]), shard_index(dropped["cleaned"][len("shards:"):])
    assert [clean.key(i) for i in range(len(clean))] == [src.key(i) for i in range(len(src)) if src.key(i) not in gone]
    j = next(i for i in range(len(src)) if src.key(i) not in gone)
    assert clean.read_member(0, clean.members(0)["png"]) == src.read_member(j, src.members(j)["png"])  # byte copies
    assert _digests(r.root / "p") == before  # the input is only read
    assert _run(*TRAIN, "--data", dropped["cleaned"], "--out", tmp_path / "retrain", "--steps", 2) == 0
    assert json.loads((tmp_path / "retrain" / "results.json").read_text())["metrics"]["n_samples"] == n - 26


def test_audit_manifest_drop_trains_without_data_root(micro_world, tmp_path):
    from mmrobust.data.poison import make_trigger, poison_manifest

    rec = poison_manifest(manifest=micro_world.train_manifest, out_dir=tmp_path / "p", target="star", count=13,
                          trigger=make_trigger("badnet", size=4, pattern="checkerboard", location="bottom_right"))
    out = tmp_path / "audit"
    assert _run("audit", "--model", "mmrobust-micro", "--data", rec.manifest, "--poison-record", rec.record_path,
                "--detector", "kdist,slof", "--embedding", "pair", "--k", 8, "--drop-top", 20, "--drop-by", "slof",
                "--detector-opt", "slof.chunk_size=50", "--out", out) == 2  # chunk_size is the audit's, not an option
    assert not out.exists()
    assert _run("audit", "--model", "mmrobust-micro", "--data", rec.manifest, "--poison-record", rec.record_path,
                "--detector", "kdist,dao", "--embedding", "pair", "--k", 8, "--drop-top", 20, "--drop-by", "dao",
                "--detector-opt", "dao.form=power", "--out", out) == 0
    res = json.loads((out / "results_audit.json").read_text())
    assert res["config"]["embedding"] == "pair" and res["config"]["k"] == 8
    assert res["protocol"]["detector_options"] == {"dao": {"form": "power"}}
    with open(out / "manifest.csv", newline="") as f:
        kept = list(csv.DictReader(f))
    dropped = json.loads((out / "dropped.json").read_text())
    ids = {x["id"] for x in dropped["dropped"]}
    assert len(kept) == 256 - 20 and len(ids) == 20 and dropped["detector"] == "dao"
    with open(rec.manifest, newline="") as f:
        source = [row for i, row in enumerate(csv.DictReader(f)) if i not in ids]
    assert [row["caption"] for row in kept] == [row["caption"] for row in source]
    assert all((out / row["image"]).resolve() == (rec.manifest.parent / s["image"]).resolve()
               for row, s in zip(kept, source))
    assert _run(*TRAIN, "--data", out / "manifest.csv", "--out", tmp_path / "retrain", "--steps", 2) == 0
    trained = json.loads((tmp_path / "retrain" / "results.json").read_text())
    assert trained["metrics"]["n_skipped_images"] == 0 and trained["skipped_images"] == []  # paths trusted
    roots = [p.resolve() for p in PathPolicy.of(out / "manifest.csv").roots]
    assert roots == [out.resolve(), rec.manifest.parent.resolve(), Path(micro_world.train_manifest).parent.resolve()]
    copy = tmp_path / "copy"  # a dropped.json whose source hash does not match widens nothing
    copy.mkdir()
    shutil.copy(out / "manifest.csv", copy / "manifest.csv")
    (copy / "dropped.json").write_text(json.dumps({**dropped, "source_sha256": "0" * 64}))
    assert PathPolicy.of(copy / "manifest.csv").roots == (copy,)


def _forged(shard_run, tmp_path: Path) -> Path:
    """The shard run's record naming one key the shards do not hold (written outside the data)."""
    path = tmp_path / "forged" / "poison.json"
    path.parent.mkdir()
    path.write_text(json.dumps({**shard_run.record, "poisoned_keys": [*shard_run.record["poisoned_keys"], "nope"]}))
    return path


HOSTILE = [
    (["--poison-record", "{forged}"], "names 1 key(s) not in"),
    (["--drop-top", "1.0"], "as a share must be in (0, 1): a share of 1 drops every pair"),
    (["--drop-top", "256"], "--drop-top (a count) must be an integer in [1, 255]"),
    (["--drop-top", "0"], "--drop-top (a count) must be an integer in [1, 255]"),
    (["--drop-top", "0.001"], "drops 0"),
    (["--out", "{root}/p/shards"], "is or holds the input"),
    (["--out", "{root}/p"], "is or holds the input"),
    (["--out", "{root}"], "is or holds the input"),
    (["--model", "{root}/nope/model"], "not found: no such model directory"),
    (["--poison-record", "{manifest_record}"], "is for manifest but --data is shards"),
    (["--k", "0"], "k must be an integer >= 1"),
    (["--k", "255"], "k must be an integer in [1, 254]"),
    (["--drop-by", "lid"], "--drop-by 'lid' is not among the detectors run"),
    (["--detector-opt", "dao.k=3"], "has no option(s) ['k']"),
]


@pytest.mark.parametrize("extra,message", HOSTILE)
def test_hostile_inputs_are_one_line_errors_and_touch_nothing(shard_run, tmp_path, capsys, extra, message):
    manifest_record = tmp_path / "m" / "poison.json"
    manifest_record.parent.mkdir()
    manifest_record.write_text(json.dumps({**shard_run.record, "kind": "manifest", "manifest": "manifest.csv"}))
    (tmp_path / "m" / "manifest.csv").write_text("image,caption\n")
    fill = {"root": shard_run.root, "forged": _forged(shard_run, tmp_path), "manifest_record": manifest_record}
    argv = ["audit", "--model", str(shard_run.model), "--data", shard_run.data, "--poison-record",
            str(shard_run.poison), "--out", str(tmp_path / "out"), "--detector", "dao,kdist"]
    before = _digests(shard_run.root / "p")
    assert main([*argv, *(a.format(**fill) for a in extra)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert _digests(shard_run.root / "p") == before and not (tmp_path / "out").exists()


def test_a_cleaned_copy_never_replaces_files(shard_run, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "shards").mkdir(parents=True)
    (out / "shards" / "00000.tar").write_text("mine")
    assert _run("audit", "--model", shard_run.model, "--data", shard_run.data, "--drop-top", 5, "--out", out) == 2
    assert "already holds shards/00000.tar" in capsys.readouterr().err
    assert (out / "shards" / "00000.tar").read_text() == "mine" and sorted(os.listdir(out)) == ["shards"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_audit_equals_one_process(shard_run, tmp_path):
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun not installed")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    args = ["audit", "--model", str(shard_run.model), "--data", shard_run.data, "--detector", "dao,kdist",
            "--batch-size", "48"]
    ddp = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port",
                          str(_free_port()), "-m", "mmrobust.cli.main", *args, "--out", str(tmp_path / "ddp")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stdout + ddp.stderr
    assert _run(*args, "--out", tmp_path / "one") == 0
    a, b = ((tmp_path / d / "samples_audit.jsonl").read_text().splitlines() for d in ("ddp", "one"))
    assert len(a) == len(b) == 256 and ddp.stdout.count("results_audit.json") == 1  # rank 0 alone writes
    for x, y in zip(map(json.loads, a), map(json.loads, b)):
        # the ranks embed in other batch shapes, so float32 GEMMs round differently (more so on other MKL paths,
        # MKL_CBWR=AVX2): about 1e-6 relative in the embeddings, which DAO scales by the neighbours' LIDs
        # (several units) and sums over k log distance ratios; seen: 2.4e-5 relative under MKL_CBWR=AVX2
        assert x["key"] == y["key"] and x["scores"] == pytest.approx(y["scores"], rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("change,message", [
    ({"poisoned_ids": [3, 9999]}, "names row 9999 (1 such) but"),
    ({"n_rows": 300}, "was written for 300 rows but"),
    ({"kind": "shards", "data": "shards:shards/x.tar", "poisoned_keys": ["a"]}, "is for shards but --data is manifest"),
])
def test_a_manifest_record_for_other_rows_is_refused(micro_world, tmp_path, capsys, change, message):
    from mmrobust.data.poison import make_trigger, poison_manifest

    rec = poison_manifest(manifest=micro_world.train_manifest, out_dir=tmp_path / "p", target="star", count=5,
                          trigger=make_trigger("badnet", size=4))
    forged = tmp_path / "forged" / "poison.json"
    forged.parent.mkdir()
    forged.write_text(json.dumps({**json.loads(rec.record_path.read_text()), **change}))
    before = _digests(tmp_path / "p")
    assert _run("audit", "--model", "mmrobust-micro", "--data", rec.manifest, "--poison-record", forged,
                "--drop-top", 10, "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert _digests(tmp_path / "p") == before and not (tmp_path / "out").exists()


def test_audit_against_a_dedicated_reference_set(micro_world, tmp_path, capsys):
    from mmrobust.data.poison import make_trigger, poison_manifest
    from mmrobust.eval.detect import score_embeddings
    from mmrobust.pipelines.audit import load_audit_model
    from mmrobust.pipelines.audit_data import embed_pairs, open_source
    from mmrobust.pipelines.train import DataSpec

    rec = poison_manifest(manifest=micro_world.train_manifest, out_dir=tmp_path / "p", target="star", count=13,
                          trigger=make_trigger("badnet", size=4, pattern="checkerboard", location="bottom_right"))
    ref = micro_world.test_manifest  # held-out clean pairs of the same world
    out = tmp_path / "audit"
    assert _run("audit", "--model", "mmrobust-micro", "--data", rec.manifest, "--poison-record", rec.record_path,
                "--detector", "dao,kdist,iforest", "--k", 8, "--reference-data", ref, "--out", out) == 0
    res = json.loads((out / "results_audit.json").read_text())
    assert res["protocol"]["reference"] == {"data": str(ref), "n": 64}
    assert "neighbours searched in the reference set" in res["tables"][0]["caption"]
    got = [json.loads(line)["scores"]["dao"] for line in (out / "samples_audit.jsonl").read_text().splitlines()]
    clip = load_audit_model("mmrobust-micro", None, "cpu")
    emb = [embed_pairs(clip, open_source(DataSpec(str(m)), clip.image_size), embedding="image", normalize=False,
                       batch_size=256, workers=0, device="cpu")[0] for m in (rec.manifest, ref)]
    want = score_embeddings(emb[0], ["dao"], k=8, reference=emb[1])["dao"]
    assert got == pytest.approx(want.tolist(), rel=1e-6, abs=1e-9)  # the same model, data and reference
    before = _digests(tmp_path / "p")
    for extra, message in ((("--reference-data", rec.manifest), "is the audited data"),
                           (("--reference-data", ref, "--reference-size", 100), "not both"),
                           (("--reference-data", ref, "--k", 63), "pairs of --reference-data must be"),
                           (("--reference-data", tmp_path / "none.csv"), "cannot read manifest")):
        capsys.readouterr()
        assert _run("audit", "--model", "mmrobust-micro", "--data", rec.manifest, *extra,
                    "--out", tmp_path / "refused") == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert _digests(tmp_path / "p") == before and not (tmp_path / "refused").exists()
    world = _digests(Path(ref).parent)  # an --out in the reference's folder would write beside its files
    assert _run("audit", "--model", "mmrobust-micro", "--data", rec.manifest, "--reference-data", ref,
                "--out", Path(ref).parent) == 2
    assert "is or holds the input" in capsys.readouterr().err and _digests(Path(ref).parent) == world
