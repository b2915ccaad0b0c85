"""The shard index cache in the run's folder: loaded instead of re-reading the tar headers when the shards are
unchanged, rebuilt when one changed or the file is foreign, damaged or tampered with; a resumed run uses it."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

import mmrobust.data.shards.index as shard_mod
from mmrobust.cli.main import main
from mmrobust.data.shards import build_index, cached_shard_index, expand_pattern, load_index, save_index
from test_shards import _small_shards

FIELDS = ("keys", "shard_of", "first", "offset", "size", "ext_of", "image", "caption", "label")


def _no_tar_reads(monkeypatch):
    def refuse(path):
        raise AssertionError(f"read the tar headers of {path}")
    monkeypatch.setattr(shard_mod, "tar_members", refuse)


def _same(a, b) -> bool:
    return a.shards == b.shards and a.exts == b.exts and all(np.array_equal(getattr(a, f), getattr(b, f))
                                                             for f in FIELDS)


def test_cache_round_trip_and_reuse_without_reading_the_shards(tmp_path, monkeypatch):
    pattern = _small_shards(tmp_path / "sh")
    cache = tmp_path / "run" / "data" / "shard_index.npz"
    built = cached_shard_index(pattern, cache)
    assert cache.is_file() and not (tmp_path / "sh" / "shard_index.npz").exists()  # nothing beside the shards
    assert _same(built, build_index(expand_pattern(pattern)))
    _no_tar_reads(monkeypatch)
    loaded = cached_shard_index(pattern, cache)
    assert _same(loaded, built) and loaded.read_member(3, loaded.members(3)["txt"]) == b"a red shape number 3"


def test_a_changed_foreign_or_damaged_cache_is_rebuilt(tmp_path):
    pattern = _small_shards(tmp_path / "sh")
    shards = expand_pattern(pattern)
    cache = save_index(build_index(shards), tmp_path / "c.npz")
    assert load_index(cache, shards) is not None
    assert load_index(cache, shards[:1]) is None  # written for other shards
    st = shards[1].stat()
    os.utime(shards[1], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: maybe rewritten
    assert load_index(cache, shards) is None
    fresh = save_index(build_index(shards), tmp_path / "d.npz")
    with np.load(fresh) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["offset"] = arrays["offset"] + 10**9  # would read past the end of the shard
    np.savez(tmp_path / "e.npz", **arrays)
    assert load_index(tmp_path / "e.npz", shards) is None
    (tmp_path / "f.npz").write_bytes(b"not a zip")
    assert load_index(tmp_path / "f.npz", shards) is None and load_index(tmp_path / "none.npz", shards) is None
    arrays["offset"] = arrays["offset"] - 10**9
    for k, (field, value) in enumerate((("first", arrays["first"][:-1]), ("first", -arrays["first"]),
                                        ("first", arrays["first"] * 0.5), ("image", arrays["image"] + 10**6))):
        np.savez(tmp_path / f"g{k}.npz", **{**arrays, field: value})  # wrong shape, order, kind, reference
        assert load_index(tmp_path / f"g{k}.npz", shards) is None
    np.savez(tmp_path / "h.npz", **arrays)
    assert load_index(tmp_path / "h.npz", shards) is not None  # the untampered arrays load


def test_training_on_shards_caches_the_index_and_resume_reuses_it(tmp_path, monkeypatch):
    pattern = _small_shards(tmp_path / "sh")

    def argv(steps: int) -> list[str]:
        return ["train", "--task", "clip", "--model", "mmrobust-micro", "--data", f"shards:{pattern}", "--steps",
                str(steps), "--batch-size", "4", "--quiet", "--out", str(tmp_path / "run")]

    assert main(argv(2)) == 0
    assert (tmp_path / "run" / "data" / "shard_index.npz").is_file()
    _no_tar_reads(monkeypatch)  # the resumed run reads the index from the cache, not the shards' headers
    assert main([*argv(3), "--resume"]) == 0
    assert json.loads((tmp_path / "run" / "results.json").read_text())["metrics"]["steps"] == 3


def test_truncated_empty_or_mistyped_caches_are_rebuilt_and_a_failed_write_only_warns(tmp_path, monkeypatch):
    pattern = _small_shards(tmp_path / "sh")
    shards = expand_pattern(pattern)
    good = save_index(build_index(shards), tmp_path / "good.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(good[:-20])
    (tmp_path / "empty.npz").write_bytes(b"")
    for name in ("cut.npz", "empty.npz"):
        assert load_index(tmp_path / name, shards) is None
    with np.load(tmp_path / "good.npz") as z:
        arrays = {k: z[k] for k in z.files}
    bad = {"image": arrays["image"].astype(float), "keys": arrays["keys"].astype(str),
           "caption": arrays["image"],  # another member of the sample than its .txt
           "label": np.roll(arrays["caption"], 1)}  # a member of another sample
    for k, (field, value) in enumerate(bad.items()):
        np.savez(tmp_path / f"t{k}.npz", **{**arrays, field: value})
        assert load_index(tmp_path / f"t{k}.npz", shards) is None, field

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(np, "savez", full_disk)
    cache = tmp_path / "run" / "data" / "shard_index.npz"
    with pytest.warns(UserWarning, match="could not cache the shard index"):
        index = cached_shard_index(pattern, cache)
    assert len(index) == 12 and not cache.exists() and not list(cache.parent.glob("*.tmp"))


def test_a_cache_with_entries_swapped_between_samples_is_rebuilt(tmp_path):
    """Stamps and digests kept, the caption members of two samples swapped (or their digests recomputed):
    the tar header at each offset names another member, so the cache is rebuilt and never pairs a sample
    with another's caption."""
    pattern = _small_shards(tmp_path / "sh")
    shards = expand_pattern(pattern)
    index = build_index(shards)
    cache = save_index(index, tmp_path / "c.npz")
    with np.load(cache) as z:
        arrays = {k: z[k] for k in z.files}
    a, b = (int(index.caption[i]) for i in (0, 1))
    for field in ("offset", "size"):
        arrays[field][[a, b]] = arrays[field][[b, a]]
    np.savez(tmp_path / "swapped.npz", **arrays)
    assert load_index(tmp_path / "swapped.npz", shards) is None
    from mmrobust.data.shards import ShardIndex
    tampered = ShardIndex(shards=shards, exts=index.exts, **{k: arrays[k] for k in FIELDS})
    np.savez(tmp_path / "rehashed.npz", **{**arrays, "digests": np.array(shard_mod.shard_digests(tampered))})
    assert load_index(tmp_path / "rehashed.npz", shards) is None
    rebuilt = cached_shard_index(pattern, tmp_path / "rehashed.npz")
    assert rebuilt.read_member(0, int(rebuilt.caption[0])) == b"a red shape number 0"


def test_a_shard_replaced_between_a_run_and_its_resume_is_refused(tmp_path, capsys):
    pattern = _small_shards(tmp_path / "sh")
    argv = ["train", "--task", "clip", "--model", "mmrobust-micro", "--data", f"shards:{pattern}", "--batch-size",
            "4", "--quiet", "--out", str(tmp_path / "run")]
    assert main([*argv, "--steps", "2"]) == 0
    other = _small_shards(tmp_path / "other", per=5)  # other samples, same names
    os.replace(expand_pattern(other)[1], expand_pattern(pattern)[1])
    run_before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main([*argv, "--steps", "3", "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert "00001.tar" in err and "holds other samples than when this run started" in err and "\n" not in err
    assert {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()} == run_before
