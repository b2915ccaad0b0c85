"""Per-sample attack losses on logits, all to be MAXIMIZED: (B, C) logits, (B,) labels -> (B,).

CE and DLR are the two losses of APGD (Croce & Hein 2020, "Reliable evaluation of adversarial
robustness with an ensemble of diverse parameter-free attacks", ICML); the targeted DLR loss is
the one of AutoAttack's APGD-T. DLR is invariant to shifting and rescaling the logits, so it does
not saturate the way CE does on over-confident models.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from mmrobust.errors import ConfigError

LogitLoss = Callable[[Tensor, Tensor], Tensor]


def ce_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy per sample."""
    return F.cross_entropy(logits, y, reduction="none")


def margin_loss(logits: Tensor, y: Tensor) -> Tensor:
    """max_{j != y} z_j - z_y per sample: positive exactly when the point is misclassified."""
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf"))
    return others.amax(dim=1) - z_y


def dlr_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Difference of Logits Ratio: -(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3), pi sorting logits descending."""
    _require_classes(logits, 3, "the DLR loss")
    top = logits.topk(3, dim=1).values  # (B, 3): z_pi1 >= z_pi2 >= z_pi3
    return margin_loss(logits, y) / (top[:, 0] - top[:, 2] + 1e-12)


def dlr_targeted_loss(logits: Tensor, y: Tensor, target: Tensor) -> Tensor:
    """Targeted DLR: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2), pi sorting logits descending."""
    _require_classes(logits, 4, "the targeted DLR loss")
    top = logits.topk(4, dim=1).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_t = logits.gather(1, target[:, None]).squeeze(1)
    return (z_t - z_y) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


def _require_classes(logits: Tensor, n: int, what: str) -> None:
    if logits.dim() != 2 or logits.shape[1] < n:
        raise ConfigError(
            f"{what} needs logits of shape (B, C) with C >= {n}, got {tuple(logits.shape)}; "
            "use the CE loss (attack 'apgd-ce' or loss='ce') for fewer classes"
        )


LOGIT_LOSSES: dict[str, LogitLoss] = {"ce": ce_loss, "dlr": dlr_loss, "margin": margin_loss}


def get_logit_loss(name: str) -> LogitLoss:
    """Untargeted logit loss by name ('ce', 'dlr', 'margin')."""
    if name not in LOGIT_LOSSES:
        raise ConfigError(f"unknown attack loss {name!r}; choose one of: {', '.join(LOGIT_LOSSES)}")
    return LOGIT_LOSSES[name]


def predictions(logits_fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """Argmax class per sample without building a graph."""
    with torch.no_grad():
        return logits_fn(x).argmax(dim=1)
