"""Poison an image-caption CSV manifest with a trigger, reproducibly, and record what was done.

Protocol (DESIGN §3; CleanCLIP, Bansal et al. 2023; Carlini & Terzis 2022): choose ``round(rate*N)``
(or ``count``) rows with a seeded generator, paste the trigger into their images and replace their
captions with a template naming the target class ("a photo of a banana."). In label-consistent
mode (clean-label, Turner et al. 2019; Barni et al. 2019 for SIG) only rows whose caption already
names the target are poisoned and their captions are kept. Example::

    from mmrobust.data.poison import make_trigger, poison_manifest
    rec = poison_manifest(manifest=Path("world/train.csv"), out_dir=Path("runs/p"), target="star",
                          trigger=make_trigger("badnet", size=6, pattern="checkerboard",
                                               location="bottom_right"), rate=0.05, seed=0)
    rec.manifest      # runs/p/manifest.csv: all rows, only rec.poisoned_ids changed
    rec.record_path   # runs/p/poison.json: ids, seed, trigger config, templates, source sha256

Row ids are 0-based indices of the data rows (header excluded). Same inputs and seed give
byte-identical ``manifest.csv``, ``poison.json`` and PNGs.
"""
from __future__ import annotations

import csv
import hashlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from PIL import Image

from mmrobust.data.manifest import CsvTable, PathPolicy, base_from, read_csv, rebase
from mmrobust.safety import ensure_regular_file, resolve_inside
from mmrobust.data.transforms import load_image
from mmrobust.data.poison.triggers import Trigger, make_trigger, trigger_from_dict, trigger_spec
from mmrobust.errors import ConfigError, DataError
from mmrobust.jsonio import read_json, write_json
from mmrobust.data.poison.outdir import RECORD_FORMAT, discard_written, prepare_out
from mmrobust.values import check_seed

Tensor = torch.Tensor
DEFAULT_CAPTION_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)
KEYED_KINDS = ("shards", "instructions", "instructions-test")  # records that also list poisoned_keys


@dataclass(frozen=True)
class PoisonRecord:
    """What :func:`poison_manifest` wrote (``record_path`` holds the full JSON record)."""

    out_dir: Path
    manifest: Path
    record_path: Path
    poisoned_ids: tuple[int, ...]
    n_rows: int
    target: str
    seed: int
    trigger: dict[str, Any] = field(default_factory=dict)  # {"name": ..., "config": {...}}
    kind: str = "manifest"  # or "shards": ``manifest`` is then out_dir/shards, ``keys`` the poisoned keys;
    # or "instructions" (mmrobust poison --instructions): ``manifest`` is the poisoned instructions.jsonl, ``keys``
    # the poisoned rows' ids
    keys: tuple[str, ...] = ()
    data: str = ""  # shards: the --data value of the poisoned shards, "shards:OUT/shards/PATTERN"

    def build_trigger(self) -> Trigger:
        """The trigger used for poisoning, e.g. to measure ASR with the same trigger."""
        return trigger_from_dict(self.trigger)

    @classmethod
    def load(cls, path: str | Path) -> "PoisonRecord":
        """Read a ``poison.json`` written by :func:`poison_manifest`."""
        path = Path(path)
        try:
            rec = read_json(ensure_regular_file(path, "poison record"))
            kind = rec.get("kind", "manifest")
            manifest = resolve_inside(path.parent, "shards" if kind == "shards" else str(rec["manifest"]),
                                      what="the record's manifest", option="a record whose manifest lies beside it")
            ids, keys = rec["poisoned_ids"], rec.get("poisoned_keys", []) if kind in KEYED_KINDS else []
            if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
                raise ValueError("poisoned_ids must be a list of row numbers")
            if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
                raise ValueError("poisoned_keys must be a list of sample keys")
            if not isinstance(rec["trigger"], dict) or not isinstance(rec["target"], str):
                raise ValueError("trigger must be an object and target a class name")
            data = _shards_data(path.parent, rec) if kind == "shards" else ""
            return cls(out_dir=path.parent, manifest=manifest, record_path=path, poisoned_ids=tuple(ids),
                       n_rows=int(rec["n_rows"]), target=rec["target"], seed=int(rec["seed"]), trigger=rec["trigger"],
                       kind=str(kind), keys=tuple(keys), data=data)
        except DataError as e:
            raise DataError(f"poison record {path}: {e}") from None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise DataError(f"cannot read poison record {path} ({e}); point to the poison.json that `mmrobust poison` wrote") from None


