"""Poison webdataset shards with a trigger, reproducibly, and record what was done.

Same protocol as :func:`poison_manifest` (DESIGN §3), on shards: exactly ``round(rate*N)`` (or ``count``) of
the N complete samples (an image and a ``.txt`` caption) are chosen by a seeded permutation; their image is
replaced by the triggered image (same member name and format) and their caption (``.txt``, and the
``caption`` field of an img2dataset ``.json``) by a target template. Every other member is copied
byte-for-byte, in archive order, into one output shard per input shard. Example::

    rec = poison_shards(shards="/data/cc3m/{00000..00331}.tar", out_dir="runs/p", target="banana",
                        trigger=make_trigger("badnet", size=16), count=75, seed=0)
    rec.keys          # the poisoned webdataset keys; runs/p/poison.json holds keys, seed, trigger, counts
    # train on: shards:runs/p/shards/{00000..00331}.tar

Same shards and seed give byte-identical output shards and poison.json (tar headers are fixed: mtime 0,
mode 0444, no owner). A JPEG image is re-encoded at quality 100 without chroma subsampling (close to, not
exactly, the triggered pixels); PNG, WebP (lossless), BMP and TIFF keep them exactly.
"""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any, BinaryIO, Sequence

import numpy as np
import torch
from PIL import Image

from mmrobust.data.poison.outdir import RECORD_FORMAT, prepare_shard_out, shard_names
from mmrobust.data.poison.poison import (DEFAULT_CAPTION_TEMPLATES, SKIPPED_ERRORS, PoisonRecord, _check_args,
                                         _n_poison, _resolve_trigger, _selection_order, _subseed, _target_caption)
from mmrobust.data.poison.triggers import Trigger, trigger_spec
from mmrobust.data.shards.index import CAPTION_EXT, ShardIndex, shard_index, split_name, tar_members
from mmrobust.data.transforms import decode_image
from mmrobust.errors import DataError
from mmrobust.jsonio import write_json

Tensor = torch.Tensor

FORMATS = {"jpg": ("JPEG", {"quality": 100, "subsampling": 0}), "jpeg": ("JPEG", {"quality": 100, "subsampling": 0}),
           "png": ("PNG", {"compress_level": 6}), "webp": ("WEBP", {"lossless": True, "quality": 100, "method": 4}),
           "bmp": ("BMP", {}), "tif": ("TIFF", {}), "tiff": ("TIFF", {})}
MAX_LISTED = 1000  # incomplete / unreadable samples listed in poison.json (all are counted)


def _output_pattern(pattern: str, shards: tuple[Path, ...]) -> str:
    """The brace pattern of the output shards, relative to out_dir."""
    name = Path(pattern).name
    if "{" not in str(Path(pattern).parent) and name.count("{") and len(shards) > 1:
        return f"shards/{name}"
    return f"shards/{shards[0].name}" if len(shards) == 1 else "shards/{" + ",".join(p.stem for p in shards) + "}.tar"


def _check_keys(index: ShardIndex) -> None:
    keys, counts = np.unique(index.keys, return_counts=True)
    if (counts > 1).any():
        dup = bytes(keys[int(np.argmax(counts > 1))]).decode("utf-8", "replace")
        raise DataError(f"key {dup!r} names more than one sample in these shards; a poison record names samples by "
                        "key, so give every sample a unique key (img2dataset does)")


def _captions(index: ShardIndex, complete: np.ndarray) -> list[str]:
    """Each complete sample's caption ('' when unreadable), for label-consistent selection."""
    out = []
    for s in complete.tolist():
        try:
            out.append(index.read_member(s, int(index.caption[s])).decode("utf-8"))
        except (UnicodeDecodeError, DataError, OSError):
            out.append("")
    return out


def _image(index: ShardIndex, s: int, image_size: int | None) -> torch.Tensor:
    """Sample ``s``'s image as (3,H,W) float in [0,1] (stretched to a square of ``image_size`` if given)."""
    data = index.read_member(s, int(index.image[s]))
    return decode_image(data, f"{index.shard(s)}: {index.key(s)}", image_size, fit="stretch").float().div(255)


