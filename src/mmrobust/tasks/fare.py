"""FARE (Schlarmann, Singh, Croce & Hein, "Robust CLIP: Unsupervised Adversarial Fine-Tuning of Vision
Embeddings for Robust Large Vision-Language Models", ICML 2024).

Unsupervised adversarial finetuning of the vision encoder f so that f(x + d) stays close to the
original encoder f_orig(x); the text tower is untouched, so the encoder drops into CLIP zero-shot
and LVLMs (LLaVA) unchanged. Paper recipe: l-inf eps 2/255 or 4/255, PGD 10 steps of 1/255, AdamW
lr 1e-5, wd 1e-4, batch 128, cosine with warmup.
"""
from __future__ import annotations

from typing import Any

import torch

from mmrobust.tasks.adversarial import AdversarialTask
from mmrobust.losses.embedding import fare_loss
from mmrobust.registry import TASKS


@TASKS.register("fare")
class FARETask(AdversarialTask):
    """L = mean_i ||f(x_i + d_i) - f_orig(x_i)||_2^2 (unnormalized embeddings), d from l-inf PGD on
    the same loss; f_orig is a frozen copy of the starting vision encoder. Per step: one no-grad forward of
    f_orig on the clean images, the attack, one forward of f on x + d (unlike the reference code, no
    unused clean forward of f and no per-step ``torch.cuda.empty_cache``).

    Threat model: l-inf, eps (default 4/255), images in [0,1]. Cheaper variants: ``attack="fgsm-rs"`` (one
    FGSM step of 1.25 eps from a random start, Wong et al. 2020) and ``lora_r`` (LoRA adapters only). Example::

        task = FARETask(create_clip("ViT-B-32", pretrained="openai"), eps=4/255)
        out = task({"image": x, "index": ids})     # out["loss"]; ids seed each sample's random start
        fast = FARETask(clip, eps=4/255, attack="fgsm-rs", lora_r=8)
    """

    name = "fare"
    frozen = ("reference",)

    def __init__(self, model: Any, *, eps: float = 4 / 255, step_size: float = 1 / 255, attack_steps: int = 10,
                 momentum: float | None = None, seed: int = 0, attack: str = "pgd", lora_r: int = 0,
                 lora_alpha: float = 16.0, lora_targets: str = "c_fc,c_proj") -> None:
        reference = self.frozen_copy(model.visual)  # the starting tower, before any LoRA adapter goes in
        super().__init__(model, eps=eps, step_size=step_size, attack_steps=attack_steps, momentum=momentum,
                         seed=seed, attack=attack, lora_r=lora_r, lora_alpha=lora_alpha, lora_targets=lora_targets)
        self.reference = reference

    def after_step(self) -> None:  # the logit scale is not trained here
        pass

    def reference_embedding(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.reference(self.model.normalize_pixels(images))

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        x = batch["image"]
        target = self.reference_embedding(x)
        x_adv = self.perturb(lambda xa: fare_loss(self.model.encode_image(xa), target), x, batch.get("index"))
        loss = fare_loss(self.model.encode_image(x_adv), target).mean()
        return {"loss": loss}
