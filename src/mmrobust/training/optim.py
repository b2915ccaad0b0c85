"""Optimizer and learning-rate schedule (AdamW without decay on gains/biases/logit scale; cosine + warmup)."""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn


def param_groups(named: Iterable[tuple[str, nn.Parameter]], weight_decay: float) -> list[dict]:
    """Split parameters into decayed (matrices) and not decayed (norms, biases, embeddings' scale, logit scale)
    as open_clip_train does."""
    decay, no_decay = [], []
    for name, p in named:
        if not p.requires_grad:
            continue
        exclude = p.ndim < 2 or "bias" in name or "ln" in name or "bn" in name or "logit_scale" in name
        (no_decay if exclude else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def cosine_with_warmup(optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int,
                       min_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup to the peak lr over ``warmup_steps``, then cosine decay to ``min_ratio`` * peak."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
