"""Datasets users bring: a CSV manifest of (image, caption) pairs and a labelled split for evaluation.

Both read the same CSV format (the synthetic world writes it too). Images come out as float
tensors in [0,1]. A missing, corrupt, oversized or too elongated image (or a path that is not a
regular file) never kills a run: it is skipped, counted and listed.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from PIL import Image, UnidentifiedImageError

from mmrobust.data import transforms as T
from mmrobust.data.autoaugment import autoaugment_batch
from mmrobust.data.manifest import PathPolicy, read_csv
from mmrobust.data.noise_erase import noise_erase_batch
from mmrobust.data.text_aug import eda
from mmrobust.errors import ConfigError, DataError


def read_manifest(path: str | Path, *, columns: Sequence[str], delimiter: str = ",") -> list[dict[str, str]]:
    """Read a CSV/TSV manifest and check that ``columns`` exist; one-line errors otherwise."""
    table = read_csv(path, delimiter=delimiter)
    missing = [c for c in columns if c not in table.header]
    if missing:
        raise DataError(f"manifest {path} lacks column(s) {missing} (has {table.header}); "
                        "rename them or pass --image-col/--caption-col/--label-col/--delimiter")
    if not table.rows:
        raise DataError(f"manifest {path} has no rows")
    return table.dicts()


PRELOAD_MAX_BYTES = 4 * 2 ** 30  # ImageNet's 1.28M training images at 224 px would need 193 GB


@dataclass
class SkipLog:
    """Rows whose image could not be read: row index -> reason."""

    skipped: dict[int, str] = field(default_factory=dict)

    def add(self, row: int, reason: str) -> None:
        self.skipped[row] = reason

    def summary(self) -> dict[str, Any]:
        return {"n_skipped": len(self.skipped), "skipped": [{"row": r, "reason": s} for r, s in sorted(self.skipped.items())]}


class _ImageRows(torch.utils.data.Dataset):
    """Shared machinery: rows with an image column, optional preloading into one uint8 tensor."""

    def __init__(self, manifest: str | Path, *, image_col: str, columns: Sequence[str], image_size: int,
                 delimiter: str = ",", preload: bool = False, paths: PathPolicy | None = None) -> None:
        self.manifest = Path(manifest)
        self.rows = read_manifest(self.manifest, columns=[image_col, *columns], delimiter=delimiter)
        self.root = self.manifest.parent
        self.paths = paths or PathPolicy.of(self.manifest)
        self.image_col = image_col
        self.image_size = image_size
        self.skips = SkipLog()
        self._cache: torch.Tensor | None = None
        if preload:
            self.preload()

    def __len__(self) -> int:
        return len(self.rows)

    def image_path(self, i: int) -> Path:
        return self.paths.resolve(self.root, self.rows[i][self.image_col])

    def preload(self) -> None:
        """Decode every image once into memory (small datasets; the synthetic world). A split whose images
        would take more than PRELOAD_MAX_BYTES stays lazy (the same items, read as they are asked for)."""
        if len(self.rows) * 3 * self.image_size ** 2 > PRELOAD_MAX_BYTES:
            return
        cache = torch.zeros(len(self.rows), 3, self.image_size, self.image_size, dtype=torch.uint8)
        for i in range(len(self.rows)):
            img = self._read(i)
            if img is not None:
                cache[i] = img
        self._cache = cache
        if len(self.skips.skipped) == len(self.rows):
            first = next(iter(self.skips.skipped.values()))
            raise DataError(f"none of the {len(self.rows)} images of {self.manifest} could be read (first: {first}); "
                            f"check the --image-col column and that paths resolve from {self.root} inside the data "
                            f"root {self.paths.root}")

    def _read(self, i: int) -> torch.Tensor | None:
        if i in self.skips.skipped:
            return None
        try:
            return T.load_image(self.image_path(i), self.image_size)
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError, DataError) as e:
            self.skips.add(i, f"{type(e).__name__}: {str(e)[:500]}")
            return None

    def image_u8(self, i: int) -> torch.Tensor | None:
        if self._cache is not None:
            return None if i in self.skips.skipped else self._cache[i]
        return self._read(i)


def _unpack(key: Any) -> tuple[int, int]:
    """Samplers may pass (epoch, index) so per-sample augmentations are seeded per epoch."""
    return (int(key[0]), int(key[1])) if isinstance(key, tuple) else (0, int(key))


class PairItems:
    """Items of image-caption pairs, shared by the CSV dataset and the webdataset shard dataset.

    Subclasses give ``image_u8(i)`` (uint8 (3,H,W) or None when unreadable), ``caption(i)`` (str or None),
    ``label(i)`` when ``label_col`` is set (< 0 when unreadable: the item is skipped), ``views`` and ``seed``.
    Keys are ``index`` or ``(epoch, index)``; augmented views are seeded by (seed, epoch, index), so any split
    of a batch (ranks, workers) and a resumed run see the same views.
    """

    views: tuple[str, ...] = ()
    seed: int = 0
    label_col: str | None = None

    def __getitem__(self, key: Any) -> dict[str, Any] | None:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: Sequence[Any]) -> list[dict[str, Any] | None]:
        """Batched fetch (used by DataLoader): augmented image views are made for the whole batch at once."""
        items: list[dict[str, Any] | None] = []
        raw, seeds = [], []
        for key in keys:
            epoch, i = _unpack(key)
            img = self.image_u8(i)
            caption = self.caption(i) if img is not None else None
            label = self.label(i) if self.label_col and caption is not None else None
            if img is None or caption is None or (label is not None and label < 0):  # < 0: an unreadable label
                items.append(None)
                continue
            item: dict[str, Any] = {"image": T.to_float(img), "caption": caption, "index": i}
            if label is not None:
                item["label"] = label
            sample_seed = ((self.seed * 1_000_003 + epoch) * 1_000_033 + i) & 0x7FFFFFFF
            if "caption_aug" in self.views:
                item["caption_aug"] = eda(caption, rng=random.Random(sample_seed))
            items.append(item)
            raw.append(img)
            seeds.append(sample_seed)
        kept = [it for it in items if it is not None]
        for name in [v for v in self.views if v in IMAGE_VIEWS] if raw else ():
            for item, view in zip(kept, IMAGE_VIEWS[name](torch.stack(raw), seeds)):
                item[name] = view
        return items


class ImageTextDataset(PairItems, _ImageRows):
    """Image-caption pairs from a CSV manifest (columns configurable).

    Items are dicts: ``image`` float (3,H,W) in [0,1], ``caption`` str, ``index`` int, optionally ``label``
    and the augmented views listed in ``views`` (``image_aug``: AutoAugment, Cubuk et al. 2019;
    ``image_noise_erase``: PAR's noise + erasing view; ``caption_aug``: EDA, Wei & Zou 2019), seeded by
    (seed, epoch, index). Unreadable images yield ``None`` and are dropped by :func:`collate`.
    """

    def __init__(self, manifest: str | Path, *, image_size: int, image_col: str = "image",
                 caption_col: str = "caption", label_col: str | None = None, classnames: Sequence[str] | None = None,
                 delimiter: str = ",", preload: bool = False, views: Sequence[str] = (), seed: int = 0,
                 paths: PathPolicy | None = None) -> None:
        cols = [caption_col] + ([label_col] if label_col else [])
        super().__init__(manifest, image_col=image_col, columns=cols, image_size=image_size,
                         delimiter=delimiter, preload=preload, paths=paths)
        self.caption_col, self.label_col = caption_col, label_col
        self.label_index = {c: i for i, c in enumerate(classnames)} if classnames else None
        self.views = tuple(views)
        self.seed = seed

    def caption(self, i: int) -> str:
        return self.rows[i][self.caption_col]

    def label(self, i: int) -> int:
        return _label_of(self.rows[i][self.label_col], self.label_index, self.manifest, i,
                         len(self.label_index) if self.label_index is not None else None)


IMAGE_VIEWS = {  # view name -> (uint8 batch, per-sample seeds) -> float batch in [0,1]
    "image_aug": lambda u8, seeds: T.to_float(autoaugment_batch(u8, seeds)),
    "image_noise_erase": lambda u8, seeds: noise_erase_batch(T.to_float(u8), seeds),
}


def _label_of(value: str, index: dict[str, int] | None, manifest: Path, row: int,
              n_classes: int | None = None) -> int:
    """A label cell as a class index: a class name of ``index`` or an integer in [0, n_classes)."""
    if index is not None and value in index:
        return index[value]
    if not value.strip().lstrip("-").isdigit():
        raise DataError(f"{manifest} row {row}: label {value!r} is neither a class name in classes.json "
                        "nor an integer index; fix the label column or the class list")
    y = int(value)
    if y < 0 or (n_classes is not None and y >= n_classes):
        raise DataError(f"{manifest} row {row}: label index {y} is outside the {n_classes or 0} classes; fix the "
                        "label column or the class list")
    return y


IMAGENET_CLASSES = "imagenet"  # --classes imagenet: ImageNet-1k's names (see ClassInfo.load)


@dataclass(frozen=True)
class ClassInfo:
    """Class names and zero-shot prompt templates (``{}`` marks the class name)."""

    classnames: tuple[str, ...]
    templates: tuple[str, ...]

    @classmethod
    def load(cls, path: str | Path) -> "ClassInfo":
        """A classes.json, or ``imagenet``: ImageNet-1k's 1000 names in index order with OpenAI's 80 templates
        (as open_clip ships them; labels 0-999 as ImageNet webdataset shards' ``.cls`` hold them)."""
        if str(path) == IMAGENET_CLASSES and not Path(path).is_file():
            from mmrobust.data.image_folder import imagenet_classes

            _, names, templates = imagenet_classes()
            return cls(tuple(names), tuple(templates))
        path = Path(path)
        if not path.is_file():
            raise DataError(f"class file {path} not found; pass a JSON with 'classnames' and 'templates'")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"class file {path} is not valid JSON ({e}); write {{'classnames': [...], "
                            "'templates': [...]}}") from e
        if not isinstance(data, dict) or not isinstance(data.get("classnames"), list):
            raise DataError(f"{path} has no 'classnames' list; write {{'classnames': [...], 'templates': [...]}}")
        templates = tuple(data.get("templates") or ("a photo of a {}.",))
        bad = [t for t in templates if "{}" not in t]
        if bad:
            raise ConfigError(f"template(s) {bad} in {path} lack the '{{}}' placeholder for the class name")
        return cls(tuple(data["classnames"]), templates)


class LabelledDataset(_ImageRows):
    """Labelled images for zero-shot / ASR evaluation: a CSV with image and label columns
    (label = class name from ``classes`` or integer index). Items: ``image``, ``label``, ``index``."""

    def __init__(self, manifest: str | Path, *, classes: ClassInfo, image_size: int, image_col: str = "image",
                 label_col: str = "label", delimiter: str = ",", preload: bool = False,
                 paths: PathPolicy | None = None) -> None:
        super().__init__(manifest, image_col=image_col, columns=[label_col], image_size=image_size,
                         delimiter=delimiter, preload=preload, paths=paths)
        self.classes = classes
        index = {c: i for i, c in enumerate(classes.classnames)}
        n = len(classes.classnames)
        self.labels = [_label_of(r[label_col], index, self.manifest, i, n) for i, r in enumerate(self.rows)]

    def __getitem__(self, key: Any) -> dict[str, Any] | None:
        _, i = _unpack(key)
        img = self.image_u8(i)
        if img is None:
            return None
        return {"image": T.to_float(img), "label": self.labels[i], "index": i}


def collate(items: list[dict[str, Any] | None]) -> dict[str, Any]:
    """Stack tensors, keep strings as lists, drop unreadable items (counted in ``n_dropped``)."""
    kept = [it for it in items if it is not None]
    batch: dict[str, Any] = {"n_dropped": len(items) - len(kept)}
    if not kept:
        return batch
    for key in kept[0]:
        vals = [it[key] for it in kept]
        if isinstance(vals[0], torch.Tensor):
            batch[key] = torch.stack(vals)
        elif isinstance(vals[0], int):
            batch[key] = torch.tensor(vals)
        else:
            batch[key] = vals
    return batch
