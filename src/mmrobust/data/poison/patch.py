"""A patch trigger read from an image file: an optimized patch (BadCLIP, ``mmrobust make-trigger``) or any other.

The trigger's config names the file and its sha256, so ``poison.json`` records exactly which patch was pasted;
a file that changed since (or went missing) is refused with a one-line DataError when the trigger is built.
Example::

    from mmrobust.data.poison import make_trigger
    trig = make_trigger("patch", file="runs/badclip/patch.png", location="bottom_right")
    trig.sha256, trig.size          # filled in from the file when not given
    poisoned = trig(images)         # (B,C,H,W) in [0,1], only the patch region changes
"""
from __future__ import annotations

import hashlib
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from PIL import Image

from mmrobust.data.poison.triggers import LOCATIONS, Trigger, _check_choice, _check_seed, paste_patches
from mmrobust.data.transforms import decode_image
from mmrobust.errors import ConfigError, DataError
from mmrobust.registry import TRIGGERS
from mmrobust.safety import ensure_regular_file, resolve_path
from mmrobust.values import check_int

Tensor = torch.Tensor
MAX_PATCH_BYTES = 64 << 20  # a patch is a few KB; refuse to hash and decode anything huge
SHA256 = re.compile(r"[0-9a-f]{64}")


def to_uint8(patch: Tensor) -> Tensor:
    """(C,s,s) floats in [0,1] -> uint8 on CPU, rounded to the nearest of the 256 levels (what a PNG stores)."""
    return patch.detach().float().cpu().clamp(0, 1).mul(255).round().to(torch.uint8)


def quantize(patch: Tensor) -> Tensor:
    """``patch`` as it will be pasted once saved as an 8-bit PNG (same device and dtype)."""
    return to_uint8(patch).to(device=patch.device, dtype=patch.dtype) / 255


def save_patch_png(patch: Tensor, path: str | Path) -> str:
    """Write a (3,s,s) patch in [0,1] as an 8-bit RGB PNG with fixed encoder settings (same pixels, same bytes;
    written to a temporary file and renamed, so a kill leaves no half file). Returns the file's sha256."""
    if patch.ndim != 3 or patch.shape[0] != 3:
        raise ConfigError(f"a patch to save must be (3, s, s), got shape {tuple(patch.shape)}")
    buf = io.BytesIO()
    Image.fromarray(to_uint8(patch).permute(1, 2, 0).contiguous().numpy()).save(
        buf, format="PNG", optimize=False, compress_level=6)
    data, path = buf.getvalue(), Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()


def read_patch(path: str | Path, sha256: str = "") -> tuple[Tensor, str]:
    """(3,h,w) float patch in [0,1] and the file's sha256; DataError (one line) for a missing or unreadable file,
    or one whose sha256 is not ``sha256`` (when given)."""
    file = ensure_regular_file(path, "patch file")
    if file.stat().st_size > MAX_PATCH_BYTES:
        raise DataError(f"patch file {file} is larger than {MAX_PATCH_BYTES >> 20} MB; a patch is a small image")
    data = file.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if sha256 and digest != sha256:
        raise DataError(f"patch file {file} has sha256 {digest[:16]}..., not the recorded {sha256[:16]}...: it changed "
                        "since the trigger was recorded; restore the original file (or drop sha256 to accept it)")
    return decode_image(data, f"patch file {file}").float() / 255, digest


@TRIGGERS.register("patch")
@dataclass(frozen=True)
class Patch(Trigger):
    """A patch image pasted like a BadNet patch (Gu et al. 2017); the way an optimized BadCLIP patch (Liang et
    al., CVPR 2024, "BadCLIP: Dual-Embedding Guided Backdoor Attack on Multimodal Contrastive Learning") poisons
    data.

    - ``file``: the image (an 8-bit PNG from ``mmrobust make-trigger badclip``; any RGB image Pillow reads).
      Stored as an absolute path, so a record works from any folder.
    - ``sha256``: the file's hash; checked when given, filled in when not (so ``poison.json`` records it).
    - ``size``: side in pixels the patch is pasted at; 0 = the file's own (square) size, else the patch is
      resized (bilinear, antialiased) once when the trigger is built. Filled in with the file's size.
    - ``location``, ``margin``: as BadNet ("random" draws a corner per image from the generator; ``seed``
      seeds the default stream).

    Example::

        Patch(file="runs/badclip/patch.png", location="bottom_right")(torch.rand(8, 3, 32, 32))
    """

    name: ClassVar[str] = "patch"
    file: str = ""
    sha256: str = ""
    size: int = 0
    location: str = "bottom_right"
    margin: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.file, str) or not self.file.strip():
            raise ConfigError("the patch trigger needs file=PATH, an image of the patch (e.g. the patch.png that "
                              "mmrobust make-trigger badclip wrote)")
        if not isinstance(self.sha256, str) or (self.sha256 and not SHA256.fullmatch(self.sha256.lower())):
            raise ConfigError(f"patch sha256 must be 64 hex digits (or empty to take the file's), got {self.sha256!r}")
        check_int("patch size", self.size, low=0, high=4096, fix="pixels; 0 keeps the file's size")
        check_int("patch margin", self.margin, low=0, high=4096, fix="pixels from the image edge")
        _check_choice("patch location", self.location, LOCATIONS)
        _check_seed("patch", self.seed)
        file = resolve_path(Path(self.file).expanduser(), "patch file")
        patch, digest = read_patch(file, self.sha256.lower())
        _, h, w = patch.shape
        if self.size == 0 and h != w:
            raise ConfigError(f"patch file {file} is {w}x{h} px, not square; give size=N to paste it as N x N px")
        size = self.size or h
        if size != h or size != w:
            patch = F.interpolate(patch[None], size=(size, size), mode="bilinear", antialias=True,
                                  align_corners=False)[0].clamp(0, 1)
        for key, value in (("file", str(file)), ("sha256", digest), ("size", size), ("_patch", patch)):
            object.__setattr__(self, key, value)

    @property
    def patch(self) -> Tensor:
        """The (3, size, size) patch in [0,1] (CPU float32) that is pasted."""
        return self._patch  # type: ignore[attr-defined]

    def _apply(self, x: Tensor, gen: torch.Generator) -> Tensor:
        if x.shape[1] != 3:
            raise ConfigError(f"the patch trigger pastes an RGB patch; images have {x.shape[1]} channel(s), not 3")
        return paste_patches(x, self.patch, location=self.location, margin=self.margin, generator=gen, what="patch")
