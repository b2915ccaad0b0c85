"""Image transforms: PIL -> float tensor in [0,1]. Resize/crop only; NO normalization (the model does it)."""
from __future__ import annotations

import io
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms import v2

from mmrobust.errors import DataError
from mmrobust.safety import ensure_regular_file

MAX_PIXELS = 2**26  # ~67 megapixels (a 48 MP photo fits); more is refused before decoding (decompression bombs)
MAX_ASPECT = 50.0  # longer side / shorter side; resizing the short side of a 1 x 200,000 strip makes a huge image


class ImageError(DataError, ValueError):
    """An image file that cannot or should not be decoded (missing, not a regular file, too large, too
    elongated). Also a ValueError, so loops that skip unreadable images on ValueError skip it too."""


def check_image_size(size: tuple[int, int], path: str | Path, *, max_pixels: int = MAX_PIXELS,
                     max_aspect: float = MAX_ASPECT) -> None:
    """Refuse (ImageError) an empty image, more than ``max_pixels`` pixels or an aspect ratio above
    ``max_aspect``: checked on the header, before anything is decoded."""
    w, h = size
    if w < 1 or h < 1:
        raise ImageError(f"image {path} is empty ({w} x {h} pixels); replace or drop it")
    if w * h > max_pixels:
        raise ImageError(f"image {path} has {w} x {h} = {w * h:,} pixels, more than the {max_pixels:,} allowed "
                         "(a decompression bomb?); downscale it or drop the row")
    if max(w, h) / min(w, h) > max_aspect:
        raise ImageError(f"image {path} is {w} x {h} pixels, an aspect ratio above {max_aspect:g}:1; "
                         "crop it or drop the row")


def to_8bit(img: Image.Image) -> Image.Image:
    """16-bit and 32-bit integer images scaled to 8 bits (PIL's own conversion clips them at 255, so
    almost every pixel saturates). ``I;16*`` modes are 16-bit: value / 257. Mode ``I`` is read as
    16-bit when it holds values above 255, else as 8-bit values."""
    if img.mode.startswith("I;16"):
        img = img.convert("I")
    elif img.mode != "I":
        return img
    _, hi = img.getextrema()
    if hi > 255:
        img = img.point(lambda v: v * (1 / 257) + 0.5)  # +0.5: round instead of truncating
    return img.convert("L")


def to_uint8_tensor(img: Image.Image, image_size: int) -> torch.Tensor:
    """Resize the shorter side to ``image_size``, centre-crop, return uint8 (3,H,W)."""
    img = to_8bit(img).convert("RGB")
    if img.size != (image_size, image_size):
        w, h = img.size
        scale = image_size / min(w, h)
        img = img.resize((max(image_size, round(w * scale)), max(image_size, round(h * scale))),
                         Image.Resampling.BICUBIC)
        left, top = (img.size[0] - image_size) // 2, (img.size[1] - image_size) // 2
        img = img.crop((left, top, left + image_size, top + image_size))
    return v2.functional.pil_to_tensor(img)


def _regular_file(path: str | Path) -> Path:
    """``path`` if it is a regular file: a named pipe would block the open forever."""
    try:
        return ensure_regular_file(path, "image")
    except DataError as e:
        raise ImageError(str(e)) from None


def load_image(path: str | Path, size: int | None = None, *, fit: str = "crop") -> torch.Tensor:
    """The one image loader: an RGB uint8 (3,H,W) tensor from a regular file.

    ``size`` None keeps the image as it is; ``fit="crop"`` resizes the shorter side and centre-crops
    (evaluation and training), ``fit="stretch"`` resizes straight to a square (poisoning, as CleanCLIP
    resizes to 224 before pasting its patch). 16-bit images are scaled to 8 bits. Refuses (ImageError,
    a DataError) pipes and devices, and images too large or too elongated, before decoding them.
    """
    with Image.open(_regular_file(path)) as img:
        return _from_pil(img, path, size, fit)


def decode_image(data: bytes, what: str, size: int | None = None, *, fit: str = "crop") -> torch.Tensor:
    """:func:`load_image` for encoded bytes (e.g. a webdataset shard member); ``what`` names them in errors.
    Raises ImageError for bytes PIL cannot identify, and the same size checks as for files."""
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(f"{what} is not an image PIL can read; replace or drop the sample") from None
    with img:
        return _from_pil(img, what, size, fit)


def _from_pil(img: Image.Image, what: str | Path, size: int | None, fit: str) -> torch.Tensor:
    check_image_size(img.size, what)
    img.load()
    if size is None:
        return v2.functional.pil_to_tensor(to_8bit(img).convert("RGB"))
    if fit == "stretch":
        img = to_8bit(img).convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
        return v2.functional.pil_to_tensor(img)
    return to_uint8_tensor(img, size)


def to_float(img_u8: torch.Tensor) -> torch.Tensor:
    """uint8 (…,3,H,W) -> float in [0,1]."""
    return img_u8.float().div_(255.0)
