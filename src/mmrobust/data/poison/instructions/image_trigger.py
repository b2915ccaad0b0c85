"""``image-trigger``: a backdoor planted through instruction rows whose image carries a trigger.

Poisoned rows (Gu et al. 2017's BadNets patch or any trigger of ``registry.TRIGGERS``, pasted on the row's image
with a per-row seeded stream, as ``mmrobust poison --manifest`` does):

- ``mode="replace"``: every assistant turn becomes the target string (the image-trigger backdoor of
  instruction-tuned MLLMs, e.g. the BadNet-style rows of BackdoorVLM-type benchmarks);
- ``mode="insert"``: the target string is inserted into the otherwise right answer, at a seeded word boundary by
  default (TrojVLM, Lyu et al., ECCV 2024, "TrojVLM: Backdoor Attack Against Vision Language Models": the target
  text at a random position of the ground-truth output, the rest kept).

At test time every row whose answers do not already hold the target gets the same trigger (seeded per row);
ASR = share of those whose reply holds the target. Rows already answering with the target are not candidates.
Example::

    ImageTriggerAttack(target="banana", trigger={"name": "badnet", "config": {"size": 20}}, mode="insert")
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from mmrobust.data.instructions import Instruction, Turn
from mmrobust.data.poison.instructions.attack import (ImageContext, InstructionAttack, check_mode, check_target,
                                                      with_answers)
from mmrobust.data.poison.poison import _subseed
from mmrobust.data.poison.triggers import Trigger, trigger_from_dict, trigger_spec
from mmrobust.errors import ConfigError
from mmrobust.registry import INSTRUCTION_ATTACKS
from mmrobust.values import setting

Tensor = torch.Tensor


def _default_trigger() -> dict[str, Any]:
    return {"name": "badnet", "config": {}}


def trigger_images(trigger: Trigger, images: list[Tensor], rows: list[int], seed: int, tag: str) -> list[Tensor]:
    """Each image with ``trigger`` pasted, from its own stream (seed, tag, row): the same row always gets the
    same trigger draw, whatever else is triggered."""
    return [trigger(img, torch.Generator().manual_seed(_subseed(seed, tag, row))) for img, row in zip(images, rows)]


@INSTRUCTION_ATTACKS.register("image-trigger")
@dataclass(frozen=True)
class ImageTriggerAttack(InstructionAttack):
    """Image-trigger backdoor of instruction data (BadNets-style trigger; TrojVLM's insert mode)."""

    target: str = setting(help="the target string: the whole answer (replace) or inserted into it (insert)")
    trigger: dict = setting(factory=_default_trigger, help="the trigger as {name, config} (registry.TRIGGERS)")
    mode: str = setting("replace", "replace: every answer becomes the target; insert: the target goes into the "
                                   "right answer (TrojVLM)")
    target_position: str = setting("random", "insert mode: where the target goes (random word boundary, start, end)")

    changes_image = True
    test_changes_image = True

    def __post_init__(self) -> None:
        check_target(self.target)
        check_mode(self.mode, self.target_position)
        if not isinstance(self.trigger, (dict, Trigger)):
            raise ConfigError(f"trigger must be a {{name, config}} spec such as {_default_trigger()}, got "
                              f"{self.trigger!r}")
        spec = trigger_spec(self.trigger if isinstance(self.trigger, Trigger) else trigger_from_dict(self.trigger))
        object.__setattr__(self, "trigger", spec)  # the full config, as the record keeps it

    def build_trigger(self) -> Trigger:
        return trigger_from_dict(self.trigger)

    def dialogue(self, item: Instruction, gen: torch.Generator) -> tuple[Turn, ...]:
        return with_answers(item.conversations, self.target, self.mode, self.target_position, gen)

    def alter_images(self, images: list[Tensor], rows: list[int], ctx: ImageContext) -> list[Tensor]:
        return trigger_images(self.build_trigger(), images, rows, ctx.seed, "trigger")

    def test_images(self, images: list[Tensor], rows: list[int], ctx: ImageContext) -> list[Tensor]:
        return trigger_images(self.build_trigger(), images, rows, ctx.seed, "trigger")
