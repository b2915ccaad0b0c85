"""The output folder of ``mmrobust poison``: never delete what the tool did not write.

The folder may not hold the input manifest, images or shards. An earlier run is recognised by its
``poison.json`` (written first as an in-progress marker, then as the full record); with
``overwrite`` only the files that record lists are deleted, and anything else where the run would
write is refused. A manifest run writes ``manifest.csv`` and ``images/``, an instruction-file run
``instructions.jsonl`` and ``images/``, a shard run ``shards/*.tar``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from mmrobust.data.manifest import INSTRUCTIONS_COPY
from mmrobust.data.manifest import POISON_RECORD_FORMAT as RECORD_FORMAT
from mmrobust.errors import ConfigError, DataError
from mmrobust.jsonio import read_json, write_json
from mmrobust.safety import is_inside

IMAGE_NAME = re.compile(r"images/\d{8}\.png")  # what poison_manifest writes under out_dir
SHARD_NAME = re.compile(r"shards/[A-Za-z0-9][A-Za-z0-9._-]*\.tar")  # what poison_shards writes under out_dir
LISTINGS = ("manifest.csv", INSTRUCTIONS_COPY)  # the copy a run writes beside images/ (a manifest, an instruction file)


def _holds(out_dir: Path, source: Path) -> bool:
    """Whether ``source`` lies in ``out_dir``; a source that cannot be resolved (a symlink loop) is no file there
    to protect: its row is skipped, with its reason, when it is read."""
    try:
        return is_inside(out_dir, source)
    except DataError:
        return False


def _refuse_sources_inside(out_dir: Path, manifest: Path, sources: list[Path]) -> None:
    """The output folder must hold no input: an earlier --overwrite would delete it."""
    if is_inside(out_dir, manifest):
        raise ConfigError(f"output folder {out_dir} holds the source manifest {manifest}; write the poisoned copy "
                          "to a new folder outside the source data (e.g. --out data_poisoned)")
    inside = next((p for p in sources if _holds(out_dir, p)), None)
    if inside is not None:
        raise ConfigError(f"output folder {out_dir} holds source image {inside}; write the poisoned copy to a new "
                          "folder outside the source data (e.g. --out data_poisoned)")


def _earlier_run(out_dir: Path) -> list[Path]:
    """The files an earlier run listed in out_dir/poison.json (none without one); refuses a poison.json
    that mmrobust poison did not write."""
    path = out_dir / "poison.json"
    if not path.exists():
        return []
    try:
        rec = read_json(path)
    except (OSError, ValueError, DataError):
        rec = None
    if not isinstance(rec, dict) or rec.get("format") != RECORD_FORMAT or not isinstance(rec.get("poisoned"), list):
        raise ConfigError(f"{path} is not a record written by mmrobust poison, so nothing in {out_dir} will be "
                          "replaced; choose another output folder")
    if rec.get("kind") == "shards":  # finished or interrupted: the shards it names (the marker names them first)
        return [path, *_listed_shards(out_dir, rec)]
    listing = rec.get("manifest", "manifest.csv")
    listing = listing if listing in LISTINGS else "manifest.csv"
    if rec.get("status") == "writing":  # an interrupted run: its images are the pattern-named ones in its folder
        return [path, *_interrupted_files(out_dir, bool(rec.get("images_dir_created")), listing)]
    images = [p.get("image") for p in rec["poisoned"] if isinstance(p, dict)]
    listed = [out_dir / name for name in images if isinstance(name, str) and IMAGE_NAME.fullmatch(name)]
    return [path, *([out_dir / listing] if rec.get("manifest") == listing else []), *listed]


def _listed_shards(out_dir: Path, rec: dict) -> list[Path]:
    names = rec.get("shards")
    return [out_dir / n for n in names if isinstance(n, str) and SHARD_NAME.fullmatch(n)] if isinstance(names, list) else []


def _interrupted_files(out_dir: Path, images_dir_created: bool, listing: str = "manifest.csv") -> list[Path]:
    """What a run killed before its final record may have written: images/NNNNNNNN.png (only when it
    created images/ itself) and its ``listing``, manifest.csv or instructions.jsonl (written just before the
    record)."""
    images = out_dir / "images"
    found = [out_dir / listing] if (out_dir / listing).is_file() else []
    if images_dir_created and images.is_dir():
        found += [p for p in sorted(images.iterdir()) if IMAGE_NAME.fullmatch(f"images/{p.name}") and p.is_file()]
    return found


def _unlisted(out_dir: Path, listed: list[Path], listing: str = "manifest.csv") -> list[Path]:
    """Files where this run writes (its ``listing``, images/) that no earlier record lists."""
    known = set(listed)
    images = out_dir / "images"
    found = [out_dir / listing] if (out_dir / listing).exists() else []
    found += sorted(images.iterdir()) if images.is_dir() else []
    return [p for p in found if p not in known]


def prepare_out(out_dir: Path, manifest: Path, sources: list[Path], overwrite: bool,
                listing: str = "manifest.csv") -> tuple[Path, bool]:
    """Create out_dir/images and return it (and whether this run created it), for a run that writes
    ``listing`` (manifest.csv, or instructions.jsonl for an instruction file) beside it. Refuses an output
    folder holding the input; with ``overwrite`` deletes only the files an earlier run's poison.json lists."""
    _refuse_sources_inside(out_dir, manifest, sources)
    listed = _earlier_run(out_dir)
    if listed and not overwrite:
        raise ConfigError(f"{out_dir} already holds a poisoned manifest; choose a new output directory or pass "
                          "overwrite=True (--overwrite) to replace the files its poison.json lists")
    foreign = _unlisted(out_dir, listed, listing)
    if foreign:
        raise ConfigError(f"{out_dir} holds {len(foreign)} file(s) that no poison.json of mmrobust poison lists "
                          f"(e.g. {foreign[0]}, perhaps from an interrupted run); move or delete them yourself, "
                          "or choose another output directory")
    for path in listed:
        path.unlink(missing_ok=True)
    images = out_dir / "images"
    created = not images.is_dir()
    images.mkdir(parents=True, exist_ok=True)
    # marks the folder as ours while images are written: a killed run can be replaced with --overwrite
    write_json(out_dir / "poison.json", {"format": RECORD_FORMAT, "status": "writing", "images_dir_created": created,
                                         **({"manifest": listing} if listing != "manifest.csv" else {}),
                                         "poisoned": []})
    return images, created


