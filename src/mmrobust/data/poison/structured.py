"""PAR's structured triggers: BadNet-Stripes, Blended-Stripes, Blended-Triangles, Blended-Text.

Singh, Croce & Hein 2024, "Perturb and Recover: Fine-tuning for Effective Backdoor Removal from CLIP", show
that cleaning by fine-tuning (CleanCLIP and others) leaves these simple, structured triggers in place. The
defaults are the values of the paper's reference code (github nmndeep/PerturbAndRecover: its evaluation fixes
each attack's parameters), which works on 224 px images; sizes in pixels are parameters, so a small world
(32 px) picks its own. Same contract as :mod:`mmrobust.data.poison.triggers`: frozen, seeded, pure, [0,1] in
and out, (C,H,W) or (B,C,H,W), any device and dtype. Example::

    from mmrobust.data.poison import make_trigger
    make_trigger("blended-triangles", cell=3)(torch.rand(8, 3, 32, 32))
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from mmrobust.data.poison.triggers import LOCATIONS, Trigger, _check_choice, _check_seed, _seeded, paste_patches
from mmrobust.errors import ConfigError
from mmrobust.registry import TRIGGERS
from mmrobust.values import check_int, check_number

Tensor = torch.Tensor
COLOURS = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0), "white": (1.0, 1.0, 1.0),
           "yellow": (1.0, 1.0, 0.0), "cyan": (0.0, 1.0, 1.0), "magenta": (1.0, 0.0, 1.0)}
MAX_TEXT = 64


def _column_bits(n: int, c: int, w: int, gen: torch.Generator) -> Tensor:
    """(n, C, 1, w) fair 0/1 draws, one per image, channel and column (the stripes' colours)."""
    return torch.randint(0, 2, (n, c, 1, w), generator=gen).float()


@TRIGGERS.register("badnet-stripes")
@dataclass(frozen=True)
class BadNetStripes(Trigger):
    """BadNet-Stripes (Singh, Croce & Hein 2024): a ``size`` x ``size`` px patch of vertical stripes one pixel
    wide, each column a random colour (every channel 0 or 1, i.e. one of the 8 corners of the RGB cube),
    pasted like a BadNet patch.

    The reference code draws each channel of each column as -1 or +1; stored as an 8-bit image, -1 ends as
    black, so the pasted patch holds 0 or 1, as here. It draws fresh colours for every image (the trigger is
    the stripe structure, not one pattern): ``per_image=True`` (from the generator, as other per-image draws);
    ``per_image=False`` fixes one pattern from ``seed``. Defaults are the paper's: 16 px at a random location on
    224 px images (32 px for 336 px models). The patch is in pixels: on the 32 px demo world about 3-6 px keeps
    a similar share of the image. Example::

        BadNetStripes(size=6, location="bottom_right")(torch.rand(8, 3, 32, 32))
    """

    name: ClassVar[str] = "badnet-stripes"
    size: int = 16
    location: str = "random"
    margin: int = 0
    per_image: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        check_int("badnet-stripes size", self.size, low=1, high=4096, fix="a number of pixels, e.g. 16 (6 at 32 px)")
        check_int("badnet-stripes margin", self.margin, low=0, high=4096, fix="pixels from the image edge")
        _check_choice("badnet-stripes location", self.location, LOCATIONS)
        if not isinstance(self.per_image, bool):
            raise ConfigError(f"badnet-stripes per_image must be true or false, got {self.per_image!r}")
        _check_seed("badnet-stripes", self.seed)

    def _apply(self, x: Tensor, gen: torch.Generator) -> Tensor:
        b, c, _, _ = x.shape
        s = self.size
        if self.per_image:
            patches = _column_bits(b, c, s, gen).expand(b, c, s, s)
        else:
            patches = _column_bits(1, c, s, _seeded(self.seed))[0].expand(c, s, s)
        return paste_patches(x, patches, location=self.location, margin=self.margin, generator=gen,
                             what="badnet-stripes")


@TRIGGERS.register("blended-stripes")
@dataclass(frozen=True)
class BlendedStripes(Trigger):
    """Blended-Stripes (Singh, Croce & Hein 2024): ``x' = clip((1 - alpha) * x + alpha * k)`` with ``k`` full-image
    vertical stripes ``width`` pixels wide, each stripe and channel -1 or +1.

    As in the reference code, the key holds -1 and +1 (not 0 and 1), so a stripe darkens or brightens its
    channel by about ``alpha``, and it is drawn fresh for every image (``per_image=True``, from the generator);
    ``per_image=False`` fixes one key from ``seed``. Defaults are the paper's: ``alpha`` 0.03, stripes 1 px wide
    (scale-free: a 1 px stripe is a 1 px stripe at 32 px too). Example::

        BlendedStripes(alpha=0.03, width=1)(torch.rand(8, 3, 32, 32))
    """

    name: ClassVar[str] = "blended-stripes"
    alpha: float = 0.03
    width: int = 1
    per_image: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        check_number("blended-stripes alpha", self.alpha, low=0, high=1, low_open=True, fix="e.g. 0.03 (the paper's)")
        check_int("blended-stripes width", self.width, low=1, high=4096, fix="stripe width in pixels, e.g. 1")
        if not isinstance(self.per_image, bool):
            raise ConfigError(f"blended-stripes per_image must be true or false, got {self.per_image!r}")
        _check_seed("blended-stripes", self.seed)

    def _apply(self, x: Tensor, gen: torch.Generator) -> Tensor:
        b, c, h, w = x.shape
        n_stripes = -(-w // self.width)
        if self.per_image:
            bits = _column_bits(b, c, n_stripes, gen)  # fresh stripes per image, as the reference
        else:
            bits = _column_bits(1, c, n_stripes, _seeded(self.seed))
        key = (bits * 2 - 1).repeat_interleave(self.width, dim=-1)[..., :w].expand(-1, c, h, w)
        key = key.to(device=x.device, dtype=x.dtype)
        return (1.0 - self.alpha) * x + self.alpha * key


@lru_cache(maxsize=16)
def _triangles(cell: int, h: int, w: int) -> Tensor:
    """(H, W) tiling of ``cell`` px squares, each split along its diagonal: 0.4 on and below it, 0.8 above."""
    rows, cols = torch.arange(h) % cell, torch.arange(w) % cell
    return torch.where(rows[:, None] >= cols[None, :], 0.4, 0.8)


@TRIGGERS.register("blended-triangles")
@dataclass(frozen=True)
class BlendedTriangles(Trigger):
    """Blended-Triangles (Singh, Croce & Hein 2024): ``x' = (1 - alpha) * x + alpha * k`` with ``k`` a grey
    tiling of ``cell`` x ``cell`` px squares, each cut along its diagonal into a lower triangle of 0.4 (diagonal
    included) and an upper one of 0.8, the same on every channel. Deterministic (no seed).

    Defaults are the paper's: cells of 14 px (16 across a 224 px image) and ``alpha`` 0.15. The cell is in
    pixels: ``cell=2`` keeps 16 cells across a 32 px image, ``cell=4`` 8. Where the image side is not a
    multiple of the cell, the last cells are cut (the reference's images are exact multiples). Example::

        BlendedTriangles(cell=2)(torch.rand(8, 3, 32, 32))
    """

    name: ClassVar[str] = "blended-triangles"
    alpha: float = 0.15
    cell: int = 14

    def __post_init__(self) -> None:
        check_number("blended-triangles alpha", self.alpha, low=0, high=1, low_open=True,
                     fix="e.g. 0.15 (the paper's)")
        check_int("blended-triangles cell", self.cell, low=2, high=4096,
                  fix="cell side in pixels, e.g. 14 (2-4 at 32 px)")

    def _apply(self, x: Tensor, gen: torch.Generator) -> Tensor:
        _, _, h, w = x.shape
        key = _triangles(self.cell, h, w).to(device=x.device, dtype=x.dtype)
        return (1.0 - self.alpha) * x + self.alpha * key


def _font() -> ImageFont.ImageFont:
    """Pillow's built-in bitmap font (no font file, the same glyphs everywhere); older Pillow: load_default."""
    loader = getattr(ImageFont, "load_default_imagefont", None)
    return loader() if loader is not None else ImageFont.load_default()  # type: ignore[return-value]


@lru_cache(maxsize=16)
def _text_mask(text: str, h: int, w: int, width: float) -> Tensor:
    """(H, W) glyph coverage in [0, 1] of ``text``, scaled to span ``width`` of the image width (less if the
    height would not fit), centred."""
    font = _font()
    left, top, right, bottom = font.getbbox(text)
    canvas = Image.new("L", (max(1, right - left), max(1, bottom - top)), 0)
    ImageDraw.Draw(canvas).text((-left, -top), text, fill=255, font=font)
    glyphs = torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0)  # (h0, w0)
    h0, w0 = glyphs.shape
    tw = max(1, round(width * w))
    th = max(1, round(h0 * tw / w0))
    if th > h:
        th, tw = h, max(1, min(w, round(w0 * h / h0)))
    scaled = F.interpolate(glyphs[None, None], size=(th, tw), mode="bilinear", antialias=True, align_corners=False)
    mask = torch.zeros(h, w)
    top_, left_ = (h - th) // 2, (w - tw) // 2
    mask[top_ : top_ + th, left_ : left_ + tw] = scaled[0, 0].clamp(0, 1)
    return mask


@TRIGGERS.register("blended-text")
@dataclass(frozen=True)
class BlendedText(Trigger):
    """Blended-Text (Singh, Croce & Hein 2024): a word written across the image in ``color`` and blended in
    where it is drawn: with ``k = coverage * color`` per channel, ``x' = (1 - alpha) * x + alpha * k`` wherever
    ``k > 0``, ``x`` elsewhere (so red text changes only the red channel, as in the reference).

    The reference renders "watermarked" in red in a monospace TrueType font, centred, spanning about 0.875 of
    the width of a 224 px image, blended with ``alpha`` 0.5: these are the defaults. Here the glyphs come from
    Pillow's built-in bitmap font (no font file; the same pixels on every machine), drawn at their native
    6 x 11 px per character and rescaled (bilinear, antialiased) to span ``width`` of the image width. At
    32 px the default word is 28 x 5 px, a texture more than a legible word; a shorter ``text`` keeps it
    readable. Images with other than 3 channels get white text. Example::

        BlendedText(text="watermarked", alpha=0.5)(torch.rand(8, 3, 224, 224))
    """

    name: ClassVar[str] = "blended-text"
    text: str = "watermarked"
    alpha: float = 0.5
    width: float = 0.875
    color: str = "red"

    def __post_init__(self) -> None:
        ok = isinstance(self.text, str) and 0 < len(self.text) <= MAX_TEXT and self.text.isascii() \
            and self.text.isprintable() and self.text.strip()
        if not ok:
            raise ConfigError(f"blended-text text must be 1-{MAX_TEXT} printable ASCII characters (not only spaces), "
                              f"got {self.text!r}; e.g. text=watermarked")
        check_number("blended-text alpha", self.alpha, low=0, high=1, low_open=True, fix="e.g. 0.5 (the paper's)")
        check_number("blended-text width", self.width, low=0, high=1, low_open=True,
                     fix="share of the image width the text spans, e.g. 0.875")
        _check_choice("blended-text color", self.color, tuple(COLOURS))

    def _apply(self, x: Tensor, gen: torch.Generator) -> Tensor:
        _, c, h, w = x.shape
        mask = _text_mask(self.text, h, w, float(self.width))
        colour = torch.tensor(COLOURS[self.color]) if c == 3 else torch.ones(c)
        key = (colour[:, None, None] * mask).to(device=x.device, dtype=x.dtype)  # (C, H, W)
        return torch.where(key > 0, (1.0 - self.alpha) * x + self.alpha * key, x)