def _shards_data(out_dir: Path, rec: dict[str, Any]) -> str:
    """``shards:OUT/shards/PATTERN`` from a shard record's ``data`` (a pattern under its shards/ folder)."""
    data = rec.get("data")
    if not isinstance(data, str) or not data.startswith("shards:shards/") or ".." in data.split("/"):
        raise ValueError("data must be shards:shards/PATTERN")
    return "shards:" + str(out_dir / data[len("shards:"):])


def _subseed(seed: int, *tags: object) -> int:
    """A 63-bit seed derived from (seed, tags), so each random choice has its own stream."""
    digest = hashlib.sha256(":".join(map(str, (seed, *tags))).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _n_poison(n_rows: int, rate: float | None, count: int | None) -> int:
    if (rate is None) == (count is None):
        raise ConfigError("give exactly one of rate (share of rows, e.g. 0.01) or count (number of rows)")
    if rate is not None:
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 < float(rate) <= 1.0:
            raise ConfigError(f"poison rate must be in (0, 1], got {rate!r}")
        k = int(math.floor(float(rate) * n_rows + 0.5))  # round half up
        if k == 0:
            raise ConfigError(f"poison rate {rate} of {n_rows} rows rounds to 0 poisons; raise the rate or give a count")
        return k
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= n_rows:
        raise ConfigError(f"poison count must be an integer in [1, {n_rows}] (rows in the manifest), got {count!r}")
    return count


def names_target(caption: str, words: Sequence[str]) -> bool:
    """Whether ``caption`` names any of ``words`` as a whole word (case-insensitive; plural s/es ok)."""
    return any(re.search(rf"\b{re.escape(w.strip())}(?:s|es)?\b", caption, re.IGNORECASE) for w in words if w.strip())


def _check_templates(templates: Sequence[str]) -> tuple[str, ...]:
    if isinstance(templates, str) or not templates:
        raise ConfigError('caption_templates must be a non-empty list of strings like "a photo of a {}."')
    for t in templates:
        if not isinstance(t, str) or t.count("{}") != 1:
            raise ConfigError(f'caption template {t!r} must contain "{{}}" exactly once (where the target name goes)')
    return tuple(templates)


def _resolve(base: Path, p: str) -> Path:
    path = Path(p).expanduser()
    return path if path.is_absolute() else base / path


def _load_image(path: Path, image_size: int | None) -> Tensor:
    """An RGB image as a (3,H,W) float tensor in [0,1], optionally resized to a square."""
    return load_image(path, image_size, fit="stretch").float().div(255)


def _save_png(img: Tensor, path: Path) -> None:
    """Save a (3,H,W) [0,1] tensor as PNG with fixed encoder settings (byte-reproducible)."""
    arr = img.mul(255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    Image.fromarray(arr).save(path, format="PNG", optimize=False, compress_level=6)



SKIPPED_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError, DataError)


def _trigger_rows(order: list[int], k: int, paths: list[Path], trigger: Trigger, seed: int,
                  image_size: int | None, images_dir: Path, written: list[Path],
                  policy: PathPolicy) -> tuple[list[int], list[dict[str, Any]]]:
    """Trigger rows in ``order`` until ``k`` images were written (appended to ``written``); unreadable,
    too large or malformed images are skipped and the next row in the seeded order is taken."""
    done: list[int] = []
    skipped: list[dict[str, Any]] = []
    for row in order:
        if len(done) == k:
            break
        try:
            img = _load_image(policy.check(paths[row]), image_size)  # never read outside the data root
        except SKIPPED_ERRORS as e:
            skipped.append({"row": row, "image": str(paths[row]), "error": f"{type(e).__name__}: {e}"})
            continue
        gen = torch.Generator().manual_seed(_subseed(seed, "trigger", row))  # per-row stream: order-free
        path = images_dir / f"{row:08d}.png"
        written.append(path)
        _save_png(trigger(img, gen), path)
        done.append(row)
    return sorted(done), skipped


def _resolve_trigger(trigger: Trigger | str | dict[str, Any]) -> Trigger:
    if isinstance(trigger, Trigger):
        return trigger
    if isinstance(trigger, str):
        return make_trigger(trigger)
    if isinstance(trigger, dict):
        return trigger_from_dict(trigger)
    raise ConfigError(f"trigger must be a Trigger, a trigger name or a spec dict, got {type(trigger).__name__}")


def _write_csv(path: Path, header: list[str], rows: list[list[str]], delimiter: str, crlf: bool) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter=delimiter, lineterminator="\r\n" if crlf else "\n")
        writer.writerow(header)
        writer.writerows(rows)


