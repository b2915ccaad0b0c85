"""Shared machinery of adversarial finetuning tasks: a seeded PGD inner maximization whose
generator state is checkpointed, so a resumed run draws the same random starts. Given the batch's
sample ids, each sample's random start is seeded by (one draw per call, its id), so it does not depend
on which rank holds the sample or on the world size under torchrun.

Two ways to make a step cheaper, as task options (``mmrobust train --task fare --opt attack=fgsm-rs``):

- ``attack="fgsm-rs"``: FGSM from a uniform random start (Wong, Rice & Kolter 2020, "Fast is better than free:
  Revisiting adversarial training"): one gradient step of 1.25 eps instead of PGD's ten of eps / 4, so a step
  costs 3 forwards and 2 backwards of the tower instead of 12 and 11;
- ``lora_r > 0``: only LoRA adapters of the image tower train (Hu et al. 2022; :mod:`mmrobust.tasks.lora`), merged
  into the weights on export, so the saved tower is a plain open_clip model.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from mmrobust.attacks.pgd import pgd
from mmrobust.models.clip import save_clip
from mmrobust.tasks.base import Task, check_option
from mmrobust.tasks.lora import add_lora, merged_copy
from mmrobust.values import SEED_MAX
from mmrobust.errors import ConfigError

INNER_ATTACKS = ("pgd", "fgsm-rs")
FGSM_STEP = 1.25  # FGSM-RS step size in units of eps (Wong et al. 2020)
PRESET = ("attack_steps", "step_size", "momentum")  # what attack=fgsm-rs fixes


class AdversarialTask(Task):
    """Vision-only finetuning against an l-inf adversary (eps, step size, steps in [0,1] units): PGD, or FGSM
    with a random start (``attack="fgsm-rs"``: one step of 1.25 eps); full weights, or LoRA adapters only
    (``lora_r`` > 0)."""

    trains = "visual"

    def __init__(self, model: Any, *, eps: float, step_size: float, attack_steps: int,
                 momentum: float | None, seed: int, attack: str = "pgd", lora_r: int = 0, lora_alpha: float = 16.0,
                 lora_targets: str = "c_fc,c_proj") -> None:
        super().__init__(model)
        check_option(self.name, "eps", eps, low=0, high=1, hint=" (images are in [0,1]: write 4/255, not 4)")
        if attack not in INNER_ATTACKS:
            raise ConfigError(f"{self.name} option attack={attack!r} is not one of {', '.join(INNER_ATTACKS)}")
        if attack == "fgsm-rs":
            if momentum is not None:
                raise ConfigError(f"{self.name}: attack=fgsm-rs takes one plain step; drop momentum")
            attack_steps, step_size = 1, FGSM_STEP * float(eps) or 1 / 255  # (eps 0: no attack at all)
        check_option(self.name, "step_size", step_size, low=0, high=1, low_open=True, hint=" (e.g. 1/255)")
        check_option(self.name, "attack_steps", attack_steps, low=0, high=SEED_MAX, integer=True, hint=" (e.g. 10)")
        if momentum is not None:
            check_option(self.name, "momentum", momentum, low=0, high=1, hint=" (or None for plain PGD)")
        check_option(self.name, "seed", seed, low=0, high=SEED_MAX, integer=True)
        check_option(self.name, "lora_r", lora_r, low=0, high=4096, integer=True, hint=" (0: full finetuning)")
        self.eps, self.step_size = float(eps), float(step_size)
        self.attack_steps, self.momentum = attack_steps, momentum
        self.attack = attack
        self.generator = torch.Generator().manual_seed(seed)
        self.lora = None
        if lora_r:
            check_option(self.name, "lora_alpha", lora_alpha, low=0, low_open=True, hint=" (e.g. 16)")
            targets = tuple(t.strip() for t in str(lora_targets).split(",") if t.strip())
            self.lora = add_lora(model.visual, r=lora_r, alpha=lora_alpha, targets=targets, seed=seed)

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        """From the CLI, 0 attack steps would silently train without an adversary, and attack=fgsm-rs fixes
        the steps and step size a user might also give."""
        if options.get("attack_steps") == 0:
            raise ConfigError(f"{cls.name} option attack_steps=0 trains without an adversary; use >= 1 (e.g. 10), "
                              "or task clip / supervised for clean finetuning")
        given = [k for k in PRESET if k in options]
        if options.get("attack") == "fgsm-rs" and given:
            raise ConfigError(f"{cls.name}: attack=fgsm-rs is one step of {FGSM_STEP} eps from a random start "
                              f"(Wong et al. 2020); drop {', '.join(given)} (or use attack=pgd to set them)")

    def export(self, out_dir: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
        """The trained CLIP as a model directory; LoRA adapters merged into the tower's weights first, so it
        loads as a plain open_clip model (``lora`` in the config's record says how it was trained)."""
        if self.lora is None:
            return super().export(out_dir, extra=extra)
        state = {k: v for k, v in self.model.model.state_dict().items() if not k.startswith("visual.")}
        state.update({f"visual.{k}": v for k, v in merged_copy(self.model.model.visual).state_dict().items()})
        return save_clip(self.model, out_dir, state_dict=state,
                         extra={"task": self.name, "lora": {**self.lora, "merged": True}, **(extra or {})})

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
