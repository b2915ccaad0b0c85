"""Supervised finetuning of the vision encoder with a linear head (the supervised defense in
Bansal et al., ICCV 2023). The head starts as the zero-shot classifier, so training starts from
the CLIP's own predictions; the trained head is saved beside the model and used at evaluation."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from mmrobust.data.datasets import ClassInfo
from mmrobust.tasks.base import Task
from mmrobust.models.clip import zero_shot_weights
from mmrobust.models.checkpoint import save_head
from mmrobust.registry import TASKS


@TASKS.register("supervised")
class SupervisedTask(Task):
    """CE(s * head(normalize(f(x))), y) on labelled clean images; the vision tower and head train.

    Example::

        task = SupervisedTask(model, classes=ClassInfo.load("classes.json"))
        out = task({"image": x, "label": y})
    """

    name = "supervised"
    needs_labels = True
    needs_classes = True
    trains = "visual"

    def __init__(self, model: Any, *, classes: ClassInfo) -> None:
        super().__init__(model)
        weights = zero_shot_weights(model, classes.classnames, classes.templates)
        self.head = nn.Parameter(weights.detach().clone())  # (C, D), starts as the zero-shot classifier
        self.classnames = list(classes.classnames)

    def extra_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        yield "head.weight", self.head

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.logit_scale.detach() * self.model.encode_image(images, normalize=True) @ self.head.T

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        loss = F.cross_entropy(self.logits(batch["image"]), batch["label"])
        return {"loss": loss}

    def export(self, out_dir: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
        out = super().export(out_dir, extra={"classnames": self.classnames, **(extra or {})})
        scale = self.model.logit_scale.detach().cpu()
        save_head(out, self.head.detach().cpu() * scale)
        return out
