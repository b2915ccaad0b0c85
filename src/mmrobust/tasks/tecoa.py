"""TeCoA (Mao, Chiquier, Wang, Yang & Vondrick, "Understanding Zero-Shot Adversarial Robustness for
Large-Scale Models", ICLR 2023): supervised adversarial finetuning of the vision encoder against
frozen class-prompt text embeddings. The baseline FARE is compared with."""
from __future__ import annotations

from typing import Any

import torch

from mmrobust.data.datasets import ClassInfo
from mmrobust.tasks.adversarial import AdversarialTask
from mmrobust.errors import ConfigError
from mmrobust.models.clip import zero_shot_weights
from mmrobust.losses.classification import tecoa_loss
from mmrobust.registry import TASKS


@TASKS.register("tecoa")
class TeCoATask(AdversarialTask):
    """L = mean_i CE(100 * norm(f(x_i + d_i)) @ T^T, y_i), T the frozen text embeddings of
    ``template`` per class, d from l-inf PGD on the same CE.

    Threat model: l-inf, eps (default 4/255). Example::

        task = TeCoATask(model, classes=ClassInfo.load("classes.json"), eps=4/255)
        out = task({"image": x, "label": y})
    """

    name = "tecoa"
    needs_labels = True
    needs_classes = True

    def __init__(self, model: Any, *, classes: ClassInfo, template: str = "This is a photo of a {}",
                 eps: float = 4 / 255, step_size: float = 1 / 255, attack_steps: int = 10,
                 momentum: float | None = None, seed: int = 0, attack: str = "pgd", lora_r: int = 0,
                 lora_alpha: float = 16.0, lora_targets: str = "c_fc,c_proj") -> None:
        super().__init__(model, eps=eps, step_size=step_size, attack_steps=attack_steps, momentum=momentum,
                         seed=seed, attack=attack, lora_r=lora_r, lora_alpha=lora_alpha, lora_targets=lora_targets)
        if not isinstance(template, str) or template.count("{}") != 1:
            raise ConfigError(f'tecoa option template={template!r} must contain "{{}}" once (where the class '
                              'name goes), e.g. "This is a photo of a {}"')
        self.register_buffer("class_embeddings", zero_shot_weights(model, classes.classnames, [template]))

    def after_step(self) -> None:
        pass

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        x, y = batch["image"], batch["label"]
        x_adv = self.perturb(lambda xa: tecoa_loss(self.model.encode_image(xa), self.class_embeddings, y), x,
                             batch.get("index"))
        loss = tecoa_loss(self.model.encode_image(x_adv), self.class_embeddings, y).mean()
        return {"loss": loss}
