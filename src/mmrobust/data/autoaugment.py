"""Seeded, batched AutoAugment (Cubuk et al., CVPR 2019; ImageNet policy) for uint8 image batches.

torchvision's AutoAugment draws its policy from the global torch RNG and runs image by image;
CleanCLIP and PAR need one augmented view per sample per step, reproducibly. Here each sample's
policy draw comes from its own seed, and images that share an (op, magnitude) are transformed
together with torchvision's functional ops, so a batch costs a few dozen op calls, not one
pipeline per image. Magnitude bins and op semantics follow torchvision's AutoAugment.
"""
from __future__ import annotations

import math
import random
from collections import defaultdict
from typing import Callable, Sequence

import torch
from torchvision.transforms import AutoAugment, AutoAugmentPolicy, InterpolationMode
from torchvision.transforms.v2 import functional as F

POLICIES = AutoAugment(AutoAugmentPolicy.IMAGENET).policies  # 25 sub-policies of 2 (op, prob, bin)
BINS = 10
NEAREST = InterpolationMode.NEAREST


def _affine(**kw) -> Callable[[torch.Tensor, float], torch.Tensor]:
    def op(img: torch.Tensor, m: float) -> torch.Tensor:
        args = {"angle": 0.0, "translate": [0, 0], "scale": 1.0, "shear": [0.0, 0.0], "interpolation": NEAREST}
        args.update({k: f(m) for k, f in kw.items()})
        return F.affine(img, **args)

    return op


OPS: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "ShearX": _affine(shear=lambda m: [math.degrees(math.atan(m)), 0.0], center=lambda m: [0, 0]),
    "ShearY": _affine(shear=lambda m: [0.0, math.degrees(math.atan(m))], center=lambda m: [0, 0]),
    "TranslateX": _affine(translate=lambda m: [int(m), 0]),
    "TranslateY": _affine(translate=lambda m: [0, int(m)]),
    "Rotate": lambda img, m: F.rotate(img, m, interpolation=NEAREST),
    "Brightness": lambda img, m: F.adjust_brightness(img, 1.0 + m),
    "Color": lambda img, m: F.adjust_saturation(img, 1.0 + m),
    "Contrast": lambda img, m: F.adjust_contrast(img, 1.0 + m),
    "Sharpness": lambda img, m: F.adjust_sharpness(img, 1.0 + m),
    "Posterize": lambda img, m: F.posterize(img, int(m)),
    "Solarize": lambda img, m: F.solarize(img, m),
    "AutoContrast": lambda img, m: F.autocontrast(img),
    "Equalize": lambda img, m: F.equalize(img),
    "Invert": lambda img, m: F.invert(img),
}
SIGNED = {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast", "Sharpness"}


def magnitude(op: str, bin_: int, size: tuple[int, int]) -> float:
    """The magnitude of bin ``bin_`` of ``op`` (torchvision's AutoAugment augmentation space)."""
    h, w = size
    top = {"ShearX": 0.3, "ShearY": 0.3, "TranslateX": 150 / 331 * w, "TranslateY": 150 / 331 * h, "Rotate": 30.0,
           "Brightness": 0.9, "Color": 0.9, "Contrast": 0.9, "Sharpness": 0.9}
    if op in top:
        return top[op] * bin_ / (BINS - 1)
    if op == "Posterize":
        return float(8 - round(bin_ / ((BINS - 1) / 4)))
    if op == "Solarize":
        return 255.0 * (1 - bin_ / (BINS - 1))
    return 0.0


def draw(rng: random.Random) -> list[tuple[str, float, int]]:
    """One sample's draw: the (op, sign, bin) steps of a random sub-policy that fire (each with its p)."""
    steps = []
    for op, p, bin_ in POLICIES[rng.randrange(len(POLICIES))]:
        fire, sign = rng.random() <= p, -1.0 if rng.random() < 0.5 else 1.0
        if fire:
            steps.append((op, sign if op in SIGNED else 1.0, bin_ or 0))
    return steps


def autoaugment_batch(images: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
    """AutoAugment each uint8 image (B,3,H,W) with the policy drawn from its own seed. Same seeds, same views."""
    out = images.clone()
    plans = [draw(random.Random(s)) for s in seeds]
    size = (images.shape[-2], images.shape[-1])
    for slot in range(2):
        groups: dict[tuple[str, float], list[int]] = defaultdict(list)
        for i, plan in enumerate(plans):
            if slot < len(plan):
                op, sign, bin_ = plan[slot]
                groups[(op, sign * magnitude(op, bin_, size))].append(i)
        for (op, mag), idx in groups.items():
            sel = torch.tensor(idx)
            out[sel] = OPS[op](out[sel], mag)
    return out
