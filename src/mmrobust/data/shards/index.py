"""A random-access index of webdataset shards: one pass over the tar headers, no extraction.

Shards are plain (uncompressed) tar files as img2dataset writes them: members grouped by key
(``000000123.jpg``, ``000000123.txt``, optional ``.json``; ImageNet-style shards hold a ``.cls`` label
instead of the caption). Grouping follows webdataset's reader
(``wds.WebDataset``): regular files only, ``__meta__`` names skipped, key = the member name up to the
first dot of its last path component, extension lower-cased, consecutive members with the same key form
one sample. Each member's data offset and size are recorded, so a sample is read by seek + read;
that keeps the training loop's exact (epoch, index) batches, their split across ranks and workers,
and mid-epoch resume, exactly as for a CSV manifest. Example::

    index = build_index(expand_pattern("/data/cc3m/{00000..00331}.tar"))
    len(index), index.key(0), index.read(0, "txt")

The shards are only read, never written to: the index cache (:func:`cached_shard_index`) lives in the
run's folder, never beside them.
"""
from __future__ import annotations

import os
import re
import tarfile
import warnings
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from mmrobust.errors import ConfigError, DataError
from mmrobust.safety import ensure_regular_file

PREFIX = "shards:"
MAX_SHARDS = 1_000_000  # a typo such as {0..99999999} must not hang the run
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff")  # the first one present is the image
CAPTION_EXT = "txt"
LABEL_EXT = "cls"  # webdataset's class label: the class index as ASCII digits (ImageNet-1k shards)
COMPRESSED = ((b"\x1f\x8b", "gzip", "gunzip"), (b"BZh", "bzip2", "bunzip2"), (b"\xfd7zXZ\x00", "xz", "unxz"),
              (b"\x28\xb5\x2f\xfd", "zstd", "zstd -d"))


def parse_shard_spec(text: str | os.PathLike) -> str | None:
    """The brace pattern of ``shards:PATTERN``; None for anything else (a CSV manifest). A bare ``.tar``
    path is refused with the spelling to use, so a shard is never read as a CSV."""
    text = str(text)
    if text.startswith(PREFIX):
        pattern = text[len(PREFIX):]
        if not pattern:
            raise ConfigError("--data 'shards:' names no shards; write shards:/data/cc3m/{00000..00331}.tar")
        return pattern
    if text.endswith((".tar", ".tar.gz", ".tgz")) or ".tar}" in text or "..}" in text.rpartition("/")[2]:
        raise ConfigError(f"--data {text!r} looks like webdataset shards; write it as shards:{text}")
    return None


_RANGE = re.compile(r"(-?\d+)\.\.(-?\d+)(?:\.\.(-?\d+))?|([A-Za-z])\.\.([A-Za-z])(?:\.\.(-?\d+))?")


def _groups(text: str) -> list[str]:
    """The bodies of the top-level ``{...}`` groups of ``text`` (backslash escapes skipped)."""
    bodies, depth, start, i = [], 0, 0, 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 1
        elif c == "{":
            depth, start = depth + 1, (i + 1 if depth == 0 else start)
        elif c == "}" and depth:
            depth -= 1
            if depth == 0:
                bodies.append(text[start:i])
        i += 1
    return bodies


def _split_top(body: str) -> list[str]:
    """``body`` split at its top-level commas."""
    parts, depth, last = [], 0, 0
    for i, c in enumerate(body):
        depth += (c == "{") - (c == "}")
        if c == "," and depth == 0 and (i == 0 or body[i - 1] != "\\"):
            parts.append(body[last:i])
            last = i + 1
    return [*parts, body[last:]]


def count_expansion(pattern: str) -> int:
    """How many names a brace pattern expands to, counted without expanding it (``{000000000..999999999}``
    is 10^9, known at once): the product over its groups of a range's length or the sum over alternatives."""
    total = 1
    for body in _groups(pattern):
        m = _RANGE.fullmatch(body)
        if m and m.group(1) is not None:
            n = abs(int(m.group(2)) - int(m.group(1))) // max(1, abs(int(m.group(3) or 1))) + 1
        elif m:
            n = abs(ord(m.group(5)) - ord(m.group(4))) // max(1, abs(int(m.group(6) or 1))) + 1
        else:
            alternatives = _split_top(body)
            n = sum(count_expansion(a) for a in alternatives) if len(alternatives) > 1 else count_expansion(body)
        total *= n
        if total > MAX_SHARDS:  # stop early: a product of huge ranges is never computed in full
            return total
    return total


