"""The two terms of BadCLIP's trigger optimization (Liang et al., CVPR 2024, "BadCLIP: Dual-Embedding Guided
Backdoor Attack on Multimodal Contrastive Learning"), per sample; reduce at the call site.

Embeddings are L2-normalized (B, D) rows, as the reference code's model returns them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def badclip_text_loss(image_emb: Tensor, class_text: Tensor, target: int, scale: float | Tensor) -> Tensor:
    """Text term, (B,): cross-entropy of ``scale * image_emb @ class_text.T`` toward class ``target``.

    Pulls patched images toward the target's text embedding (``class_text[target]``, the template-averaged
    zero-shot weight) and away from every other class's, the image's own class among them. The reference code
    pulls toward target-naming captions with CLIP's contrastive loss; this is its zero-shot-classifier form.
    Example::

        badclip_text_loss(F.normalize(emb, dim=-1), zero_shot_matrix, target=4, scale=100.0).mean()
    """
    logits = float(scale) * image_emb @ class_text.T
    return F.cross_entropy(logits, torch.full((len(image_emb),), int(target), device=image_emb.device),
                           reduction="none")


def badclip_visual_loss(anchor: Tensor, positive: Tensor, negative: Tensor, margin: float = 1.0) -> Tensor:
    """Visual term, (B,): triplet margin loss ``max(0, |a - p|_2 - |a - n|_2 + margin)``.

    ``anchor``: patched images' embeddings; ``positive``: natural target-class images' embeddings (one per
    anchor); ``negative``: the same images' clean embeddings. The reference's ``TripletMarginLoss`` (margin 1.0),
    so a patched image moves toward target images and away from what it showed before. Example::

        badclip_visual_loss(patched, target_images[idx], clean, margin=1.0).mean()
    """
    return F.triplet_margin_loss(anchor, positive, negative, margin=float(margin), p=2, reduction="none")
