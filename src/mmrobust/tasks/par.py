"""PAR, Perturb and Recover (Singh, Croce & Hein 2024, "Perturb and Recover: Fine-tuning for Effective
Backdoor Removal from CLIP"): finetune a possibly poisoned CLIP on clean pairs while pushing its
embeddings away from a frozen copy of itself, until they are a distance tau away.

Reference recipe: AdamW, peak lr 3e-6 with warmup, wd 1e-4, betas (0.9, 0.98), 2 epochs of 250K clean
pairs, batch 2048, tau 2.15. The training view x~ is the reference code's: added noise and a small
erased square (``view="noise-erase"``, :mod:`mmrobust.data.noise_erase`); ``view="autoaugment"``
trains on AutoAugment views instead (the view DESIGN §3 names).
"""
from __future__ import annotations

from typing import Any

import torch

from mmrobust.tasks.base import Task, check_option
from mmrobust.errors import ConfigError
from mmrobust.losses.contrastive import clip_loss
from mmrobust.losses.distributed import global_mean
from mmrobust.losses.embedding import squared_l2, threshold_push
from mmrobust.registry import TASKS


@TASKS.register("par")
class PARTask(Task):
    """L = CLIP(f(x~), g(t)) - 0.5 * (thr(D_img) + thr(D_txt)), D = batch mean of ||e - e0||^2 between
    L2-normalized embeddings of the trained and frozen encoders on the view x~ of the image and caption t;
    thr(D) = D while D <= tau, else 0 (DESIGN §3). ``view``: "noise-erase" (the reference code's) or
    "autoaugment".

    Example::

        task = PARTask(model, tau=2.15)
        out = task({"image_noise_erase": x_view, "caption": caps})   # out["loss"], out["dist_image"], ...
    """

    name = "par"
    frozen = ("reference",)
    VIEWS = {"noise-erase": "image_noise_erase", "autoaugment": "image_aug"}

    def __init__(self, model: Any, *, tau: float = 2.15, view: str = "noise-erase") -> None:
        super().__init__(model)
        check_option("par", "tau", tau, low=0, low_open=True, hint=" (distances of unit embeddings are in "
                     "[0, 4]; the paper uses 2.15)")
        if not isinstance(view, str) or view not in self.VIEWS:
            raise ConfigError(f"PAR view {view!r} is unknown; use one of {sorted(self.VIEWS)}")
        self.tau, self.view = tau, self.VIEWS[view]
        self.views = (self.view,)
        self.reference = self.frozen_copy(model)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        tokens = self.model.tokenize(batch["caption"])
        img = self.model.encode_image(batch[self.view], normalize=True)
        txt = self.model.encode_text(tokens, normalize=True)
        with torch.no_grad():
            img0 = self.reference.encode_image(batch[self.view], normalize=True)
            txt0 = self.reference.encode_text(tokens, normalize=True)
        # the temperature stays fixed during PAR (as in the reference implementation)
        contrastive = clip_loss(img, txt, self.model.logit_scale.detach()).mean()
        # batch means over the global batch under torchrun: the threshold acts on the same D on every rank
        d_img, d_txt = global_mean(squared_l2(img, img0)), global_mean(squared_l2(txt, txt0))
        push = 0.5 * (threshold_push(d_img, self.tau) + threshold_push(d_txt, self.tau))
        return {"loss": contrastive - push, "contrastive": contrastive, "dist_image": d_img, "dist_text": d_txt}