def _braceexpand(pattern: str) -> list[str]:
    try:
        from braceexpand import braceexpand
    except ModuleNotFoundError:
        raise ConfigError("webdataset shards need the braceexpand package: pip install 'mmrobust[shards]'") from None
    if count_expansion(pattern) > MAX_SHARDS:  # braceexpand builds each range in full before yielding a name
        raise ConfigError(f"shard pattern {pattern!r} expands to more than {MAX_SHARDS:,} names; check "
                          "the brace ranges, e.g. {00000..00331}.tar")
    names: list[str] = []
    try:
        for name in braceexpand(pattern):
            names.append(name)
            if len(names) > MAX_SHARDS:
                raise ConfigError(f"shard pattern {pattern!r} expands to more than {MAX_SHARDS:,} names; check "
                                  "the brace ranges, e.g. {00000..00331}.tar")
    except (ValueError, TypeError) as e:  # unbalanced braces
        raise ConfigError(f"cannot expand shard pattern {pattern!r} ({e}); write e.g. {{00000..00331}}.tar") from None
    return names


def expand_pattern(pattern: str) -> tuple[Path, ...]:
    """The shard files a brace pattern names (``{00000..00099}.tar``, ``{a,b}.tar``), in pattern order; one-line
    errors for a pattern that matches nothing, missing shards, duplicates and names that are not plain tars."""
    names = _braceexpand(str(Path(pattern).expanduser()))
    paths = [Path(n) for n in names]
    compressed = [p for p in paths if p.name.endswith((".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar.zst"))]
    if compressed:
        raise DataError(f"shard {compressed[0]} is compressed; the index reads plain .tar files by offset: "
                        "decompress the shards (e.g. gunzip) and point the pattern at the .tar files")
    bad = [p for p in paths if p.suffix != ".tar"]
    if bad:
        raise DataError(f"shard {bad[0]} is not a .tar file; webdataset shards are tars such as {{00000..00099}}.tar")
    missing = [p for p in paths if not p.exists()]
    if len(missing) == len(paths):
        glob = " (globs such as * are not expanded: use a brace range)" if any(c in pattern for c in "*?[") else ""
        raise DataError(f"shard pattern {pattern!r} matches no file (first: {paths[0]}){glob}; check the folder "
                        "and the brace range")
    if missing:
        raise DataError(f"{len(missing)} of the {len(paths)} shards of {pattern!r} are missing (first: {missing[0]}); "
                        "fix the brace range or restore them")
    if len(set(paths)) != len(paths):
        raise DataError(f"shard pattern {pattern!r} names a shard twice; each shard may appear once")
    return tuple(ensure_regular_file(p, "shard") for p in paths)


def _check_plain_tar(path: Path) -> None:
    with path.open("rb") as f:
        head = f.read(6)
    for magic, kind, tool in COMPRESSED:
        if head.startswith(magic):
            raise DataError(f"shard {path} is {kind}-compressed; the index reads plain tars by offset: decompress "
                            f"it ({tool}) and keep the .tar name")


def _check_name(name: str, shard: Path) -> None:
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or ".." in parts or (len(name) > 1 and name[1] == ":"):
        raise DataError(f"shard {shard} has a member named {name!r} that escapes the archive (absolute path or ..); "
                        "rebuild the shard with relative member names")


def _check_end(path: Path, offset: int, total: int) -> None:
    """Where tarfile stopped reading headers must be the end-of-archive block (512 zero bytes): tarfile
    also stops, silently, at a header cut off by a short copy or a damaged one, which would read as a
    shorter shard."""
    with path.open("rb") as f:
        f.seek(offset)
        block = f.read(512)
    if len(block) == 512 and not block.strip(b"\0"):
        return
    what = ("ends without the end-of-archive block" if not block else
            "is cut off inside a header" if len(block) < 512 else "has a damaged header")
    raise DataError(f"shard {path} is truncated or damaged: it {what} at byte {offset:,} of {total:,}, so its later "
                    "samples are lost; copy it again or drop it from the pattern")


