"""Caption datasets for retrieval: several captions per image, as COCO and Flickr30k have five.

``karpathy:/data/coco/dataset_coco.json`` reads a Karpathy-split file (Karpathy & Fei-Fei 2015; the
``{"images": [{"filepath"?, "filename", "split", "sentences": [{"raw": ...}]}]}`` layout of
``dataset_coco.json`` / ``dataset_flickr30k.json``), keeps one split (``test`` by default: COCO's 5k,
Flickr30k's 1k images) and writes it as an ordinary ``image,caption`` manifest, one row per caption, into a
folder the tool owns, so the same file also trains. Image paths are ``filepath/filename`` below the data
root (default: the JSON's folder), written out in full.

:class:`RetrievalSplit` reads any such manifest with its images de-duplicated: each distinct image is one
query, and each caption knows its image, which is what recall@K over many captions per image needs
(image -> text counts a hit when any of its captions ranks in the top K, as CLIP_benchmark does).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Sequence

from mmrobust.data import transforms as T
from mmrobust.data.datasets import _ImageRows, _unpack
from mmrobust.data.manifest import PathPolicy
from mmrobust.errors import DataError

PREFIX = "karpathy"
SPLITS = ("train", "restval", "val", "test")


def parse_caption_spec(text: str) -> Path | None:
    """The JSON path of ``karpathy:PATH``; None for anything else (a CSV manifest)."""
    kind, sep, rest = str(text).partition(":")
    if not sep or kind != PREFIX:
        return None
    if not rest:
        raise DataError(f"--data {text!r} names no file; write karpathy:/data/coco/dataset_coco.json")
    return Path(rest).expanduser()


def _entries(path: Path) -> list[Any]:
    if not path.is_file():
        raise DataError(f"caption file {path} does not exist; give the Karpathy-split JSON (dataset_coco.json, "
                        "dataset_flickr30k.json)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not valid JSON ({str(e)[:80]}); give the Karpathy-split file") from None
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise DataError(f"{path} has no 'images' list; it is not a Karpathy-split file (dataset_coco.json layout)")
    return images


def _entry(entry: Any, path: Path, k: int) -> tuple[str, list[str]]:
    """(image path, captions) of one image entry; a malformed entry is a DataError naming it."""
    ok = isinstance(entry, dict) and isinstance(entry.get("filename"), str) and isinstance(entry.get("sentences"), list)
    if not ok:
        raise DataError(f"{path}: image entry {k} lacks a 'filename' string or a 'sentences' list")
    image = "/".join(p for p in (entry.get("filepath"), entry["filename"]) if isinstance(p, str) and p)
    caps = [s.get("raw") for s in entry["sentences"] if isinstance(s, dict)]
    if not caps or not all(isinstance(c, str) and c.strip() for c in caps):
        raise DataError(f"{path}: image {image!r} has a sentence without a 'raw' caption")
    return image, [" ".join(c.split()) for c in caps]


def karpathy_images(spec: str, *, split: str = "test") -> list[tuple[str, str, list[str]]]:
    """(id, image path below the data root, captions) per image of the ``split`` of the Karpathy file
    ``spec`` names, in file order. The id is the entry's ``cocoid`` / ``imgid`` if it has one, else the path."""
    path = parse_caption_spec(spec)
    if path is None:
        raise DataError(f"{spec!r} is not karpathy:PATH")
    if split not in SPLITS:
        raise DataError(f"split {split!r} is not one of {', '.join(SPLITS)} (--split)")
    entries = _entries(path)
    out = []
    for k, e in enumerate(entries):
        if isinstance(e, dict) and e.get("split") == split:
            image, captions = _entry(e, path, k)
            uid = next((str(e[f]) for f in ("cocoid", "imgid") if isinstance(e.get(f), (int, str))), image)
            out.append((uid, image, captions))
    if not out:
        found = sorted({str(e.get("split")) for e in entries if isinstance(e, dict)})
        raise DataError(f"{path} has no images in split {split!r} (it has: {', '.join(found) or 'none'}); "
                        "pick one with --split")
    return out


def karpathy_root(spec: str, image_root: str | Path | None = None) -> Path:
    """The folder a Karpathy file's ``filepath/filename`` paths are below: ``image_root``, else the JSON's."""
    path = parse_caption_spec(spec)
    if path is None:
        raise DataError(f"{spec!r} is not karpathy:PATH")
    return Path(image_root).expanduser().resolve() if image_root else path.parent.resolve()


def karpathy_split(spec: str, out_dir: str | Path, *, split: str = "test", image_root: str | Path | None = None
                   ) -> Path:
    """Write the ``split`` of the Karpathy file ``spec`` names as ``out_dir/manifest.csv`` (image,caption);
    returns its path. Image paths are ``image_root/filepath/filename`` (default root: the JSON's folder);
    reading them still checks that they stay inside the data root."""
    images, root = karpathy_images(spec, split=split), karpathy_root(spec, image_root)
    rows = [(str(root / image), caption) for _, image, captions in images for caption in captions]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "manifest.csv"
    with manifest.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["image", "caption"])
        w.writerows(rows)
    return manifest


class RetrievalSplit(_ImageRows):
    """Distinct images of an image,caption manifest (rows sharing an image path are one image) with
    ``captions`` (every row's caption) and ``caption_image`` (the distinct image each belongs to).
    Items: ``image``, ``index`` (the distinct image's number)."""

    def __init__(self, manifest: str | Path, *, image_size: int, image_col: str = "image",
                 caption_col: str = "caption", delimiter: str = ",", preload: bool = False,
                 paths: PathPolicy | None = None) -> None:
        super().__init__(manifest, image_col=image_col, columns=[caption_col], image_size=image_size,
                         delimiter=delimiter, preload=False, paths=paths)
        first: dict[str, int] = {}
        pairs: Sequence[dict[str, str]] = self.rows
        self.rows = []
        for row in pairs:
            if row[image_col] not in first:
                first[row[image_col]] = len(self.rows)
                self.rows.append(row)
        self.captions = [r[caption_col] for r in pairs]
        self.caption_image = [first[r[image_col]] for r in pairs]
        if preload:
            self.preload()

    def __getitem__(self, key: Any) -> dict[str, Any] | None:
        _, i = _unpack(key)
        img = self.image_u8(i)
        return None if img is None else {"image": T.to_float(img), "index": i}
