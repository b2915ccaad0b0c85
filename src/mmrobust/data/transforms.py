"""Image transforms: PIL -> float tensor in [0,1]. Resize/crop only; NO normalization (the model does it)."""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms import v2



def to_uint8_tensor(img: Image.Image, image_size: int) -> torch.Tensor:
    """Resize the shorter side to ``image_size``, centre-crop, return uint8 (3,H,W)."""
    img = img.convert("RGB")
    if img.size != (image_size, image_size):
        w, h = img.size
        scale = image_size / min(w, h)
        img = img.resize((max(image_size, round(w * scale)), max(image_size, round(h * scale))),
                         Image.Resampling.BICUBIC)
        left, top = (img.size[0] - image_size) // 2, (img.size[1] - image_size) // 2
        img = img.crop((left, top, left + image_size, top + image_size))
    return v2.functional.pil_to_tensor(img)


def load_image(path: str | Path, size: int | None = None, *, fit: str = "crop") -> torch.Tensor:
    """The one image loader: an RGB uint8 (3,H,W) tensor from a file.

    ``size`` None keeps the image as it is; ``fit="crop"`` resizes the shorter side and centre-crops
    (evaluation and training), ``fit="stretch"`` resizes straight to a square (poisoning, as CleanCLIP
    resizes to 224 before pasting its patch).
    """
    with Image.open(path) as img:
        img.load()
        if size is None:
            return v2.functional.pil_to_tensor(img.convert("RGB"))
        if fit == "stretch":
            return v2.functional.pil_to_tensor(img.convert("RGB").resize((size, size), Image.Resampling.BICUBIC))
        return to_uint8_tensor(img, size)


def to_float(img_u8: torch.Tensor) -> torch.Tensor:
    """uint8 (…,3,H,W) -> float in [0,1]."""
    return img_u8.float().div_(255.0)
