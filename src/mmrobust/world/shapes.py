"""The embedded synthetic world: seeded coloured-shape scenes with captions and class labels.

The class of an image is its shape; colour, count, size, position and background vary and are
named in the captions, so a CLIP trained on it must learn shape from language supervision.
Written to disk in the formats users bring (CSV manifest; labelled CSV + classes.json).
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from mmrobust.safety import check_replace
from mmrobust.values import SEED_MAX, check_int

SHAPES: tuple[str, ...] = (
    "circle", "square", "triangle", "diamond", "star", "cross", "ring", "hexagon", "semicircle", "bar",
)
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 80, 230), "yellow": (235, 215, 40),
    "purple": (150, 60, 200), "orange": (245, 140, 30), "white": (245, 245, 245), "pink": (245, 130, 190),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (15, 15, 15), "gray": (120, 120, 120), "brown": (110, 75, 45), "teal": (20, 100, 110),
}
POSITIONS: tuple[str, ...] = ("top left", "top right", "bottom left", "bottom right", "center")
SIZES: tuple[str, ...] = ("small", "large")
COUNT_WORDS = {1: "one", 2: "two", 3: "three"}

CAPTION_TEMPLATES: tuple[str, ...] = (
    "a photo of a {size} {color} {shape}.",
    "a {color} {shape} on a {background} background.",
    "{count_word} {color} {shapes} in the {position}.",
    "a picture of {count_word} {shapes}.",
    "an image of a {shape} in the {position}.",
    "a {size} {shape} drawn in {color}.",
    "there is a {color} {shape} on {background}.",
    "a simple drawing of a {shape}.",
)
ZEROSHOT_TEMPLATES: tuple[str, ...] = ("a photo of a {}.", "a picture of a {}.", "an image of a {}.")
SS = 4  # supersampling factor for anti-aliased shapes


@dataclass(frozen=True)
class Scene:
    """One synthetic image: ``count`` copies of a shape in a colour, at a position, on a background."""

    shape: str
    color: str
    count: int
    size: str
    position: str
    background: str

    @property
    def label(self) -> int:
        return SHAPES.index(self.shape)


def image_set(out_dir: str | Path, *, seed: int, image_size: int, stream: int) -> tuple[Path, np.random.Generator]:
    """Start a generated image set: ``seed`` and ``image_size`` checked (one-line errors), ``out_dir/images``
    made, and the set's own generator ``default_rng(SeedSequence([seed, stream]))`` (one stream per kind of
    set, so sets of the same seed never share draws). Returns the root folder and the generator."""
    check_int("seed", seed, low=0, high=SEED_MAX)
    check_int("image_size", image_size, low=8, high=1024)
    root = Path(out_dir)
    (root / "images").mkdir(parents=True, exist_ok=True)
    return root, np.random.default_rng(np.random.SeedSequence([seed, stream]))


def sample_scene(rng: np.random.Generator, shapes: Sequence[str] = SHAPES) -> Scene:
    """Draw a random scene (counts 1-3, weighted towards 1)."""
    return Scene(
        shape=str(rng.choice(list(shapes))),
        color=str(rng.choice(list(COLORS))),
        count=int(rng.choice([1, 2, 3], p=[0.6, 0.25, 0.15])),
        size=str(rng.choice(SIZES)),
        position=str(rng.choice(POSITIONS)),
        background=str(rng.choice(list(BACKGROUNDS))),
    )


def caption_for(scene: Scene, rng: np.random.Generator) -> str:
    """A caption naming the shape and some attributes, from a random template."""
    tpl = CAPTION_TEMPLATES[int(rng.integers(len(CAPTION_TEMPLATES)))]
    return tpl.format(
        size=scene.size, color=scene.color, shape=scene.shape, shapes=_plural(scene.shape, scene.count),
        count_word=COUNT_WORDS[scene.count], position=scene.position, background=scene.background,
    )


def captions_for(scene: Scene) -> list[str]:
    """Every caption template filled for ``scene``: the reference captions of a captioning evaluation (COCO
    keeps five per image; the world's templates are its references)."""
    return [tpl.format(size=scene.size, color=scene.color, shape=scene.shape, shapes=_plural(scene.shape, scene.count),
                       count_word=COUNT_WORDS[scene.count], position=scene.position, background=scene.background)
            for tpl in CAPTION_TEMPLATES]


def _plural(shape: str, count: int) -> str:
    if count == 1:
        return shape
    return shape + ("es" if shape.endswith("x") else "s")


def _polygon(cx: float, cy: float, r: float, n: int, rot: float) -> list[tuple[float, float]]:
    return [(cx + r * math.cos(rot + 2 * math.pi * k / n), cy + r * math.sin(rot + 2 * math.pi * k / n)) for k in range(n)]


def _star(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    pts = []
    for k in range(10):
        rr = r if k % 2 == 0 else r * 0.42
        a = -math.pi / 2 + math.pi * k / 5
        pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
    return pts


def _box(cx: float, cy: float, r: float, fx: float = 1.0, fy: float = 1.0) -> tuple[float, float, float, float]:
    return (cx - fx * r, cy - fy * r, cx + fx * r, cy + fy * r)


def _cross(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float, fill, bg) -> None:
    d.rectangle(_box(cx, cy, r, 1.0, 0.32), fill=fill)
    d.rectangle(_box(cx, cy, r, 0.32, 1.0), fill=fill)


def _ring(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float, fill, bg) -> None:
    d.ellipse(_box(cx, cy, r), fill=fill)
    d.ellipse(_box(cx, cy, 0.5 * r), fill=bg)


DRAWERS = {  # shape -> draw(d, cx, cy, r, fill, background)
    "circle": lambda d, cx, cy, r, f, bg: d.ellipse(_box(cx, cy, r), fill=f),
    "square": lambda d, cx, cy, r, f, bg: d.rectangle(_box(cx, cy, 0.8 * r), fill=f),
    "triangle": lambda d, cx, cy, r, f, bg: d.polygon(_polygon(cx, cy + 0.15 * r, r, 3, -math.pi / 2), fill=f),
    "diamond": lambda d, cx, cy, r, f, bg: d.polygon(_polygon(cx, cy, r, 4, -math.pi / 2), fill=f),
    "star": lambda d, cx, cy, r, f, bg: d.polygon(_star(cx, cy, r), fill=f),
    "cross": _cross,
    "ring": _ring,
    "hexagon": lambda d, cx, cy, r, f, bg: d.polygon(_polygon(cx, cy, r, 6, 0.0), fill=f),
    "semicircle": lambda d, cx, cy, r, f, bg: d.pieslice((cx - r, cy - 0.6 * r, cx + r, cy + 1.4 * r), 180, 360, fill=f),
    "bar": lambda d, cx, cy, r, f, bg: d.rectangle(_box(cx, cy, r, 1.0, 0.3), fill=f),
}


def _centers(scene: Scene, size: float, rng: np.random.Generator) -> list[tuple[float, float]]:
    """Object centres inside the named region of the image (jittered, seeded)."""
    half = size / 2
    ox, oy = {"top left": (0, 0), "top right": (half, 0), "bottom left": (0, half),
              "bottom right": (half, half), "center": (size / 4, size / 4)}[scene.position]
    slots = [(0.5, 0.5)] if scene.count == 1 else [(0.3, 0.3), (0.7, 0.7), (0.7, 0.3)][: scene.count]
    jitter = rng.uniform(-0.06, 0.06, size=(len(slots), 2))
    return [(ox + half * (sx + jx), oy + half * (sy + jy)) for (sx, sy), (jx, jy) in zip(slots, jitter)]


def render_scene(scene: Scene, *, image_size: int = 32, rng: np.random.Generator | None = None) -> Image.Image:
    """Render a scene as an RGB PIL image (supersampled, then downscaled for smooth edges)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    big = image_size * SS
    bg = BACKGROUNDS[scene.background]
    img = Image.new("RGB", (big, big), bg)
    d = ImageDraw.Draw(img)
    base = (0.44 if scene.size == "large" else 0.34) * big / 2
    r = base * (1.0 if scene.count == 1 else 0.7)
    shade = rng.integers(-25, 26, size=3)
    fill = tuple(int(np.clip(c + s, 0, 255)) for c, s in zip(COLORS[scene.color], shade))
    for cx, cy in _centers(scene, big, rng):
        if scene.count == 1 and scene.size == "large":
            cx, cy = cx * 0.5 + big / 4, cy * 0.5 + big / 4  # large single objects stay inside the frame
        DRAWERS[scene.shape](d, cx, cy, r, fill, bg)
    img = img.resize((image_size, image_size), Image.Resampling.LANCZOS)
    noise = rng.normal(0, 4, size=(image_size, image_size, 3))  # sensor-like noise, seeded
    return Image.fromarray(np.clip(np.asarray(img, dtype=np.float64) + noise, 0, 255).astype(np.uint8))


@dataclass(frozen=True)
class WorldPaths:
    """Where :func:`generate_world` wrote things."""

    root: Path
    train_manifest: Path
    test_manifest: Path
    classes: Path


def _write_split(root: Path, split: str, n: int, image_size: int, rng: np.random.Generator) -> Path:
    img_dir = root / split
    img_dir.mkdir(parents=True, exist_ok=True)
    manifest = root / f"{split}.csv"
    with manifest.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "caption", "label", "shape", "color", "count", "position", "background"])
        for i in range(n):
            scene = sample_scene(rng)
            rel = f"{split}/{i:06d}.png"
            render_scene(scene, image_size=image_size, rng=rng).save(root / rel, optimize=False, compress_level=1)
            w.writerow([rel, caption_for(scene, rng), scene.shape, scene.shape, scene.color, scene.count,
                        scene.position, scene.background])
    return manifest


WORLD_FILES = ("train.csv", "test.csv", "classes.json", "world.json")
GENERATOR = "mmrobust.synthetic"  # world.json's generator: the folder is one generate_world wrote


def existing_world_files(out_dir: str | Path) -> list[str]:
    """Files in ``out_dir`` that :func:`generate_world` would replace (its CSVs, JSONs and split images)."""
    root = Path(out_dir)
    found = [name for name in WORLD_FILES if (root / name).exists()]
    for split in ("train", "test"):
        images = sorted((root / split).glob("[0-9][0-9][0-9][0-9][0-9][0-9].png")) if (root / split).is_dir() else []
        found += [f"{split}/{images[0].name} (+{len(images) - 1} more)" if len(images) > 1 else f"{split}/{p.name}"
                  for p in images[:1]]
    return found


def _check_world_args(n_train: int, n_test: int, image_size: int, seed: int) -> None:
    for name, value, low, high in (("n_train", n_train, 1, None), ("n_test", n_test, 1, None),
                                   ("image_size", image_size, 8, 1024), ("seed", seed, 0, SEED_MAX)):
        check_int(name, value, low=low, high=high, fix=f"--{name.replace('_', '-')}")


def generate_world(
    out_dir: str | Path, *, n_train: int = 20000, n_test: int = 1000, image_size: int = 32, seed: int = 0,
    progress: bool = False, overwrite: bool = True,
) -> WorldPaths:
    """Write the synthetic world: ``train.csv`` (image, caption, label, attributes), ``test.csv`` and
    ``classes.json`` (class names + zero-shot templates). Same seed, same files.

    ``overwrite=False`` (what ``mmrobust generate`` passes unless ``--overwrite``) refuses an ``out_dir``
    that already holds any of those files or split images; ``overwrite=True`` replaces them only in a folder
    whose world.json (written first) says generate_world wrote it."""
    _check_world_args(n_train, n_test, image_size, seed)
    root = Path(out_dir)
    check_replace(root, existing_world_files(root), marker="world.json", generator=GENERATOR, overwrite=overwrite)
    root.mkdir(parents=True, exist_ok=True)
    meta = {"generator": GENERATOR, "seed": seed, "n_train": n_train, "n_test": n_test, "image_size": image_size}
    (root / "world.json").write_text(json.dumps(meta, indent=2) + "\n")  # first: it marks the folder as ours
    train = _write_split(root, "train", n_train, image_size, np.random.default_rng([seed, 0]))
    test = _write_split(root, "test", n_test, image_size, np.random.default_rng([seed, 1]))
    classes = root / "classes.json"
    classes.write_text(json.dumps({"classnames": list(SHAPES), "templates": list(ZEROSHOT_TEMPLATES)}, indent=2) + "\n")
    return WorldPaths(root=root, train_manifest=train, test_manifest=test, classes=classes)