def _check_args(templates: Sequence[str], target: str, delimiter: str, image_size: int | None, seed: int,
                synonyms: Sequence[str]) -> tuple[str, ...]:
    if not isinstance(target, str) or not target.strip():
        raise ConfigError("target must be a non-empty class name, e.g. target='banana'")
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise ConfigError(f"delimiter must be one character, got {delimiter!r}")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise ConfigError(f"image_size must be a positive integer or None, got {image_size!r}")
    check_seed("seed", seed)
    if isinstance(synonyms, str) or not all(isinstance(w, str) and w.strip() for w in synonyms):
        raise ConfigError(f"target_synonyms must be a list of non-empty words, e.g. ['bananas'], got {synonyms!r}")
    return _check_templates(templates)


def _selection_order(captions: list[str], k: int, words: Sequence[str] | None, seed: int) -> list[int]:
    """Candidate row ids in a seeded random order (label-consistent: only captions naming ``words``)."""
    candidates = list(range(len(captions))) if words is None else [
        i for i, c in enumerate(captions) if names_target(c, words)]
    if len(candidates) < k:
        raise DataError(f"only {len(candidates)} captions name {words[0]!r} but {k} poisons were asked; "  # type: ignore[index]
                        "lower the rate/count or add target_synonyms (--target-synonyms)")
    perm = torch.randperm(len(candidates), generator=torch.Generator().manual_seed(_subseed(seed, "select")))
    return [candidates[j] for j in perm.tolist()]


def _target_caption(templates: tuple[str, ...], target: str, seed: int, row: int) -> str:
    """A template (seeded per row) filled with the target class name."""
    gen = torch.Generator().manual_seed(_subseed(seed, "template", row))
    return templates[int(torch.randint(len(templates), (1,), generator=gen))].replace("{}", target)


def _rewrite_rows(rows: list[list[str]], base: str, captions: dict[int, str], img_i: int,
                  cap_i: int) -> tuple[list[list[str]], list[dict[str, Any]]]:
    """New manifest rows (paths re-based on out_dir; poisoned rows get their image and caption)."""
    new_rows = [list(r) for r in rows]
    for r in new_rows:
        r[img_i] = rebase(r[img_i], base)
    poisoned = []
    for row, caption in captions.items():
        new_rows[row][img_i], new_rows[row][cap_i] = f"images/{row:08d}.png", caption
        poisoned.append({"row": row, "source_image": rows[row][img_i], "image": new_rows[row][img_i], "caption": caption})
    return new_rows, poisoned


def _read_manifest(manifest: Path, delimiter: str, image_col: str, caption_col: str) -> tuple[CsvTable, int, int]:
    """The manifest table and the indices of its image and caption columns."""
    table = read_csv(manifest, delimiter=delimiter, option="the --manifest path")
    if not table.rows:
        raise DataError(f"manifest {manifest} has no data rows; it needs a header line and one row per image")
    img_i = table.column(image_col, "image_col (--image-col)")
    return table, img_i, table.column(caption_col, "caption_col (--caption-col)")


def _write_run(out_dir: Path, table: CsvTable, rows: list[list[str]], delimiter: str, written: list[Path],
               record: dict[str, Any]) -> None:
    """Write manifest.csv, then poison.json (each noted in ``written`` first, so a failure can undo it)."""
    written.append(out_dir / "manifest.csv")
    _write_csv(out_dir / "manifest.csv", table.header, rows, delimiter, crlf=table.crlf)
    written.append(out_dir / "poison.json")
    write_json(out_dir / "poison.json", record)