def discard_written(written: list[Path], images_dir: Path, created: bool) -> None:
    """Undo a failed run: delete the files it wrote (only those), and images/ if it made it and it is empty."""
    for path in written:
        path.unlink(missing_ok=True)
    if created and images_dir.is_dir() and not any(images_dir.iterdir()):
        images_dir.rmdir()


def prepare_shard_out(out_dir: Path, sources: list[Path], names: list[str], overwrite: bool) -> tuple[Path, bool]:
    """:func:`prepare_out` for shards: create out_dir/shards (returned, with whether this run created it) where
    ``names`` (``shards/NAME.tar``) will be written. Refuses an output folder holding an input shard and files
    there that no record of ours lists; with ``overwrite`` deletes only what an earlier run's poison.json lists."""
    inside = next((p for p in sources if _holds(out_dir, p)), None)
    if inside is not None:
        raise ConfigError(f"output folder {out_dir} holds source shard {inside}; write the poisoned copy to a new "
                          "folder outside the source shards (e.g. --out shards_poisoned)")
    listed = _earlier_run(out_dir)
    if listed and not overwrite:
        raise ConfigError(f"{out_dir} already holds a poisoned copy; choose a new output directory or pass "
                          "overwrite=True (--overwrite) to replace the files its poison.json lists")
    shards, known = out_dir / "shards", set(listed)
    foreign = [p for p in (sorted(shards.iterdir()) if shards.is_dir() else []) if p not in known]
    if foreign:
        raise ConfigError(f"{shards} holds {len(foreign)} file(s) that no poison.json of mmrobust poison lists "
                          f"(e.g. {foreign[0]}); move or delete them yourself, or choose another output directory")
    for path in listed:
        path.unlink(missing_ok=True)
    created = not shards.is_dir()
    shards.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "poison.json", {"format": RECORD_FORMAT, "kind": "shards", "status": "writing",
                                         "shards": names, "poisoned": []})
    return shards, created


def shard_names(shards: Sequence[Path], copy: str = "copy") -> list[str]:
    """``shards/NAME.tar`` for each input shard (its own file name), as a poisoned or cleaned ``copy`` keeps them;
    refuses odd or clashing names."""
    names = [f"shards/{p.name}" for p in shards]
    bad = next((n for n in names if not SHARD_NAME.fullmatch(n)), None)
    if bad is not None:
        raise DataError(f"shard name {bad[7:]!r} is not a plain file name (letters, digits, . _ -, ending in .tar); "
                        "rename the shards, e.g. 00000.tar")
    if len(set(names)) != len(names):
        raise DataError(f"two shards share a file name (in different folders); the {copy} keeps the names, so give "
                        "them distinct names")
    return names
