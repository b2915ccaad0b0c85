"""CleanCLIP (Bansal et al., "CleanCLIP: Mitigating Data Poisoning Attacks in Multimodal Contrastive
Learning", ICCV 2023): finetune on clean pairs with the multimodal contrastive loss plus in-modal
self-supervised losses that pull each image/caption towards its own augmented view.

Paper recipe: 100K clean pairs, batch 64, 10 epochs, lr 1e-5, 50 warmup steps, AdamW wd 0.1, l1 = l2 = 1.
"""
from __future__ import annotations

from typing import Any

import torch

from mmrobust.tasks.base import Task, check_option
from mmrobust.errors import ConfigError
from mmrobust.losses.contrastive import cleanclip_loss
from mmrobust.registry import TASKS


@TASKS.register("cleanclip")
class CleanCLIPTask(Task):
    """L = l1 * CLIP(I, T) + l2 * (CE(s I I'^T) + CE(s T T'^T)) / 2 (DESIGN §3).

    Images and their AutoAugment views, captions and their EDA views, are encoded in one forward
    pass each (so normalization statistics see both).

    Example::

        task = CleanCLIPTask(model, l1=1.0, l2=1.0)
        out = task({"image": x, "image_aug": x_aug, "caption": caps, "caption_aug": caps_aug})
    """

    name = "cleanclip"
    views = ("image_aug", "caption_aug")

    def __init__(self, model: Any, *, l1: float = 1.0, l2: float = 1.0) -> None:
        super().__init__(model)
        check_option("cleanclip", "l1", l1, low=0, hint=" (weight of the multimodal term, e.g. 1.0)")
        check_option("cleanclip", "l2", l2, low=0, hint=" (weight of the self-supervised term, e.g. 1.0)")
        if l1 + l2 == 0:
            raise ConfigError("cleanclip options l1=0 and l2=0 leave no loss to train; give one a positive weight")
        self.l1, self.l2 = l1, l2

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        n = batch["image"].shape[0]
        images = torch.cat([batch["image"], batch["image_aug"]])
        tokens = self.model.tokenize(list(batch["caption"]) + list(batch["caption_aug"]))
        img = self.model.encode_image(images, normalize=True)
        txt = self.model.encode_text(tokens, normalize=True)
        terms = cleanclip_loss(img[:n], txt[:n], img[n:], txt[n:], self.model.logit_scale, l1=self.l1, l2=self.l2)
        return {k: v.mean() for k, v in terms.items()}
