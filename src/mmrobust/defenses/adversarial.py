"""Shared machinery of adversarial finetuning tasks: a seeded PGD inner maximization whose
generator state is checkpointed, so a resumed run draws the same random starts."""
from __future__ import annotations

from typing import Any, Callable

import torch

from mmrobust.attacks.pgd import pgd
from mmrobust.defenses.base import Task
from mmrobust.errors import ConfigError


class AdversarialTask(Task):
    """Vision-only finetuning against an l-inf PGD adversary (eps, step size, steps in [0,1] units)."""

    trains = "visual"

    def __init__(self, model: Any, *, eps: float, step_size: float, attack_steps: int,
                 momentum: float | None, seed: int) -> None:
        super().__init__(model)
        if not 0 <= eps <= 1 or step_size < 0 or attack_steps < 0:
            raise ConfigError(f"eps={eps} must be in [0,1] (e.g. 4/255 = 0.0157), step_size >= 0, attack_steps >= 0")
        self.eps, self.step_size, self.attack_steps, self.momentum = float(eps), float(step_size), attack_steps, momentum
        self.generator = torch.Generator().manual_seed(seed)

    def perturb(self, loss_fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
        """PGD maximizing ``loss_fn``: uniform random start, projection to the eps-ball then [0,1], last iterate."""
        if self.attack_steps == 0 or self.eps == 0:
            return images
        was_training = self.model.visual.training
        self.model.visual.eval()  # BatchNorm towers (RN50) must not update statistics on attack steps
        try:
            return pgd(loss_fn, images, eps=self.eps, step_size=self.step_size, steps=self.attack_steps,
                       random_start=True, generator=self.generator, momentum=self.momentum)
        finally:
            self.model.visual.train(was_training)

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        state = super().checkpoint_state()
        state["_pgd_generator"] = self.generator.get_state()
        return state

    def load_checkpoint_state(self, state: dict[str, torch.Tensor]) -> None:
        state = dict(state)
        self.generator.set_state(state.pop("_pgd_generator"))
        super().load_checkpoint_state(state)
