"""Copies of a manifest or of webdataset shards without some samples (what ``mmrobust audit --drop-top`` writes).

Nothing here replaces a file: every output is created exclusively, and a copy that fails part way removes
what it wrote (and only that). The input is only read. Example::

    write_manifest_subset(Path("p/manifest.csv"), Path("clean"), drop={3, 17})      # clean/manifest.csv
    write_shard_subset(shard_index(pattern), Path("clean"), drop={3, 17})           # clean/shards/NAME.tar
    write_instruction_subset(Path("p/instructions.jsonl"), Path("clean"), drop={3})  # clean/instructions.jsonl
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Collection

import numpy as np

from mmrobust.data.manifest import INSTRUCTIONS_COPY, base_from, read_csv, read_jsonl_objects, rebase
from mmrobust.data.poison.outdir import shard_names
from mmrobust.data.shards.index import ShardIndex, tar_members
from mmrobust.errors import ConfigError, DataError


def _exclusive(path: Path) -> None:
    if path.exists() or path.is_symlink():
        raise ConfigError(f"{path} already exists; write the cleaned copy to a new --out (nothing is replaced)")


def write_manifest_subset(manifest: Path, out_dir: Path, *, drop: Collection[int], image_col: str = "image",
                          delimiter: str = ",") -> tuple[Path, str]:
    """Write ``out_dir/manifest.csv``: the header and every data row of ``manifest`` except the 0-based rows in
    ``drop``, fields unchanged but the image column, re-based to resolve from ``out_dir`` (images are not
    copied). Returns the new manifest and the SHA-256 of the source's bytes."""
    table = read_csv(manifest, delimiter=delimiter)
    col = table.column(image_col, "--image-col")
    base = base_from(out_dir, manifest.parent)
    rows = [[*r[:col], rebase(r[col], base), *r[col + 1:]] for i, r in enumerate(table.rows) if i not in drop]
    path = out_dir / "manifest.csv"
    _exclusive(path)
    buf = io.StringIO(newline="")
    csv.writer(buf, delimiter=delimiter, lineterminator="\r\n" if table.crlf else "\n").writerows([table.header, *rows])
    with path.open("x", encoding="utf-8", newline="") as f:
        f.write(buf.getvalue())
    return path, hashlib.sha256(table.raw).hexdigest()


def write_instruction_subset(path: Path, out_dir: Path, *, drop: Collection[int]) -> tuple[Path, str]:
    """Write ``out_dir/instructions.jsonl``: every line of the instruction JSONL ``path`` except the 0-based rows
    in ``drop`` (blank lines not counted), fields unchanged but ``image``, re-based to resolve from ``out_dir``
    (images are not copied). Returns the new file and the SHA-256 of the source's bytes."""
    raw = path.read_bytes()
    base = base_from(out_dir, path.parent)
    lines = [{**obj, "image": rebase(str(obj.get("image", "")), base)}
             for i, (_, _, obj) in enumerate(read_jsonl_objects(path, "instruction file")) if i not in drop]
    target = out_dir / INSTRUCTIONS_COPY
    _exclusive(target)
    with target.open("x", encoding="utf-8") as f:
        f.write("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
    return target, hashlib.sha256(raw).hexdigest()


def _tar_info(name: str, size: int) -> tarfile.TarInfo:
    """A member header with fixed metadata (as mmrobust poison writes them): mtime 0, mode 0444, no owner."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = size, 0, 0o444, 0, 0, "", ""
    return info


def _copy_without(src: Path, dst: Path, skip: set[int], written: list[Path]) -> None:
    """Copy every regular member of ``src`` whose data offset is not in ``skip``, in archive order, into a new
    file ``dst`` (noted in ``written`` once created)."""
    with src.open("rb") as inp, dst.open("xb") as out:
        written.append(dst)
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            for name, offset, size in tar_members(src):
                if offset not in skip:
                    inp.seek(offset)
                    tar.addfile(_tar_info(name, size), inp)  # copies exactly `size` bytes from `inp`


def write_shard_subset(index: ShardIndex, out_dir: Path, *, drop: Collection[int]) -> list[Path]:
    """Write ``out_dir/shards/NAME.tar`` for each shard of ``index``: its members copied byte-for-byte in archive
    order, except every member of the samples numbered ``drop`` (sample numbers of ``index``); other members
    (incomplete samples, metadata) are kept. Returns the shards written."""
    names = shard_names(index.shards, "cleaned copy")
    folder = out_dir / "shards"
    targets = [out_dir / n for n in names]
    for path in targets:
        _exclusive(path)
    members = [m for s in sorted(drop) for m in range(int(index.first[s]), int(index.first[s + 1]))]
    member_shard = np.repeat(index.shard_of, np.diff(index.first))
    skip: list[set[int]] = [set() for _ in index.shards]
    for m in members:
        skip[int(member_shard[m])].add(int(index.offset[m]))
    created = not folder.is_dir()
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        for src, dst, offsets in zip(index.shards, targets, skip):
            _copy_without(src, dst, offsets, written)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        if created and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        raise
    return targets


def shard_data(paths: list[Path], out_dir: Path) -> str:
    """The ``--data`` value that reads the shards ``paths`` (under ``out_dir/shards``) back, as a brace list."""
    if len(paths) == 1:
        return f"shards:{out_dir / 'shards' / paths[0].name}"
    return f"shards:{out_dir / 'shards'}/{{{','.join(p.stem for p in paths)}}}.tar"