def tar_members(path: Path) -> Iterator[tuple[str, int, int]]:
    """``(name, data offset, size)`` of each regular file in a plain tar, in archive order, reading only
    the headers. Refuses compressed or non-tar files, escaping names, sparse and truncated members."""
    _check_plain_tar(path)
    total = path.stat().st_size
    try:
        tf = tarfile.open(path, mode="r:")
    except tarfile.TarError as e:
        raise DataError(f"shard {path} is not a tar file ({e}); webdataset shards are plain tars") from None
    with tf:
        while True:
            try:
                info = tf.next()
            except tarfile.TarError as e:
                raise DataError(f"shard {path} is damaged or truncated ({e}); copy it again or drop it") from None
            if info is None:
                _check_end(path, tf.offset, total)
                return
            tf.members.clear()  # headers only: no list of millions of TarInfo objects
            _check_name(info.name, path)
            if not info.isreg():
                continue
            if info.issparse():
                raise DataError(f"shard {path}: member {info.name!r} is a sparse file; rewrite the shard")
            if info.offset_data + info.size > total:
                raise DataError(f"shard {path} is truncated (member {info.name!r} runs past the end); "
                                "copy it again or drop it")
            yield info.name, info.offset_data, info.size


_KEY_EXT = re.compile(r"((?:.*/)?[^.]+)\.([^/]*)", re.DOTALL)


def split_name(name: str) -> tuple[str, str] | None:
    """``(key, extension)`` of a member name as webdataset groups it (``a/b.seg.png`` -> ``("a/b", "seg.png")``:
    the key runs to the first dot after the last folder), None for names it skips (``__meta__`` files, names
    with no such dot)."""
    first = name.split("/", 1)[0]
    if len(first) >= 4 and first.startswith("__") and first.endswith("__"):
        return None
    m = _KEY_EXT.fullmatch(name)
    return (m.group(1), m.group(2).lower()) if m else None


MAX_MEMBER_BYTES = 1 << 28  # 256 MiB: a larger "image" or caption is refused, not read into memory