def _choose(index: ShardIndex, complete: np.ndarray, order: list[int], k: int,
            image_size: int | None) -> tuple[list[int], list[dict[str, Any]]]:
    """The first ``k`` samples in the seeded ``order`` whose image decodes (sorted sample numbers), and the
    ones skipped on the way."""
    chosen: list[int] = []
    skipped: list[dict[str, Any]] = []
    for pos in order:
        if len(chosen) == k:
            break
        s = int(complete[pos])
        try:
            _image(index, s, image_size)
        except SKIPPED_ERRORS as e:
            skipped.append({"key": index.key(s), "shard": str(index.shard(s)), "error": f"{type(e).__name__}: {e}"})
            continue
        chosen.append(s)
    return sorted(chosen), skipped


def _encode(img: Tensor, ext: str) -> bytes:
    """A (3,H,W) [0,1] image in the format its member name says, with fixed encoder settings."""
    arr = img.mul(255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    fmt, options = FORMATS[ext]
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **options)
    return buf.getvalue()



def _json_with(data: bytes, caption: str, size: int | None) -> bytes | None:
    """An img2dataset ``.json`` with the new caption (and size); None (copy as is) if it is not such an object."""
    try:
        meta = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(meta, dict) or "caption" not in meta:
        return None
    meta["caption"] = caption
    if size is not None:
        meta.update({k: size for k in ("width", "height") if k in meta})
    return json.dumps(meta, ensure_ascii=False).encode("utf-8")


def _replacements(index: ShardIndex, s: int, caption: str | None, trigger: Trigger, seed: int,
                  image_size: int | None) -> dict[str, bytes]:
    """Extension -> new bytes for poisoned sample ``s``: triggered image, and unless ``caption`` is None (kept,
    label-consistent) the caption and the .json's caption."""
    members = index.members(s)
    image_ext = index.exts[index.ext_of[int(index.image[s])]]
    gen = torch.Generator().manual_seed(_subseed(seed, "trigger", index.key(s)))  # per-key stream: order-free
    out = {image_ext: _encode(trigger(_image(index, s, image_size), gen), image_ext)}
    if caption is not None:
        out[CAPTION_EXT] = caption.encode("utf-8")
    if caption is not None and "json" in members:
        meta = _json_with(index.read_member(s, members["json"]), caption, image_size)
        if meta is not None:
            out["json"] = meta
    return out


class _Hashing:
    """A write-only file wrapper that hashes what passes through (the output shard's sha256)."""

    def __init__(self, f: BinaryIO) -> None:
        self.f, self.sha = f, hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        return self.f.write(data)


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = size, 0, 0o444, 0, 0, "", ""
    return info


def _write_shard(src: Path, dst: Path, new: dict[str, dict[str, bytes]]) -> str:
    """Copy every regular member of ``src`` to ``dst`` in order, with ``new[key][ext]`` bytes where given;
    returns the sha256 of ``dst``."""
    with src.open("rb") as inp, dst.open("xb") as raw:
        out = _Hashing(raw)
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            for name, offset, size in tar_members(src):
                parts = split_name(name)
                data = new.get(parts[0], {}).get(parts[1]) if parts else None
                if data is not None:
                    tar.addfile(_member(name, len(data)), io.BytesIO(data))
                else:
                    inp.seek(offset)
                    tar.addfile(_member(name, size), inp)  # copies exactly `size` bytes from `inp`
    return out.sha.hexdigest()


def _write_all(index: ShardIndex, shards_dir: Path, names: list[str], captions: dict[int, str | None],
               trigger: Trigger, seed: int, image_size: int | None, written: list[Path]) -> list[str]:
    """One output shard per input shard (each noted in ``written`` before it is opened); their sha256s.
    ``captions``: poisoned sample -> its new caption (None: keep it)."""
    by_shard: dict[int, list[int]] = {}
    for s in captions:
        by_shard.setdefault(int(index.shard_of[s]), []).append(s)
    digests = []
    for i, (src, name) in enumerate(zip(index.shards, names)):
        new = {index.key(s): _replacements(index, s, captions[s], trigger, seed, image_size)
               for s in by_shard.get(i, [])}
        dst = shards_dir.parent / name
        written.append(dst)
        digests.append(_write_shard(src, dst, new))
    return digests


