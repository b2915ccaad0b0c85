"""Plain CLIP contrastive training/finetuning (Radford et al. 2021); "MMCL-only" finetuning in CleanCLIP."""
from __future__ import annotations

from typing import Any

import torch

from mmrobust.tasks.base import Task
from mmrobust.losses.contrastive import clip_loss
from mmrobust.registry import TASKS


@TASKS.register("clip")
class CLIPTask(Task):
    """Symmetric image-text contrastive loss on (image, caption) batches.

    Example::

        task = CLIPTask(create_clip("mmrobust-tiny"))
        out = task({"image": torch.rand(8, 3, 32, 32), "caption": ["a photo of a star."] * 8})
    """

    name = "clip"

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        out = self.model(batch["image"], self.model.tokenize(batch["caption"]))
        loss = clip_loss(out["image_features"], out["text_features"], out["logit_scale"]).mean()
        return {"loss": loss, "logit_scale": out["logit_scale"].detach()}