class _Files:
    """Open shard files, one set per process (DataLoader workers reopen theirs after the fork)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.open: dict[int, BinaryIO] = {}

    def get(self, shards: tuple[Path, ...], s: int) -> BinaryIO:
        if self.pid != os.getpid():
            self.pid, self.open = os.getpid(), {}
        f = self.open.get(s)
        if f is None:
            f = self.open[s] = shards[s].open("rb")
        return f


@dataclass
class ShardIndex:
    """The samples of some shards, in shard order then archive order (compact numpy arrays, so millions of
    samples fit and DataLoader workers share them). Sample ``i`` has members ``first[i]:first[i+1]``."""

    shards: tuple[Path, ...]
    keys: np.ndarray  # (n,) UTF-8 bytes
    shard_of: np.ndarray  # (n,) int32
    first: np.ndarray  # (n+1,) int64
    offset: np.ndarray  # (m,) int64: where each member's data starts in its shard
    size: np.ndarray  # (m,) int64
    ext_of: np.ndarray  # (m,) int32 into exts
    exts: tuple[str, ...]
    image: np.ndarray  # (n,) int64 member of the image (first of IMAGE_EXTS present), -1 if none
    caption: np.ndarray  # (n,) int64 member of the .txt caption, -1 if none
    label: np.ndarray  # (n,) int64 member of the .cls label, -1 if none
    _files: _Files = field(default_factory=_Files, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.keys)

    def __getstate__(self) -> dict:  # DataLoader workers: no open files across processes
        return {**self.__dict__, "_files": _Files()}

    def key(self, i: int) -> str:
        return bytes(self.keys[i]).decode("utf-8", "surrogateescape")

    def shard(self, i: int) -> Path:
        return self.shards[int(self.shard_of[i])]

    def members(self, i: int) -> dict[str, int]:
        """Extension -> member number, for sample ``i``."""
        return {self.exts[self.ext_of[m]]: m for m in range(int(self.first[i]), int(self.first[i + 1]))}

    def read_member(self, i: int, member: int, *, limit: int = MAX_MEMBER_BYTES) -> bytes:
        """The bytes of ``member`` of sample ``i`` (seek + read); DataError past ``limit`` bytes."""
        size, what = int(self.size[member]), f"{self.shard(i)}: {self.key(i)}.{self.exts[self.ext_of[member]]}"
        if size > limit:
            raise DataError(f"{what} is {size:,} bytes, more than the {limit:,} allowed; drop the sample")
        f = self._files.get(self.shards, int(self.shard_of[i]))
        f.seek(int(self.offset[member]))
        data = f.read(size)
        if len(data) != size:
            raise DataError(f"{what}: shard ended early (changed since it was indexed?); rebuild the run")
        return data

    def _needed(self, need: tuple[str, ...]) -> dict[str, np.ndarray]:
        columns = {"image": self.image, "caption": self.caption, "label": self.label}
        return {k: columns[k] for k in need}

    def complete(self, need: tuple[str, ...] = ("image", "caption")) -> np.ndarray:
        """Numbers of the samples that hold every member in ``need`` (image, caption, label): the trainable ones."""
        have = np.ones(len(self), dtype=bool)
        for column in self._needed(need).values():
            have &= column >= 0
        return np.flatnonzero(have)

    def incomplete(self, need: tuple[str, ...] = ("image", "caption")) -> list[dict[str, str]]:
        """Samples that lack a member in ``need``: shard, key and the first member missing."""
        cols = self._needed(need)
        bad = np.flatnonzero(np.logical_or.reduce([c < 0 for c in cols.values()]))
        return [{"shard": str(self.shard(i)), "key": self.key(i),
                 "missing": next(k for k, c in cols.items() if c[i] < 0)} for i in bad.tolist()]


class _Builder:
    """Collects samples and members into growable arrays."""

    def __init__(self) -> None:
        self.keys: list[bytes] = []
        self.shard_of, self.first = array("i"), array("q")
        self.offset, self.size, self.ext_of = array("q"), array("q"), array("i")
        self.image, self.caption, self.label = array("q"), array("q"), array("q")
        self.exts: dict[str, int] = {}
        self.sample_exts: dict[str, int] = {}

    def start(self, key: str, shard: int) -> None:
        self.keys.append(key.encode("utf-8", "surrogateescape"))
        self.shard_of.append(shard)
        self.first.append(len(self.offset))
        self.image.append(-1)
        self.caption.append(-1)
        self.label.append(-1)
        self.sample_exts = {}

    def add(self, ext: str, offset: int, size: int, where: str) -> None:
        if ext in self.sample_exts:
            raise DataError(f"{where}: sample {self.keys[-1].decode(errors='replace')!r} has two {ext!r} members; "
                            "each key may hold one file per extension")
        m = len(self.offset)
        self.sample_exts[ext] = m
        self.offset.append(offset)
        self.size.append(size)
        self.ext_of.append(self.exts.setdefault(ext, len(self.exts)))
        if ext == CAPTION_EXT:
            self.caption[-1] = m
        if ext == LABEL_EXT:
            self.label[-1] = m
        have = [e for e in IMAGE_EXTS if e in self.sample_exts]
        if have and have[0] == ext:
            self.image[-1] = m

    def finish(self, shards: tuple[Path, ...]) -> ShardIndex:
        n = len(self.keys)
        keys = np.array(self.keys, dtype=bytes) if n else np.zeros(0, dtype="S1")
        first = np.frombuffer(self.first, dtype=np.int64).copy() if n else np.zeros(0, dtype=np.int64)
        return ShardIndex(shards=shards, keys=keys, shard_of=np.array(self.shard_of, dtype=np.int32),
                          first=np.append(first, len(self.offset)).astype(np.int64),
                          offset=np.array(self.offset, dtype=np.int64), size=np.array(self.size, dtype=np.int64),
                          ext_of=np.array(self.ext_of, dtype=np.int32), exts=tuple(self.exts),
                          image=np.array(self.image, dtype=np.int64), caption=np.array(self.caption, dtype=np.int64),
                          label=np.array(self.label, dtype=np.int64))


def build_index(shards: tuple[Path, ...] | list[Path]) -> ShardIndex:
    """Index ``shards`` (see :func:`expand_pattern`) by reading their tar headers once; members are grouped
    into samples as webdataset does, one sample per run of members sharing a key."""
    shards = tuple(shards)
    b = _Builder()
    for s, path in enumerate(shards):
        key = None
        for name, offset, size in tar_members(path):
            parts = split_name(name)
            if parts is None:
                continue
            if parts[0] != key:
                key = parts[0]
                b.start(key, s)
            b.add(parts[1], offset, size, str(path))
    index = b.finish(shards)
    if not len(index):
        raise DataError(f"the {len(shards)} shard(s) (first: {shards[0]}) hold no samples; webdataset shards hold "
                        "files named KEY.EXT such as 000000123.jpg and 000000123.txt")
    return index


def shard_index(pattern: str) -> ShardIndex:
    """:func:`build_index` of the shards a brace pattern names."""
    return build_index(expand_pattern(pattern))


# --- a cache of the index in the run's folder (never beside the shards), checked against the shards ---

CACHE_VERSION = 2  # 2: per-shard digests of the index, and every member checked against its tar header
_ARRAYS = ("keys", "shard_of", "first", "offset", "size", "ext_of", "image", "caption", "label")


def _stamps(shards: tuple[Path, ...]) -> np.ndarray:
    """(S, 4) int64 per shard: size, modification and change times (ns), inode. A rewritten shard changes
    them, even one copied back with its old mtime (``cp -p``, ``rsync -a``: the change time moves)."""
    rows = [(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino) for st in (p.stat() for p in shards)]
    return np.array(rows, dtype=np.int64).reshape(-1, 4)


def shard_digests(index: ShardIndex) -> list[str]:
    """Per shard, the SHA-256 of what the index holds of it (keys, extensions, member offsets and sizes): a shard
    rewritten with other samples gets another digest, one merely copied or touched keeps it."""
    import hashlib

    out = []
    member_shard = np.repeat(index.shard_of, np.diff(index.first))
    for s in range(len(index.shards)):
        h = hashlib.sha256()
        samples, members = index.shard_of == s, member_shard == s
        h.update(b"\0".join(bytes(k) for k in index.keys[samples]))
        h.update(np.diff(index.first)[samples].astype(np.int64).tobytes())
        for arr in (index.offset[members], index.size[members]):
            h.update(arr.astype(np.int64).tobytes())
        h.update("\0".join(index.exts[e] for e in index.ext_of[members]).encode())
        out.append(h.hexdigest())
    return out


def save_index(index: ShardIndex, path: str | Path) -> Path:
    """Write ``index`` to ``path`` (.npz, no pickles) with the shards' names, sizes, times and digests; atomic."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("wb") as f:
            np.savez(f, version=np.array(CACHE_VERSION), shards=np.array([str(p) for p in index.shards]),
                     stamps=_stamps(index.shards), exts=np.array(index.exts, dtype=str),
                     digests=np.array(shard_digests(index), dtype=str), **{k: getattr(index, k) for k in _ARRAYS})
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def recorded_digests(path: str | Path, shards: tuple[Path, ...]) -> list[str] | None:
    """The per-shard digests a cache at ``path`` recorded for exactly these shard names (None if there is none)."""
    try:
        with np.load(Path(path), allow_pickle=False) as z:
            if int(z["version"]) != CACHE_VERSION or list(z["shards"]) != [str(p) for p in shards]:
                return None
            return [str(d) for d in z["digests"]]
    except Exception:  # noqa: BLE001 - no readable record
        return None


