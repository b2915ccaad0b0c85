"""webdataset shards: the index reads what webdataset reads; poison -> train -> eval round trip on shards the
test writes (same seed, same keys and bytes); kill-and-resume on shards equals a straight run; hostile inputs
get one-line errors and nothing is written or deleted."""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from mmrobust.cli.main import main
from mmrobust.data.shards import ShardImageTextDataset, shard_index
from mmrobust.tasks.build import build_task
from mmrobust.models import create_clip
from mmrobust.training import TrainConfig, train

wds = pytest.importorskip("webdataset")

TRIGGER = ["--trigger", "badnet", "--trigger-param", "size=8", "--trigger-param", "pattern=checkerboard",
           "--trigger-param", "location=bottom_right"]


def write_shards(world, folder: Path, n_shards: int, *, json_meta: bool = True) -> str:
    """The world's train split as img2dataset-style shards (KEY.jpg, KEY.txt, KEY.json; 9-digit keys);
    returns the brace pattern."""
    with open(world.train_manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    folder.mkdir(parents=True)
    per = -(-len(rows) // n_shards)
    for s in range(n_shards):
        with wds.TarWriter(str(folder / f"{s:05d}.tar")) as tw:
            for i in range(s * per, min(len(rows), (s + 1) * per)):
                buf = io.BytesIO()
                Image.open(world.root / rows[i]["image"]).convert("RGB").save(buf, format="JPEG", quality=95)
                sample = {"__key__": f"{s:05d}{i:04d}", "jpg": buf.getvalue(), "txt": rows[i]["caption"]}
                if json_meta:
                    sample["json"] = json.dumps({"key": f"{s:05d}{i:04d}", "caption": rows[i]["caption"]})
                tw.write(sample)
    return str(folder / f"{{00000..{n_shards - 1:05d}}}.tar")


def _run(*args) -> int:
    return main([str(a) for a in args])


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def shard_world(tmp_path_factory):
    """1600 training pairs at 32 px in 4 shards, and the CSV test split."""
    from mmrobust.world.shapes import generate_world

    root = tmp_path_factory.mktemp("shard_world")
    world = generate_world(root / "world", n_train=1600, n_test=200, seed=3)
    return world, write_shards(world, root / "shards", 4)


def _odd_shard(path: Path) -> None:
    """A shard with what webdataset skips or groups specially: a folder, a __meta__ file, a name without an
    extension, an upper-case extension, nested keys and multi-dot extensions."""
    with tarfile.open(path, "w") as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        folder = tarfile.TarInfo("sub")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        add("__info__", b"meta")
        add("README", b"no extension")
        add("a.JPG", b"A-image")
        add("a.txt", b"caption a")
        add("sub/b.seg.png", b"B-seg")
        add("sub/b.txt", b"caption b")
        add("c.txt", b"caption only")
        add("a.json", b"{}")  # same key again, not adjacent: webdataset makes a new sample


def test_index_reads_what_webdataset_reads(shard_world, tmp_path):
    _, pattern = shard_world
    _odd_shard(tmp_path / "odd.tar")
    for pat in (pattern, str(tmp_path / "odd.tar")):
        index = shard_index(pat)
        ref = list(wds.WebDataset(pat, shardshuffle=False, empty_check=False))
        assert [r["__key__"] for r in ref] == [index.key(i) for i in range(len(index))]
        for i, r in enumerate(ref):
            members = index.members(i)
            assert set(members) == {k for k in r if not k.startswith("__")}
            assert all(index.read_member(i, m) == r[ext] for ext, m in members.items())
    odd = shard_index(str(tmp_path / "odd.tar"))
    assert [odd.key(i) for i in odd.complete()] == ["a"]  # sub/b has a .seg.png, not an image; c has no image
    assert [(x["key"], x["missing"]) for x in odd.incomplete()] == [("sub/b", "image"), ("c", "image"), ("a", "image")]


def test_dataset_items_and_rank_slices(shard_world):
    world, pattern = shard_world
    ds = ShardImageTextDataset(pattern, image_size=32, views=("image_aug", "caption_aug"), seed=5)
    with open(world.train_manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(ds) == len(rows) and ds.key(401) == "000010401"
    item = ds[(0, 401)]
    assert item["caption"] == rows[401]["caption"] and item["image"].shape == (3, 32, 32)
    keys = [(2, i) for i in (7, 401, 1599, 800)]
    whole = ds.__getitems__(keys)
    halves = ds.__getitems__(keys[:2]) + ds.__getitems__(keys[2:])  # two ranks' contiguous slices
    for a, b in zip(whole, halves):
        assert a["caption_aug"] == b["caption_aug"] and torch.equal(a["image_aug"], b["image_aug"])
        assert torch.equal(a["image"], b["image"])


def _poison_train_eval(world, pattern: str, out: Path, *, steps: int, capsys) -> dict:
    """`mmrobust poison` twice with seed 7 (identical) and once with seed 8 (other keys), `mmrobust train` on the
    poisoned shards, `mmrobust eval backdoor` on the world's CSV test split; returns the eval metrics."""
    poison = ["poison", "--data", f"shards:{pattern}", *TRIGGER, "--target", "star", "--rate", 0.1]
    assert _run(*poison, "--out", out / "p1", "--seed", 7) == 0
    assert _run(*poison, "--out", out / "p2", "--seed", 7) == 0
    assert _run(*poison, "--out", out / "p3", "--seed", 8) == 0
    recs = [json.loads((out / p / "poison.json").read_text()) for p in ("p1", "p2", "p3")]
    assert recs[0]["poisoned_keys"] == recs[1]["poisoned_keys"] != recs[2]["poisoned_keys"]
    assert len(recs[0]["poisoned_keys"]) == recs[0]["n_poisoned"] == round(0.1 * recs[0]["n_rows"])
    assert recs[0]["seed"] == 7 and recs[0]["trigger"]["name"] == "badnet"
    assert (out / "p1" / "poison.json").read_bytes() == (out / "p2" / "poison.json").read_bytes()
    for name in recs[0]["shards"]:
        assert _sha(out / "p1" / name) == _sha(out / "p2" / name) == recs[0]["shards_sha256"][name]
    _check_poisoned_copy(pattern, out / "p1", recs[0])
    data = recs[0]["data"].replace("shards:", f"shards:{out / 'p1'}/")
    assert data in capsys.readouterr().out  # the CLI prints the --data to train on
    assert _run("train", "--task", "clip", "--data", data, "--out", out / "run", "--steps", steps,
                "--batch-size", 64, "--lr", 2e-3, "--warmup", 10, "--quiet", "--ckpt-every", 0) == 0
    assert json.loads((out / "run" / "results.json").read_text())["metrics"]["n_samples"] == recs[0]["n_rows"]
    assert _run("eval", "backdoor", "--model", out / "run" / "model", "--data", world.test_manifest,
                "--classes", world.classes, "--poison-record", out / "p1" / "poison.json", "--out", out / "eval") == 0
    metrics = json.loads((out / "eval" / "results_backdoor.json").read_text())["metrics"]
    preds = [json.loads(line) for line in (out / "eval" / "samples_backdoor.jsonl").read_text().splitlines()]
    metrics["clean_to_target"] = sum(p["pred_clean"] == metrics["target"] for p in preds) / len(preds)
    with capsys.disabled():
        print("\nshards round trip:", json.dumps({k: metrics[k] for k in ("asr", "clean_top1", "clean_to_target")}))
    return metrics


def test_poison_train_eval_round_trip(shard_world, tmp_path, capsys):
    # A CPU-sized run: the tiny CLIP is near chance on clean images this early, so ASR is printed, not asserted
    # (whether a trigger is learned is the model's business; tests/test_e2e_backdoor.py covers it on CSV data).
    world, pattern = shard_world
    metrics = _poison_train_eval(world, pattern, tmp_path, steps=60, capsys=capsys)
    assert metrics["target_name"] == "star" and metrics["n_asr"] > 0 and 0.0 <= metrics["asr"] <= 1.0


def _check_poisoned_copy(pattern: str, out: Path, rec: dict) -> None:
    """Untouched samples are byte-identical; poisoned ones have a new image, the target caption in .txt and .json."""
    src, dst = shard_index(pattern), shard_index(str(out / "shards" / Path(pattern).name))
    poisoned = set(rec["poisoned_keys"])
    assert [src.key(i) for i in range(len(src))] == [dst.key(i) for i in range(len(dst))]
    for i in range(len(src)):
        a = {e: src.read_member(i, m) for e, m in src.members(i).items()}
        b = {e: dst.read_member(i, m) for e, m in dst.members(i).items()}
        if src.key(i) not in poisoned:
            assert a == b
        else:
            assert a["jpg"] != b["jpg"] and b["txt"] == b"a photo of a star."
            assert json.loads(b["json"])["caption"] == "a photo of a star."
    assert [src.key(i) for i in rec["poisoned_ids"]] == rec["poisoned_keys"]  # ids index the shard dataset


class _Killed(Exception):
    pass


def _task(kill_at: int | None = None):
    task = build_task("cleanclip", create_clip("mmrobust-micro"))  # augmented views: seeded per (epoch, index)
    if kill_at is not None:
        forward, calls = task.forward, [0]

        def dying(batch):
            calls[0] += 1
            if calls[0] > kill_at:
                raise _Killed
            return forward(batch)
        task.forward = dying
    return task


def test_kill_and_resume_on_shards_equals_straight_run(micro_world, tmp_path):
    pattern = write_shards(micro_world, tmp_path / "shards", 3, json_meta=False)
    ds = ShardImageTextDataset(pattern, image_size=16, views=_task().views, seed=1)
    cfg = dict(steps=11, batch_size=48, lr=1e-3, warmup_steps=2, ckpt_every=3, seed=1)  # 5 steps per epoch
    train(_task(), ds, TrainConfig(**cfg), tmp_path / "straight", progress=False)
    with pytest.raises(_Killed):
        train(_task(kill_at=7), ds, TrainConfig(**cfg), tmp_path / "killed", progress=False)
    assert torch.load(tmp_path / "killed" / "checkpoints" / "last.pt", weights_only=True)["step"] == 6  # mid-epoch 2
    res = train(_task(), ShardImageTextDataset(pattern, image_size=16, views=_task().views, seed=1),
                TrainConfig(**cfg, num_workers=2), tmp_path / "killed", resume=True, progress=False)
    assert res.resumed_from == 6 and res.steps_done == 11
    a, b = (torch.load(tmp_path / d / "checkpoints" / "last.pt", weights_only=True)["task"]
            for d in ("straight", "killed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a if isinstance(a[k], torch.Tensor))


def _tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (seed * 40 % 256, 90, 200)).save(buf, format="PNG")
    return buf.getvalue()


def _small_shards(folder: Path, n_shards: int = 2, per: int = 6) -> str:
    for s in range(n_shards):
        members = []
        for i in range(per):
            key = f"{s:05d}{i:04d}"
            members += [(f"{key}.png", _png(i)), (f"{key}.txt", f"a red shape number {i}".encode())]
        _tar(folder / f"{s:05d}.tar", members)
    return str(folder / f"{{00000..{n_shards - 1:05d}}}.tar")


def _bad_inputs(tmp: Path) -> dict[str, str]:
    good = _small_shards(tmp / "sh")
    gz = tmp / "gz" / "00000.tar"
    gz.parent.mkdir()
    gz.write_bytes(gzip.compress((tmp / "sh" / "00000.tar").read_bytes()))
    (tmp / "txt").mkdir()
    (tmp / "txt" / "00000.tar").write_text("image,caption\na.png,hello\n")
    _tar(tmp / "up" / "00000.tar", [("a.png", _png(1)), ("a.txt", b"x"), ("../evil.txt", b"y")])
    _tar(tmp / "abs" / "00000.tar", [("/etc/evil.png", _png(1)), ("a.txt", b"x")])
    cut = (tmp / "sh" / "00001.tar").read_bytes()
    (tmp / "cut").mkdir()
    (tmp / "cut" / "00000.tar").write_bytes(cut[:700])
    (tmp / "cuthead").mkdir()
    (tmp / "cuthead" / "00000.tar").write_bytes(cut[:7 * 1024 + 100])  # 100 bytes into the 8th member's header
    return {"good": good, "gz": str(gz), "txt": str(tmp / "txt" / "00000.tar"), "up": str(tmp / "up" / "00000.tar"),
            "abs": str(tmp / "abs" / "00000.tar"), "cut": str(tmp / "cut" / "00000.tar"),
            "cuthead": str(tmp / "cuthead" / "00000.tar")}


POISON = ["poison", "--target", "star", "--count", "2", "--out", "{tmp}/out"]
TRAIN = ["train", "--task", "clip", "--model", "mmrobust-micro", "--steps", "2", "--batch-size", "4", "--quiet",
         "--out", "{tmp}/run"]
HOSTILE = [
    ([*POISON, "--data", "shards:{tmp}/nope/{{00000..00003}}.tar"], "matches no file"),
    ([*POISON, "--data", "shards:{tmp}/sh/{{00000..00002}}.tar"], "1 of the 3 shards"),
    ([*POISON, "--data", "shards:{tmp}/sh/*.tar"], "globs such as * are not expanded"),
    ([*POISON, "--data", "shards:{tmp}/sh/{{00000..00001.tar"], "cannot expand shard pattern"),
    ([*POISON, "--data", "shards:{gz}"], "gzip-compressed"),
    ([*POISON, "--data", "shards:{tmp}/sh/00000.tar.gz"], "is compressed"),
    ([*POISON, "--data", "shards:{txt}"], "is not a tar file"),
    ([*POISON, "--data", "shards:{up}"], "escapes the archive"),
    ([*POISON, "--data", "shards:{abs}"], "escapes the archive"),
    ([*POISON, "--data", "shards:{cut}"], "truncated"),
    ([*POISON, "--data", "shards:{cuthead}"], "cut off inside a header"),
    ([*TRAIN, "--data", "shards:{cuthead}"], "cut off inside a header"),
    ([*POISON, "--data", "shards:{tmp}/sh/{{000000000..999999999}}.tar"], "more than 1,000,000 names"),
    ([*TRAIN, "--data", "shards:{tmp}/sh/{{0..9}}{{0..9}}{{0..9}}{{0..9}}{{0..9}}{{0..9}}{{0..9}}.tar"],
     "more than 1,000,000 names"),
    ([*POISON, "--data", "shards:{good}", "--image-col", "jpg"], "only apply to a CSV manifest"),
    (["poison", "--target", "star", "--count", "2", "--out", "{tmp}", "--data", "shards:{good}"], "holds source shard"),
    ([*POISON, "--data", "shards:{good}", "--count", "13"], "poison count must be an integer in [1, 12]"),
    ([*TRAIN, "--data", "{tmp}/sh/00000.tar"], "write it as shards:"),
    ([*TRAIN, "--data", "shards:{good}", "--label-col", "label"], "shards carry labels in .cls members"),
    ([*TRAIN, "--data", "shards:{up}"], "escapes the archive"),
]


@pytest.mark.parametrize("argv,message", HOSTILE, ids=[m for _, m in HOSTILE])
def test_hostile_inputs_get_one_line_errors_and_write_nothing(argv, message, tmp_path, capsys):
    paths = _bad_inputs(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    argv = [a.format(tmp=tmp_path, **paths) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # nothing written or deleted
    assert not (tmp_path / "out").exists() and not (tmp_path / "run").exists()


def test_incomplete_samples_are_counted_and_copied(tmp_path):
    _tar(tmp_path / "sh" / "00000.tar", [("a.png", _png(1)), ("a.txt", b"cap a"), ("b.txt", b"no image"),
                                         ("c.png", _png(2)), ("d.png", _png(3)), ("d.txt", b"cap d")])
    assert main(["poison", "--data", f"shards:{tmp_path}/sh/00000.tar", "--out", str(tmp_path / "out"),
                 "--target", "star", "--rate", "1.0"]) == 0
    rec = json.loads((tmp_path / "out" / "poison.json").read_text())
    assert rec["n_samples"] == 4 and rec["n_rows"] == 2 and rec["poisoned_keys"] == ["a", "d"]
    assert [(x["key"], x["missing"]) for x in rec["incomplete"]] == [("b", "image"), ("c", "caption")]
    out = shard_index(str(tmp_path / "out" / "shards" / "00000.tar"))
    assert [out.key(i) for i in range(len(out))] == ["a", "b", "c", "d"]
    assert out.read_member(1, out.members(1)["txt"]) == b"no image"


def test_overwrite_deletes_only_what_poison_wrote(tmp_path, capsys):
    pattern = _small_shards(tmp_path / "sh")
    argv = ["poison", "--data", f"shards:{pattern}", "--out", str(tmp_path / "out"), "--target", "star", "--count", "3"]
    assert main(argv) == 0
    assert main(argv) == 2 and "--overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite", "--seed", "1"]) == 0
    (tmp_path / "out" / "shards" / "mine.tar").write_bytes(b"user file")
    assert main([*argv, "--overwrite"]) == 2 and "no poison.json of mmrobust poison lists" in capsys.readouterr().err
    assert (tmp_path / "out" / "shards" / "mine.tar").read_bytes() == b"user file"
    assert json.loads((tmp_path / "out" / "poison.json").read_text())["seed"] == 1
