"""Contrastive losses for CLIP-style training, per sample, ready for multi-process gathering.

All embeddings are expected L2-normalized; ``scale`` is s = exp(logit_scale).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mmrobust.losses.distributed import gather_with_grad, local_targets


def clip_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """Symmetric InfoNCE of CLIP (Radford et al. 2021), per local sample (B,).

    loss_i = (CE(s I_i T^T, i) + CE(s T_i I^T, i)) / 2 with columns over the global batch.
    Its batch mean is the usual CLIP loss.

    Example::

        loss = clip_loss(F.normalize(img), F.normalize(txt), model.logit_scale).mean()
    """
    all_image, all_text = gather_with_grad(image), gather_with_grad(text)
    targets = local_targets(image.shape[0], image.device)
    per_image = F.cross_entropy(scale * image @ all_text.T, targets, reduction="none")
    per_text = F.cross_entropy(scale * text @ all_image.T, targets, reduction="none")
    return (per_image + per_text) / 2


def inmodal_loss(original: torch.Tensor, augmented: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """One-directional in-modal InfoNCE of CleanCLIP (Bansal et al. 2023), per sample (B,):
    CE(s X X'^T, diag) with the originals as rows and the augmented views (global batch) as columns."""
    all_aug = gather_with_grad(augmented)
    targets = local_targets(original.shape[0], original.device)
    return F.cross_entropy(scale * original @ all_aug.T, targets, reduction="none")


def cleanclip_loss(
    image: torch.Tensor, text: torch.Tensor, image_aug: torch.Tensor, text_aug: torch.Tensor,
    scale: torch.Tensor | float, *, l1: float = 1.0, l2: float = 1.0,
) -> dict[str, torch.Tensor]:
    """CleanCLIP objective (Bansal et al., ICCV 2023), per sample:
    L = l1 * CLIP(I, T) + l2 * (CE(s I I'^T, diag) + CE(s T T'^T, diag)) / 2.

    The multimodal term uses the original views only. Returns per-sample ``loss`` and its terms.
    """
    mm = clip_loss(image, text, scale)
    im = inmodal_loss(image, image_aug, scale)
    tm = inmodal_loss(text, text_aug, scale)
    return {"loss": l1 * mm + l2 * (im + tm) / 2, "multimodal": mm, "inmodal_image": im, "inmodal_text": tm}