def load_index(path: str | Path, shards: tuple[Path, ...]) -> ShardIndex | None:
    """The index cached at ``path`` if it was written for exactly these shards, unchanged since, its digests
    agree with its arrays and every member it lists is the one the tar header at its offset names; else None
    (a missing, stale, foreign, damaged or tampered file is rebuilt, never trusted)."""
    try:
        with np.load(Path(path), allow_pickle=False) as z:
            ok = (int(z["version"]) == CACHE_VERSION and list(z["shards"]) == [str(p) for p in shards]
                  and np.array_equal(z["stamps"], _stamps(shards)))
            if not ok:
                return None
            arrays = {k: z[k] for k in _ARRAYS}
            exts = tuple(str(e) for e in z["exts"])
            digests = [str(d) for d in z["digests"]]
    except Exception:  # noqa: BLE001 - any unreadable file (truncated zip, empty, foreign) is rebuilt
        return None
    index = ShardIndex(shards=shards, exts=exts, **arrays)
    try:
        return index if _consistent(index) and shard_digests(index) == digests and _headers_agree(index) else None
    except Exception:  # noqa: BLE001 - arrays of a kind the checks cannot even compare
        return None


def _header_names(block: bytes) -> tuple[bytes, int] | None:
    """(name, size) of a 512-byte tar header with a valid checksum, else None."""
    if len(block) != 512 or tarfile.calc_chksums(block)[0] != tarfile.nti(block[148:156]):
        return None
    name, prefix = block[:100].split(b"\0")[0], block[345:500].split(b"\0")[0]
    return (prefix + b"/" + name if block[257:262] == b"ustar" and prefix else name), tarfile.nti(block[124:136])


