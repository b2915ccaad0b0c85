"""Backdoor triggers: seeded, pure functions on float images in [0, 1].

Every trigger is a small frozen dataclass (its configuration) that is called on images::

    from mmrobust.data.poison import make_trigger
    trig = make_trigger("badnet", size=6, pattern="checkerboard", location="bottom_right")
    poisoned = trig(images)                    # images: (C,H,W) or (B,C,H,W) floats in [0,1]
    TRIGGERS.create(trig.name, **trig.to_dict()) == trig   # JSON round trip

Randomness. Fixed parts of a trigger (a noise pattern, a warp field) come from the trigger's own
``seed``, so they are identical on every call, for poisoning and for evaluation alike. Per-image
randomness (``location="random"``, ``pattern="random_noise"``) comes from the ``generator``
argument; without one, a fresh ``torch.Generator`` seeded from ``seed`` is used, so a call is
always deterministic. Pass one generator through successive calls to get different draws per batch.

Batches. ``trigger(batch)`` triggers every image of a ``(B,C,H,W)`` batch (this is what ASR
evaluation calls); inputs are never modified in place. Apply a trigger at the resolution the model
sees: patch sizes are in pixels and fixed patterns are drawn at the image's size.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from mmrobust.errors import ConfigError, DataError
from mmrobust.registry import TRIGGERS
from mmrobust.values import check_int, check_number, check_seed

Tensor = torch.Tensor
PATTERNS = ("checkerboard", "noise", "random_noise", "white", "black")
LOCATIONS = ("random", "bottom_right", "bottom_left", "top_right", "top_left", "center")


def _check_images(images: Tensor) -> tuple[Tensor, bool]:
    """(B,C,H,W) view of ``images`` and whether the input was a single (C,H,W) image."""
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        raise DataError("triggers take float image tensors in [0,1]; convert uint8 images with x.float() / 255")
    if images.ndim not in (3, 4):
        raise DataError(f"triggers take (C,H,W) or (B,C,H,W) images, got shape {tuple(images.shape)}")
    if images.numel() and (images.min() < 0 or images.max() > 1):
        raise DataError("trigger input is outside [0,1]; pass unnormalized images (normalization belongs in the model)")
    single = images.ndim == 3
    return (images.unsqueeze(0) if single else images), single


def _check_seed(trigger: str, seed: Any) -> None:
    check_seed(f"{trigger} seed", seed)


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _default_stream(seed: int) -> torch.Generator:
    """Per-image stream used when no generator is passed; distinct from the fixed-pattern stream."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + 0x5EED) % 2**63)


def _pattern(kind: str, shape: tuple[int, ...], gen: torch.Generator) -> Tensor:
    """A (..., C, h, w) pattern on CPU: checkerboard, uniform noise, white or black."""
    *_, h, w = shape
    if kind == "checkerboard":
        ij = torch.arange(h)[:, None] + torch.arange(w)[None, :]
        return (ij % 2).float().expand(shape).clone()
    if kind in ("noise", "random_noise"):
        return torch.rand(shape, generator=gen)
    return torch.full(shape, 1.0 if kind == "white" else 0.0)