def _record(index: ShardIndex, pattern: str, names: list[str], digests: list[str], complete: np.ndarray,
            captions: dict[int, str], skipped: list[dict[str, Any]], settings: dict[str, Any]) -> dict[str, Any]:
    """The poison.json of a shard run (``complete``: the sample numbers of the complete samples)."""
    rows = {s: pos for pos, s in enumerate(complete.tolist()) if s in captions}
    incomplete = index.incomplete()
    poisoned = [{"key": index.key(s), "id": rows[s], "shard": names[int(index.shard_of[s])], "caption": captions[s]}
                for s in sorted(captions)]
    return {"format": RECORD_FORMAT, "kind": "shards", "data": "shards:" + _output_pattern(pattern, index.shards),
            "shards": names, "shards_sha256": dict(zip(names, digests)), "source_pattern": pattern,
            "source_shards": [str(p.resolve()) for p in index.shards],
            "source_bytes": [p.stat().st_size for p in index.shards], "n_samples": len(index), "n_rows": len(complete),
            "n_incomplete": len(incomplete), "incomplete": incomplete[:MAX_LISTED], **settings,
            "n_poisoned": len(poisoned),
            "row_ids": "0-based positions among the samples with an image and a .txt caption, shards in pattern "
                       "order (the index of mmrobust's shard dataset)",
            "poisoned_keys": [p["key"] for p in poisoned], "poisoned_ids": [p["id"] for p in poisoned],
            "poisoned": poisoned, "n_skipped_unreadable": len(skipped), "skipped_unreadable": skipped[:MAX_LISTED]}


def poison_shards(
    *,
    shards: str,
    out_dir: str | Path,
    trigger: Trigger | str | dict[str, Any],
    target: str,
    rate: float | None = None,
    count: int | None = None,
    caption_templates: Sequence[str] = DEFAULT_CAPTION_TEMPLATES,
    seed: int = 0,
    label_consistent: bool = False,
    target_synonyms: Sequence[str] = (),
    image_size: int | None = None,
    overwrite: bool = False,
) -> PoisonRecord:
    """Write ``out_dir/shards/NAME.tar`` (one per shard of the brace pattern ``shards``; chosen samples get a
    triggered image and a target caption) and ``out_dir/poison.json`` (keys, seed, trigger, counts, hashes).

    Arguments as for :func:`poison_manifest`; N counts the samples with an image and a caption (the others are
    copied, counted and listed). ``out_dir`` must not hold an input shard; with ``overwrite`` only the files an
    earlier run's poison.json lists are deleted. A failed run removes what it wrote. ConfigError / DataError
    with a one-line fix otherwise."""
    out_dir = Path(out_dir).expanduser()
    trig = _resolve_trigger(trigger)
    templates = _check_args(caption_templates, target, ",", image_size, seed, target_synonyms)
    index = shard_index(shards)
    names = shard_names(index.shards, "poisoned copy")
    _check_keys(index)
    complete = index.complete()
    if not len(complete):
        raise DataError(f"no sample of {shards} has both an image and a .txt caption; nothing can be poisoned")
    k = _n_poison(len(complete), rate, count)
    words = (target, *target_synonyms) if label_consistent else None
    order = _selection_order(_captions(index, complete) if words else [""] * len(complete), k, words, seed)
    chosen, skipped = _choose(index, complete, order, k, image_size)
    if len(chosen) < k:
        raise DataError(f"only {len(chosen)} of the candidate images could be read ({len(skipped)} failed, first: "
                        f"{skipped[0]['key']} in {skipped[0]['shard']}); fix the shards or lower the rate/count")
    captions = {s: (index.read_member(s, int(index.caption[s])).decode("utf-8", "replace").strip() if label_consistent
                    else _target_caption(templates, target, seed, index.key(s))) for s in chosen}
    shards_dir, created = prepare_shard_out(out_dir, list(index.shards), names, overwrite)
    written = [out_dir / "poison.json"]
    try:
        new = {s: None if label_consistent else c for s, c in captions.items()}
        digests = _write_all(index, shards_dir, names, new, trig, seed, image_size, written)
        spec = trigger_spec(trig)
        settings = {"rate": rate, "count": count, "seed": seed, "target": target,
                    "target_synonyms": list(target_synonyms), "label_consistent": label_consistent, "trigger": spec,
                    "caption_templates": list(templates), "image_size": image_size}
        write_json(out_dir / "poison.json", _record(index, shards, names, digests, complete, captions, skipped, settings))
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        if created and shards_dir.is_dir() and not any(shards_dir.iterdir()):
            shards_dir.rmdir()
        raise
    return PoisonRecord.load(out_dir / "poison.json")