def _headers_agree(index: ShardIndex) -> bool:
    """Every member's data follows the tar header of that very member (its name and size): a cache whose
    entries were swapped between samples, stamps kept, is caught here. One 512-byte read per member, in
    archive order (far cheaper than parsing the tar again). A long or non-ASCII name, which its header keeps
    cut or replaced by '?' (the full one is in a pax / GNU record before it), is checked by size alone."""
    member_shard = np.repeat(index.shard_of, np.diff(index.first))
    member_key = np.repeat(np.arange(len(index.keys)), np.diff(index.first))
    for s, path in enumerate(index.shards):
        with path.open("rb") as f:
            fd = f.fileno()
            for m in np.flatnonzero(member_shard == s).tolist():
                head = _header_names(os.pread(fd, 512, int(index.offset[m]) - 512))
                ext = index.exts[index.ext_of[m]].encode("utf-8", "surrogateescape")
                want = bytes(index.keys[member_key[m]]) + b"." + ext
                if head is None or head[1] != int(index.size[m]):
                    return False
                if head[0].lower() != want.lower() and len(head[0]) < 99 and b"?" not in head[0]:
                    return False
    return True


_KINDS = {"keys": "S", **{k: "i" for k in _ARRAYS if k != "keys"}}


def _consistent(index: ShardIndex) -> bool:
    """1-D arrays of the right kinds and shapes, each sample's image / caption / label one of its own
    members, every member inside its shard (a tampered cache must not steer reads)."""
    if any(getattr(index, k).ndim != 1 or getattr(index, k).dtype.kind != kind for k, kind in _KINDS.items()):
        return False
    n, m = len(index.keys), len(index.offset)
    if not (len(index.shard_of) == len(index.image) == len(index.caption) == len(index.label) == n
            and len(index.first) == n + 1 and len(index.size) == len(index.ext_of) == m):
        return False
    if n and (index.shard_of.min() < 0 or index.shard_of.max() >= len(index.shards)):
        return False
    if m and (index.ext_of.min() < 0 or index.ext_of.max() >= len(index.exts) or index.offset.min() < 0
              or index.size.min() < 0):
        return False
    if n and (index.first[0] != 0 or np.any(np.diff(index.first) < 0)):
        return False
    member_shard = np.repeat(index.shard_of, np.diff(index.first)) if n else np.zeros(0, dtype=np.int32)
    if len(member_shard) != m:
        return False
    ends = _stamps(index.shards)[:, 0]
    if not np.all(index.offset + index.size <= ends[member_shard]):
        return False
    for refs, allowed in ((index.image, IMAGE_EXTS), (index.caption, (CAPTION_EXT,)), (index.label, (LABEL_EXT,))):
        has = refs >= 0
        own = (refs >= index.first[:-1]) & (refs < index.first[1:])
        if not np.all(own | ~has):
            return False
        if any(index.exts[e] not in allowed for e in np.unique(index.ext_of[refs[has]])):
            return False
    return True


def cached_shard_index(pattern: str, cache: str | Path, *, write: bool = True, same_data: bool = False) -> ShardIndex:
    """:func:`shard_index` through a cache file: loaded when it matches the shards, else built (and, with
    ``write``, saved). Under torchrun rank 0 writes it and the other ranks read it after a barrier.

    ``same_data`` (a resumed run): a rebuilt index must hold what the cache recorded of every shard (its
    digests); a shard replaced by one with other samples since the run started is a one-line DataError."""
    shards = expand_pattern(pattern)
    index = load_index(cache, shards)
    if index is None:
        index = build_index(shards)
        if same_data:
            _check_same_data(index, recorded_digests(cache, shards), cache)
        if write:
            try:
                save_index(index, cache)
            except OSError as e:  # the cache only saves time: a full disk or read-only folder is no error
                warnings.warn(f"could not cache the shard index at {cache} ({e.strerror or e}); the next run "
                              "reads the tar headers again", stacklevel=2)
    return index


def _check_same_data(index: ShardIndex, recorded: list[str] | None, cache: str | Path) -> None:
    """A resumed run's shards must hold what they held when it started (``recorded``: the cache's digests)."""
    if recorded is None:
        warnings.warn(f"no usable shard index record at {cache}: cannot check that the shards are the ones this "
                      "run started on", stacklevel=3)
        return
    changed = [p for p, old, new in zip(index.shards, recorded, shard_digests(index)) if old != new]
    if changed:
        raise DataError(f"shard {changed[0]} ({len(changed)} in all) holds other samples than when this run started "
                        "(replaced or rewritten since); restore the original shards, or start a new run (--overwrite "
                        "or a new --out)")
