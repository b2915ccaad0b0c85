"""Image-folder datasets users already have: one sub-folder per class (ImageNet's layout), as a labelled
evaluation split.

``imagenet:/data/imagenet/val`` reads ImageNet-1k's validation folders (class folders named by WordNet id,
``n01440764`` ...): labels are the standard 1k indices (the synset order timm ships,
``timm.data.ImageNetInfo``), class names and prompts are the OpenAI CLIP ones (Radford et al. 2021, the
names and 80 templates of their zero-shot ImageNet notebook, as ``open_clip.zero_shot_metadata`` ships
them). A folder holding only some classes keeps their standard indices. ``folder:/data/pets`` reads any
class-folder tree: classes in sorted folder order, names from the folder names (``_`` as spaces), the
template ``"a photo of a {}."``.

:func:`folder_split` writes ``manifest.csv`` (absolute image paths, integer labels, a caption
"a photo of a {class}." for training) and ``classes.json``
into a folder the tool owns and returns them with the tree as the data root, so every evaluation that
takes a CSV + classes.json reads the tree unchanged; an image that a symlink points out of the tree is
refused.

Example::

    manifest, classes, root = folder_split("imagenet:/data/imagenet/val", "runs/eval/data")
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from mmrobust.errors import DataError
from mmrobust.safety import resolve_path

KINDS = ("imagenet", "folder")
CAPTION = "a photo of a {}."  # the caption column, for training on a class-folder tree (FARE, TeCoA, clip)
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"})


def parse_folder_spec(text: str) -> tuple[str, Path] | None:
    """``("imagenet" | "folder", path)`` for ``imagenet:PATH`` / ``folder:PATH``; None for anything else
    (a CSV manifest)."""
    kind, sep, rest = str(text).partition(":")
    if not sep or kind not in KINDS:
        return None
    if not rest:
        raise DataError(f"--data {text!r} names no folder; write {kind}:/path/to/folder")
    return kind, Path(rest).expanduser()


def imagenet_classes() -> tuple[list[str], list[str], list[str]]:
    """(WordNet ids in index order, OpenAI CLIP class names, OpenAI CLIP templates) of ImageNet-1k."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES
    from timm.data import ImageNetInfo

    wnids = list(ImageNetInfo().label_names())
    templates = [t("{}") for t in OPENAI_IMAGENET_TEMPLATES]  # open_clip ships them as callables
    if len(wnids) != 1000 or len(IMAGENET_CLASSNAMES) != 1000:
        raise DataError(f"the installed timm / open_clip ImageNet metadata has {len(wnids)} synsets and "
                        f"{len(IMAGENET_CLASSNAMES)} names, not 1000; reinstall timm and open_clip_torch")
    return wnids, list(IMAGENET_CLASSNAMES), templates


def _class_folders(root: Path) -> list[Path]:
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a folder; give the folder holding one "
                        "sub-folder per class")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(f"{root} has no class sub-folders; put each class's images in a folder of its own")
    return folders


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _inside(path: Path, root: Path) -> Path:
    """``path`` resolved; a DataError when a symlink takes it out of ``root`` (never read outside the tree)."""
    full = resolve_path(path, "image")
    if root not in full.parents:
        raise DataError(f"{path} points outside {root} (a symlink?); copy the image into the tree or remove the link")
    return full


def folder_split(spec: str, out_dir: str | Path, *, write: bool = True) -> tuple[Path, Path, Path]:
    """Write ``manifest.csv`` + ``classes.json`` for the folder ``spec`` into ``out_dir``; returns
    (manifest, classes, data root). Class folders without images are skipped; no image at all is an error.
    ``write=False`` checks the tree and returns the paths only (ranks other than 0 under torchrun)."""
    parsed = parse_folder_spec(spec)
    if parsed is None:
        raise DataError(f"{spec!r} is not imagenet:PATH or folder:PATH")
    kind, root = parsed
    folders, inside, out = _class_folders(root), root.resolve(), Path(out_dir)
    if out.resolve() == inside or inside in out.resolve().parents:
        raise DataError(f"the output folder {out} is inside the image folder {root}; choose an --out outside it")
    if kind == "imagenet":
        wnids, names, templates = imagenet_classes()
        known = set(wnids)
        unknown = [f.name for f in folders if f.name not in known]
        if unknown:
            raise DataError(f"{root}: folder {unknown[0]!r} is not an ImageNet-1k WordNet id (like n01440764); use "
                            "the validation set's class folders, or folder:PATH for another class-folder tree")
        label = {w: i for i, w in enumerate(wnids)}
        labels = [label[f.name] for f in folders]
    else:
        names, templates = [f.name.replace("_", " ") for f in folders], ["a photo of a {}."]
        labels = list(range(len(folders)))
    rows = [(str(_inside(p, inside)), y, CAPTION.format(names[y])) for f, y in zip(folders, labels) for p in _images(f)]
    if not rows:
        raise DataError(f"{root}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in its class folders")
    manifest, classes = out / "manifest.csv", out / "classes.json"
    if not write:
        return manifest, classes, inside
    out.mkdir(parents=True, exist_ok=True)
    with manifest.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["image", "label", "caption"])
        w.writerows(rows)
    classes.write_text(json.dumps({"classnames": names, "templates": templates, "source": spec}, indent=1) + "\n")
    return manifest, classes, inside
