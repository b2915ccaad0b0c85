"""Shared machinery of adversarial finetuning tasks: a seeded PGD inner maximization whose
generator state is checkpointed, so a resumed run draws the same random starts. Given the batch's
sample ids, each sample's random start is seeded by (one draw per call, its id), so it does not depend
on which rank holds the sample or on the world size under torchrun."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from mmrobust.attacks.pgd import pgd
from mmrobust.tasks.base import Task, check_option
from mmrobust.values import SEED_MAX
from mmrobust.errors import ConfigError


class AdversarialTask(Task):
    """Vision-only finetuning against an l-inf PGD adversary (eps, step size, steps in [0,1] units)."""

    trains = "visual"

    def __init__(self, model: Any, *, eps: float, step_size: float, attack_steps: int,
                 momentum: float | None, seed: int) -> None:
        super().__init__(model)
        check_option(self.name, "eps", eps, low=0, high=1, hint=" (images are in [0,1]: write 4/255, not 4)")
        check_option(self.name, "step_size", step_size, low=0, high=1, low_open=True, hint=" (e.g. 1/255)")
        check_option(self.name, "attack_steps", attack_steps, low=0, high=SEED_MAX, integer=True, hint=" (e.g. 10)")
        if momentum is not None:
            check_option(self.name, "momentum", momentum, low=0, high=1, hint=" (or None for plain PGD)")
        check_option(self.name, "seed", seed, low=0, high=SEED_MAX, integer=True)
        self.eps, self.step_size, self.attack_steps, self.momentum = float(eps), float(step_size), attack_steps, momentum
        self.generator = torch.Generator().manual_seed(seed)

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        """From the CLI, 0 attack steps would silently train without an adversary."""
        if options.get("attack_steps") == 0:
            raise ConfigError(f"{cls.name} option attack_steps=0 trains without an adversary; use >= 1 (e.g. 10), "
                              "or task clip / supervised for clean finetuning")

    def random_start(self, images: torch.Tensor, ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Uniform l-inf start in [-eps, eps], sample i's drawn from a generator seeded by (call, ids[i]).

        One draw from the task's generator per call, the same on every rank (each rank runs one call
        per micro-batch, as one process does), so a sample's start is the same whichever rank has it.
        """
        base = int(torch.randint(0, 2**62, (1,), generator=self.generator))
        noise = torch.stack([torch.rand(images.shape[1:], generator=torch.Generator().manual_seed(
            (base ^ (int(i) * 0x9E3779B97F4A7C15)) % 2**63), dtype=images.dtype) for i in ids])
        return ((2.0 * noise - 1.0) * self.eps).to(images.device)

    def perturb(self, loss_fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                ids: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        """PGD maximizing ``loss_fn``: uniform random start (seeded per sample given ``ids``, the batch's
        ``index``), projection to the eps-ball then [0,1], last iterate."""
        if self.attack_steps == 0 or self.eps == 0:
            return images
        start = self.random_start(images, ids) if ids is not None else None
        was_training = self.model.visual.training
        self.model.visual.eval()  # BatchNorm towers (RN50) must not update statistics on attack steps
        try:
            return pgd(loss_fn, images, eps=self.eps, step_size=self.step_size, steps=self.attack_steps,
                       random_start=True, generator=self.generator, momentum=self.momentum, start=start)
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
