"""The Task protocol: one nn.Module per training method, run by the generic loop.

A Task owns the model being trained (``self.model``) and any frozen reference (registered under a
name in ``frozen``, never trained, never checkpointed, always in eval mode). ``forward(batch)``
returns ``{"loss": scalar, <named terms>}``.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from mmrobust.errors import ConfigError
from mmrobust.models.clip import CLIPModel, save_clip
from mmrobust.values import check_int, check_number


def check_option(task: str, name: str, value: Any, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, integer: bool = False, hint: str = "") -> None:
    """One-line ConfigError unless ``value`` is a finite number (an int if ``integer``) in [low, high]
    (``low_open``: low excluded), through :func:`mmrobust.values.check_int` / ``check_number``. ``hint``
    names a fix, e.g. an example value."""
    fix = hint.strip()
    fix = fix[1:-1] if fix.startswith("(") and fix.endswith(")") else fix
    if integer:
        check_int(f"{task} option {name}", value, low=None if low is None else int(low) + int(low_open),
                  high=None if high is None else int(high), fix=fix)
    else:
        check_number(f"{task} option {name}", value, low=low, high=high, low_open=low_open, fix=fix)


class Task(nn.Module):
    """Base class. Subclasses set ``name``, ``views`` (extra dataset views they need), ``needs_labels``."""

    name: str = "task"
    views: tuple[str, ...] = ()
    needs_labels: bool = False
    needs_classes: bool = False  # gets frozen class-prompt embeddings (build_task)
    frozen: tuple[str, ...] = ()  # attribute names of frozen reference modules
    trains: str = "all"  # "all" | "visual"

    def __init__(self, model: CLIPModel) -> None:
        super().__init__()
        self.model = model

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        """Extra checks of options a user gave by name (``--opt``): values a direct constructor call may
        use on purpose (e.g. in tests) but that would silently train something else. Default: none."""

    @staticmethod
    def frozen_copy(module: nn.Module) -> nn.Module:
        """A deep copy with gradients off and eval mode, for use as a frozen reference."""
        ref = copy.deepcopy(module).eval()
        for p in ref.parameters():
            p.requires_grad_(False)
        return ref

    def trainable_named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        root: nn.Module = self.model.visual if self.trains == "visual" else self.model
        for name, p in root.named_parameters():
            if p.requires_grad:
                yield name, p
        yield from self.extra_parameters()

    def extra_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """Parameters outside the CLIP model that train too (e.g. a classifier head)."""
        return iter(())

    def train(self, mode: bool = True) -> "Task":
        super().train(mode)
        for name in self.frozen:
            getattr(self, name).eval()
        return self

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the trained towers' transformer blocks in backward instead of storing activations
        (:meth:`CLIPModel.set_grad_checkpointing`; same loss and gradients, less memory, ~30% more compute).
        Frozen references are not touched: they run without gradients."""
        self.model.set_grad_checkpointing(enable, visual_only=self.trains == "visual")

    def after_step(self) -> None:
        """Called after each optimizer step: clamp the logit scale to 100 (CLIP)."""
        self.model.clamp_logit_scale(100.0)

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if not k.startswith(tuple(f"{n}." for n in self.frozen))}

    def load_checkpoint_state(self, state: dict[str, torch.Tensor]) -> None:
        missing, unexpected = self.load_state_dict(state, strict=False)
        frozen = tuple(f"{n}." for n in self.frozen)
        missing = [k for k in missing if not k.startswith(frozen)]
        if missing or unexpected:
            raise ConfigError(f"checkpoint does not match task {self.name}: missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}; resume with the same --task/--model or a fresh --out")

    def export(self, out_dir: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
        """Save the trained CLIP as a model directory (open_clip hub layout)."""
        return save_clip(self.model, out_dir, extra={"task": self.name, **(extra or {})})
