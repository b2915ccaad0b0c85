"""A CLIP whose image tower runs a test-time defense first; everything else is the CLIP's own.

``DefendedCLIP(clip, defense)`` stands wherever a :class:`~mmrobust.models.clip.CLIPModel` is evaluated:
``encode_image(x)`` is ``clip.encode_image(defense(x))``, text and tokenizer are the CLIP's. An attack on it
attacks the defended classifier (defense in the loop, :mod:`mmrobust.attacks.adaptive`): with
``backward="through"`` autograd differentiates the defense itself, with ``"bpda"`` the backward pass crosses
it as the identity.

Example::

    defended = DefendedCLIP(clip, lambda x: x.clamp(0.1, 0.9), config={"name": "clip-range"})
    logits = classifier.logits(defended, images)          # the defense runs inside encode_image
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from torch import Tensor, nn

from mmrobust.attacks.adaptive import defense_step
from mmrobust.models.clip import CLIPModel


class DefendedCLIP(nn.Module):
    """``clip`` with ``defense`` (images in [0, 1] -> images in [0, 1]) applied before its image tower.

    ``config`` describes the defense (name and settings); it is recorded with every result and keys resumed
    evaluations (:attr:`defense_config`). ``undefended`` is the wrapped CLIP.
    """

    def __init__(self, clip: CLIPModel, defense: Callable[[Tensor], Tensor], *, config: dict[str, Any],
                 backward: str = "through") -> None:
        super().__init__()
        self.clip = clip
        self.defense = defense
        self.defense_config = {**config, "backward": backward}
        self._step = defense_step(defense, backward)

    @property
    def undefended(self) -> CLIPModel:
        return self.clip

    # --- what evaluations read from a CLIPModel: the wrapped model's own ----------------------------------
    @property
    def name(self) -> str:
        return self.clip.name

    @property
    def visual(self) -> nn.Module:
        return self.clip.visual

    @property
    def mean(self) -> Tensor:
        return self.clip.mean

    @property
    def std(self) -> Tensor:
        return self.clip.std

    @property
    def image_size(self) -> int:
        return self.clip.image_size

    @property
    def logit_scale(self) -> Tensor:
        return self.clip.logit_scale

    @property
    def model_cfg(self) -> dict:
        return self.clip.model_cfg

    @property
    def preprocess_cfg(self) -> dict:
        return self.clip.preprocess_cfg

    def tokenize(self, texts: Sequence[str]) -> Tensor:
        return self.clip.tokenize(texts)

    def encode_text(self, tokens: Tensor, normalize: bool = False) -> Tensor:
        return self.clip.encode_text(tokens, normalize=normalize)

    # --- the defended image tower -------------------------------------------------------------------------
    def encode_image(self, images: Tensor, normalize: bool = False) -> Tensor:
        """Image embeddings of the defended images (B, D); L2-normalized if ``normalize``."""
        return self.clip.encode_image(self._step(images), normalize=normalize)

    def forward(self, images: Tensor, tokens: Tensor) -> dict[str, Tensor]:
        return {"image_features": self.encode_image(images, normalize=True),
                "text_features": self.encode_text(tokens, normalize=True), "logit_scale": self.logit_scale}

    def defense_stats(self, images: Tensor) -> dict[str, float]:
        """What the defense reports about a batch (its ``stats`` method; empty if it has none)."""
        stats = getattr(self.defense, "stats", None)
        return dict(stats(images)) if callable(stats) else {}

    def extra_repr(self) -> str:
        return f"defense={self.defense_config}"