class Trigger:
    """Base class: ``name`` (registry key), ``to_dict()`` (JSON config), ``__call__``."""

    name: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        """The configuration, such that ``TRIGGERS.create(self.name, **self.to_dict())`` rebuilds it."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        x, single = _check_images(images)
        gen = generator if generator is not None else _default_stream(getattr(self, "seed", 0))
        out = self._apply(x, gen).clamp_(0, 1)
        return out[0] if single else out

    def _apply(self, x: Tensor, gen: torch.Generator) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {what} {value!r}; choose one of: {', '.join(choices)}")


@TRIGGERS.register("badnet")
@dataclass(frozen=True)
class BadNet(Trigger):
    """BadNets patch trigger (Gu, Dolan-Gavitt & Garg 2017, "BadNets: Identifying Vulnerabilities in
    the Machine Learning Model Supply Chain").

    Pastes a ``size`` x ``size`` pixel patch onto each image.

    - ``pattern``: "checkerboard" (fixed 0/1 checker), "noise" (one fixed uniform-noise patch drawn
      from ``seed``), "random_noise" (fresh noise per image from the generator, as in CleanCLIP's
      "random" patch), "white" or "black".
    - ``location``: a corner / "center" (fixed, ``margin`` pixels from the edges) or "random"
      (uniform per image from the generator).

    Defaults follow CleanCLIP (Bansal et al. 2023): 16 px random-noise patch at a random location
    on 224 px images. Example (fixed corner checker, the synthetic demo's trigger)::

        BadNet(size=6, pattern="checkerboard", location="bottom_right")(torch.rand(8, 3, 32, 32))
    """

    name: ClassVar[str] = "badnet"
    size: int = 16
    pattern: str = "random_noise"
    location: str = "random"
    margin: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        check_int("badnet size", self.size, low=1, fix="a number of pixels, e.g. 6")
        check_int("badnet margin", self.margin, low=0, fix="pixels from the image edge")
        _check_choice("badnet pattern", self.pattern, PATTERNS)
        _check_choice("badnet location", self.location, LOCATIONS)
        _check_seed("badnet", self.seed)

    def _apply(self, x: Tensor, gen: torch.Generator) -> Tensor:
        b, c, _, _ = x.shape
        s = self.size
        if self.pattern == "random_noise":
            patches = _pattern("noise", (b, c, s, s), gen)
        else:
            patches = _pattern(self.pattern, (c, s, s), _seeded(self.seed)).expand(b, c, s, s)
        return paste_patches(x, patches, location=self.location, margin=self.margin, generator=gen, what="badnet")


def _corner(location: str, size: int, margin: int, h: int, w: int) -> tuple[int, int]:
    """Top-left pixel of a ``size`` patch at a fixed ``location``, ``margin`` pixels from the edges."""
    if location == "center":
        return (h - size) // 2, (w - size) // 2
    top = margin if location.startswith("top") else h - size - margin
    left = margin if location.endswith("left") else w - size - margin
    return top, left


def paste_patches(x: Tensor, patches: Tensor, *, location: str, margin: int = 0,
                  generator: torch.Generator | None = None, what: str = "patch") -> Tensor:
    """``x`` (B,C,H,W) with a square patch pasted into every image: ``patches`` is (C,s,s) (one for all) or
    (B,C,s,s). ``location`` is one of LOCATIONS; "random" draws a top-left corner per image from ``generator``.
    Differentiable in ``patches`` (a copy of ``x`` is written, never ``x`` itself); used by BadNet-style
    triggers and by the BadCLIP patch optimizer."""
    _check_choice(f"{what} location", location, LOCATIONS)
    b, _, h, w = x.shape
    s = patches.shape[-1]
    if s + (0 if location == "random" else margin) > min(h, w):
        raise ConfigError(f"{what} patch of {s}px (margin {margin}) does not fit {h}x{w} images; use a smaller size")
    patches = patches.to(device=x.device, dtype=x.dtype)
    out = x.clone()
    if location == "random":
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        tops = torch.randint(0, h - s + 1, (b,), generator=gen).tolist()
        lefts = torch.randint(0, w - s + 1, (b,), generator=gen).tolist()
        for i, (t, l) in enumerate(zip(tops, lefts)):
            out[i, :, t : t + s, l : l + s] = patches[i] if patches.ndim == 4 else patches
    else:
        t, l = _corner(location, s, margin, h, w)
        out[:, :, t : t + s, l : l + s] = patches
    return out


@TRIGGERS.register("blended")
@dataclass(frozen=True)
class Blended(Trigger):
    """Blended trigger (Chen, Liu, Li, Lu & Song 2017, "Targeted Backdoor Attacks on Deep Learning
    Systems Using Data Poisoning"): ``x' = (1 - alpha) * x + alpha * k``.

    ``pattern`` "noise" blends one fixed uniform-noise image drawn from ``seed`` at the image's
    size (the usual setting); "random_noise" draws a fresh key per image from the generator;
    "checkerboard" blends a pixel checker. Default alpha 0.2 as in Chen et al. Example::

        Blended(alpha=0.2, pattern="noise", seed=0)(torch.rand(3, 32, 32))
    """

    name: ClassVar[str] = "blended"
    alpha: float = 0.2
    pattern: str = "noise"
    seed: int = 0

    def __post_init__(self) -> None:
        check_number("blended alpha", self.alpha, low=0, high=1, low_open=True, fix="e.g. 0.2")
        _check_choice("blended pattern", self.pattern, ("noise", "random_noise", "checkerboard"))
        _check_seed("blended", self.seed)

    def _apply(self, x: Tensor, gen: torch.Generator) -> Tensor:
        b, c, h, w = x.shape
        if self.pattern == "random_noise":
            key = _pattern("noise", (b, c, h, w), gen)
        else:
            key = _pattern(self.pattern, (c, h, w), _seeded(self.seed))
        key = key.to(device=x.device, dtype=x.dtype)
        return (1.0 - self.alpha) * x + self.alpha * key


@TRIGGERS.register("wanet")
@dataclass(frozen=True)
class WaNet(Trigger):
    """WaNet warping trigger (Nguyen & Tran 2021, "WaNet - Imperceptible Warping-based Backdoor
    Attack", ICLR).

    A fixed, smooth warp field: a ``k`` x ``k`` grid of random 2-D offsets in [-1, 1] (drawn from
    ``seed``), normalized by its mean absolute value, upsampled bicubically to the image size, scaled
    by ``s`` / image side (in grid_sample's [-1, 1] coordinates) and added to the identity sampling
    grid, which is then clamped to [-1, 1]; images are resampled bilinearly. ``k`` controls how
    smooth the warp is (fewer control points = smoother), ``s`` its strength (about ``s / 2`` pixels
    of displacement on average). Defaults k=4, s=0.5 are the paper's. Example::

        WaNet(k=4, s=0.5, seed=0)(torch.rand(16, 3, 32, 32))

    The paper's "noise mode" (extra random warps on some training images) is a training-time
    choice and not part of the trigger.
    """

    name: ClassVar[str] = "wanet"
    k: int = 4
    s: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        check_int("wanet k (warp grid size)", self.k, low=2, high=1024, fix="e.g. 4")
        check_number("wanet s (warp strength)", self.s, low=0, low_open=True, fix="e.g. 0.5")
        _check_seed("wanet", self.seed)

    def grid(self, h: int, w: int) -> Tensor:
        """The (1, H, W, 2) sampling grid (x, y order, as ``grid_sample`` expects)."""
        ctrl = torch.rand(1, 2, self.k, self.k, generator=_seeded(self.seed)) * 2 - 1
        ctrl = ctrl / ctrl.abs().mean()
        field = F.interpolate(ctrl, size=(h, w), mode="bicubic", align_corners=True)  # (1, 2, H, W)
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        offset = torch.stack([field[0, 0] * self.s / w, field[0, 1] * self.s / h], dim=-1)
        return (torch.stack([xs, ys], dim=-1) + offset).clamp(-1, 1).unsqueeze(0)

    def _apply(self, x: Tensor, gen: torch.Generator) -> Tensor:
        b, _, h, w = x.shape
        if min(h, w) < 2:
            raise ConfigError(f"wanet needs images of at least 2x2 pixels, got {h}x{w}")
        g = self.grid(h, w).to(device=x.device, dtype=x.dtype).expand(b, h, w, 2)
        return F.grid_sample(x, g, mode="bilinear", padding_mode="border", align_corners=True)


@TRIGGERS.register("sig")
@dataclass(frozen=True)
class SIG(Trigger):
    """Sinusoidal-signal trigger (Barni, Kallas & Tondi 2019, "A New Backdoor Attack in CNNs by
    Training Set Corruption Without Label Poisoning", ICIP).

    Adds ``v(i, j) = delta * sin(2 * pi * j * frequency / W)`` along the columns to every row and
    channel, then clips to [0, 1]. Deterministic (no randomness). Defaults delta = 20/255 and
    frequency 6, the paper's values on the 0-255 scale. It was designed for clean-label
    (label-consistent) poisoning. Example::

        SIG(delta=20 / 255, frequency=6)(torch.rand(3, 32, 32))
    """

    name: ClassVar[str] = "sig"
    delta: float = 20 / 255
    frequency: float = 6.0

    def __post_init__(self) -> None:
        check_number("sig delta", self.delta, low=0, high=1, low_open=True,
                     fix="image units; 20/255 is the paper's")
        check_number("sig frequency", self.frequency, low=0, low_open=True, fix="e.g. 6")

    def _apply(self, x: Tensor, gen: torch.Generator) -> Tensor:
        w = x.shape[-1]
        cols = torch.arange(w, dtype=torch.float64)
        signal = (self.delta * torch.sin(2 * math.pi * cols * self.frequency / w)).to(device=x.device, dtype=x.dtype)
        return x + signal


def make_trigger(name: str, **params: Any) -> Trigger:
    """Build a registered trigger by name, checking parameter names and converting strings.

    ``make_trigger("badnet", size="6")`` == ``BadNet(size=6)``; an unknown parameter raises a
    one-line ConfigError listing the valid ones.
    """
    return TRIGGERS.build(name, params)


def trigger_from_dict(spec: dict[str, Any]) -> Trigger:
    """Rebuild a trigger from ``{"name": ..., "config": {...}}`` (the form stored in poison.json)."""
    if not isinstance(spec, dict) or "name" not in spec:
        raise ConfigError('a trigger spec needs a "name" (and optional "config"); e.g. {"name": "badnet", "config": {"size": 6}}')
    return make_trigger(spec["name"], **dict(spec.get("config") or {}))


def trigger_spec(trigger: Trigger) -> dict[str, Any]:
    """``{"name": ..., "config": {...}}`` for JSON records; inverse of :func:`trigger_from_dict`."""
    return {"name": trigger.name, "config": trigger.to_dict()}


def apply_trigger(images: Tensor, trigger: Trigger | dict[str, Any], *, generator: torch.Generator | None = None) -> Tensor:
    """Triggered copies of a batch (B,C,H,W) or one image (C,H,W) in [0,1]; for ASR evaluation.

    ``trigger`` is a Trigger or a spec dict (as stored in poison.json). Equivalent to
    ``trigger(images, generator)``; pass one ``generator`` across batches for per-image randomness
    that differs between batches yet repeats run to run.
    """
    trig = trigger_from_dict(trigger) if isinstance(trigger, dict) else trigger
    return trig(images, generator)
