"""The one result type every registered attack returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor


@dataclass(frozen=True)
class AttackResult:
    """Adversarial images plus per-sample outcomes of one attack on a classifier.

    ``robust`` follows AutoAttack: a point counts as robust only if it is classified correctly on
    the clean image AND on ``x_adv``; where the clean prediction is already wrong, ``x_adv`` is the
    clean image. ``broken_by`` (worst-case attacks only) names, per sample, the attack that first
    broke it, "clean" if the clean prediction is wrong, or "" if it is still robust.
    """

    x_adv: Tensor  # (B, ...) in [0, 1], inside the eps-ball around x
    clean_correct: Tensor  # (B,) bool
    robust: Tensor  # (B,) bool
    attack: str  # registry name
    config: dict[str, Any] = field(default_factory=dict)  # eps, norm, steps, seed and extra options
    broken_by: tuple[str, ...] | None = None

    @property
    def clean_accuracy(self) -> float:
        return float(self.clean_correct.float().mean()) if len(self.clean_correct) else float("nan")

    @property
    def robust_accuracy(self) -> float:
        return float(self.robust.float().mean()) if len(self.robust) else float("nan")

    def per_sample(self, ids: list[Any] | None = None) -> list[dict[str, Any]]:
        """One JSON-ready record per sample (for mmrobust.jsonio.write_jsonl)."""
        ids = list(range(len(self.robust))) if ids is None else list(ids)
        rows = []
        for i, sid in enumerate(ids):
            row = {"id": sid, "clean_correct": bool(self.clean_correct[i]), "robust": bool(self.robust[i])}
            if self.broken_by is not None:
                row["broken_by"] = self.broken_by[i]
            rows.append(row)
        return rows
