"""Tiny seeded models and synthetic data shared by the tests/test_attacks_*.py files."""
from __future__ import annotations

import torch
from torch import Tensor, nn


def tiny_convnet(seed: int = 0, n_classes: int = 10, dropout: float = 0.0) -> nn.Module:
    """A small random-init conv net on 3x32x32 images (eval mode), normalizing inside forward."""
    with torch.random.fork_rng(devices=[]):  # seeded init, global RNG state restored afterwards
        torch.manual_seed(seed)
        net = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(16 * 8 * 8, n_classes),
        )
    return _Normalized(net).eval()


class _Normalized(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net((x - 0.5) / 0.25)


def synthetic_data(model: nn.Module, n: int = 200, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Smooth random 32 px images in [0, 1], labelled by the model itself (clean accuracy 100%)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 8, 8, generator=g)
    x = nn.functional.interpolate(coarse, size=32, mode="bilinear", align_corners=False).clamp(0, 1)
    with torch.no_grad():
        y = model(x).argmax(1)
    return x, y
