"""Held-out captioning images of the world with their reference captions, in the caption JSONL of
:mod:`mmrobust.eval.caption` (``id``, ``image``, ``captions``): what a captioning evaluation of an LVLM
(CIDEr, clean and under attack; Schlarmann et al. 2024) reads when the user brings no COCO.

Each image is a fresh scene of :mod:`mmrobust.world.shapes` (its own seed stream, apart from the CLIP
world's and the MMR world's); its references are every caption template of the world filled for it.

Example::

    path = generate_caption_set("runs/card/data/captions", n_images=20, seed=0)   # .../captions.jsonl
"""
from __future__ import annotations

from pathlib import Path

from mmrobust.jsonio import write_canonical_jsonl
from mmrobust.values import check_int
from mmrobust.world.shapes import captions_for, image_set, render_scene, sample_scene

CAPTION_STREAM = 0x63617076  # "capv": the captioning images' seed stream


def generate_caption_set(out_dir: str | Path, *, n_images: int, seed: int, image_size: int = 32) -> Path:
    """Write ``images/NNNNNN.png`` and ``captions.jsonl`` under ``out_dir``; returns the JSONL file.
    Same arguments, same bytes."""
    check_int("n_images", n_images, low=1, fix="ask for at least one image")
    root, rng = image_set(out_dir, seed=seed, image_size=image_size, stream=CAPTION_STREAM)
    rows = []
    for i in range(n_images):
        scene = sample_scene(rng)
        image = f"images/{i:06d}.png"
        render_scene(scene, image_size=image_size, rng=rng).save(root / image, optimize=False, compress_level=1)
        rows.append({"id": f"cap/{i + 1:06d}", "image": image, "captions": captions_for(scene)})
    out = root / "captions.jsonl"
    write_canonical_jsonl(out, rows)
    return out
