"""PAR's training view (Singh, Croce & Hein 2024): additive noise and a small erased square.

The PerturbAndRecover reference trains on this view, not on AutoAugment (its data loader's comment
says "autoaugment", but the transform it builds is the model's resize/crop, then with p=0.5 added
noise clip(N(0, 0.2^2), 0, 1) and a clip to [0,1], then with p=0.5 a random erasing of a square of
0.5% to 1% of the image area filled with 0 after normalization, i.e. the normalization mean).
Here the model normalizes inside, so the fill is the mean in [0,1] pixel units. Colours, shapes and
positions survive, so the view still matches its caption; AutoAugment's invert, solarize and
colour ops do not keep colour words true on the synthetic world.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)


def noise_erase(image: torch.Tensor, gen: torch.Generator, *, noise_std: float = 0.2, p_noise: float = 0.5,
                p_erase: float = 0.5, area: tuple[float, float] = (0.005, 0.01),
                fill: Sequence[float] = OPENAI_MEAN) -> torch.Tensor:
    """One PAR view of a float image (3,H,W) in [0,1], drawn from ``gen``; returns a new tensor in [0,1]."""
    out = image.clone()
    _, h, w = out.shape
    if torch.rand((), generator=gen) < p_noise:
        noise = (torch.randn(out.shape, generator=gen) * noise_std).clamp_(0, 1)
        out.add_(noise).clamp_(0, 1)
    if torch.rand((), generator=gen) < p_erase:
        frac = area[0] + (area[1] - area[0]) * float(torch.rand((), generator=gen))
        side = max(1, round(math.sqrt(frac * h * w)))
        if side < min(h, w):
            top = int(torch.randint(0, h - side + 1, (), generator=gen))
            left = int(torch.randint(0, w - side + 1, (), generator=gen))
            out[:, top:top + side, left:left + side] = torch.tensor(fill, dtype=out.dtype)[:, None, None]
    return out


def noise_erase_batch(images: torch.Tensor, seeds: Sequence[int], **kw) -> torch.Tensor:
    """PAR views of a float batch (B,3,H,W) in [0,1], sample i drawn from ``torch.Generator`` seeded ``seeds[i]``."""
    gen = torch.Generator()
    views = []
    for img, seed in zip(images, seeds):
        gen.manual_seed(int(seed))
        views.append(noise_erase(img, gen, **kw))
    return torch.stack(views) if views else images.clone()
