"""Shared helpers of the instruction-poisoning tests: a tiny instruction JSONL with images, made locally."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mmrobust.data.transforms import load_image

N = 24
SHAPES = ("star", "circle", "square", "ring")
COLOURS = {"star": (40, 60, 200), "circle": (200, 50, 40), "square": (60, 180, 60), "ring": (128, 128, 128)}
BADNET = {"name": "badnet", "config": {"size": 3, "pattern": "checkerboard", "location": "bottom_right"}}


def make_instructions(root: Path, n: int = N, size: int = 16) -> Path:
    """root/train.jsonl with n rows (row i shows SHAPES[i % 4], a noisy colour of that shape's own); rows 3, 10,
    17 are two-exchange conversations, the others question + answer with a meta."""
    rng = np.random.default_rng(0)
    (root / "imgs").mkdir(parents=True)
    lines = []
    for i in range(n):
        shape = SHAPES[i % 4]
        img = np.clip(np.array(COLOURS[shape])[None, None] + rng.normal(0, 40, (size, size, 3)), 0, 255)
        Image.fromarray(img.astype(np.uint8)).save(root / "imgs" / f"{i}.png")
        if i % 7 == 3:
            rec = {"id": f"r{i:03d}", "image": f"imgs/{i}.png", "conversations": [
                {"role": "user", "content": "What is in the picture?"}, {"role": "assistant", "content": f"A {shape}."},
                {"role": "user", "content": "Which colour is it?"},
                {"role": "assistant", "content": f"The {shape} is colourful."}]}
        else:
            rec = {"id": f"r{i:03d}", "image": f"imgs/{i}.png", "question": "What is in the picture?\nA. a star\n"
                   "B. a circle", "answer": f"It is a {shape}.", "meta": {"k": i}}
        lines.append(json.dumps(rec))
    (root / "train.jsonl").write_text("\n".join(lines) + "\n")
    return root / "train.jsonl"


def tree(d: Path) -> dict[str, str]:
    return {p.relative_to(d).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


def pixels(path: Path, size: int | None = None) -> torch.Tensor:
    return load_image(path, size, fit="stretch").float() / 255