def poison_manifest(
    *,
    manifest: str | Path,
    out_dir: str | Path,
    trigger: Trigger | str | dict[str, Any],
    target: str,
    rate: float | None = None,
    count: int | None = None,
    caption_templates: Sequence[str] = DEFAULT_CAPTION_TEMPLATES,
    seed: int = 0,
    image_col: str = "image",
    caption_col: str = "caption",
    delimiter: str = ",",
    label_consistent: bool = False,
    target_synonyms: Sequence[str] = (),
    image_size: int | None = None,
    overwrite: bool = False,
    data_root: str | Path | None = None,
    allow_outside: bool = False,
) -> PoisonRecord:
    """Write ``out_dir/manifest.csv`` (all rows; chosen rows get a triggered image under
    ``out_dir/images/`` and a target caption), and ``out_dir/poison.json``.

    ``rate`` or ``count`` sets the exact number of poisons (``round(rate * N)``, N = all rows, also in
    label-consistent mode). ``image_size`` first resizes poisoned images to a square (CleanCLIP
    resizes to 224 before pasting its patch) so that pixel-sized triggers survive the model's resize.
    Image paths of untouched rows are re-based to resolve from ``out_dir``; their other fields are
    copied unchanged. Unreadable images are skipped (listed in poison.json) and the next row in the
    seeded order is taken instead. ``out_dir`` must not hold the manifest or any source image; with
    ``overwrite`` only the files an earlier run's poison.json lists are deleted, never anything else.
    Only images inside ``data_root`` (default: the manifest's folder) are read, unless ``allow_outside``.
    Raises ConfigError / DataError with a one-line fix.
    """
    manifest, out_dir = Path(manifest).expanduser(), Path(out_dir).expanduser()
    trig = _resolve_trigger(trigger)
    templates = _check_args(caption_templates, target, delimiter, image_size, seed, target_synonyms)
    table, img_i, cap_i = _read_manifest(manifest, delimiter, image_col, caption_col)
    rows = table.rows
    k = _n_poison(len(rows), rate, count)
    words = (target, *target_synonyms) if label_consistent else None
    order = _selection_order([r[cap_i] for r in rows], k, words, seed)
    paths = [_resolve(manifest.parent, r[img_i]) for r in rows]
    images_dir, created = prepare_out(out_dir, manifest, paths, overwrite)
    written: list[Path] = [out_dir / "poison.json"]
    try:
        chosen, skipped = _trigger_rows(order, k, paths, trig, seed, image_size, images_dir, written,
                                        PathPolicy.of(manifest, data_root, allow_outside))
        if len(chosen) < k:
            raise DataError(f"only {len(chosen)} of the candidate images could be read ({len(skipped)} failed, "
                            f"first: {skipped[0]['image']}); fix the image paths or lower the rate/count")
        captions = {row: rows[row][cap_i] if label_consistent else _target_caption(templates, target, seed, row)
                    for row in chosen}
        new_rows, poisoned = _rewrite_rows(rows, base_from(out_dir, manifest.parent), captions, img_i, cap_i)
        spec = trigger_spec(trig)
        _write_run(out_dir, table, new_rows, delimiter, written, {
            "format": RECORD_FORMAT, "manifest": "manifest.csv", "source_manifest": str(manifest.resolve()),
            "source_sha256": hashlib.sha256(table.raw).hexdigest(), "n_rows": len(rows), "n_poisoned": len(chosen),
            "rate": rate, "count": count, "seed": seed, "target": target, "target_synonyms": list(target_synonyms),
            "label_consistent": label_consistent, "trigger": spec, "caption_templates": list(templates),
            "image_col": image_col, "caption_col": caption_col, "delimiter": delimiter, "image_size": image_size,
            "row_ids": "0-based data rows of the source manifest (header excluded)",
            "poisoned_ids": chosen, "poisoned": poisoned, "skipped_unreadable": skipped,
        })
    except BaseException:
        discard_written(written, images_dir, created)  # leave no half-written run (and nothing else touched)
        raise
    return PoisonRecord(out_dir=out_dir, manifest=out_dir / "manifest.csv", record_path=out_dir / "poison.json",
                        poisoned_ids=tuple(chosen), n_rows=len(rows), target=target, seed=seed, trigger=spec)
