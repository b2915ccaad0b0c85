"""Classification losses over CLIP embeddings: TeCoA (Mao et al. 2023) and supervised heads."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def zero_shot_logits(image_embedding: torch.Tensor, class_embeddings: torch.Tensor, scale: float = 100.0) -> torch.Tensor:
    """scale * normalize(image) @ class_embeddings^T; ``class_embeddings`` (C, D) normalized rows."""
    return scale * F.normalize(image_embedding, dim=-1) @ class_embeddings.T


def tecoa_loss(image_embedding: torch.Tensor, class_embeddings: torch.Tensor, labels: torch.Tensor,
               scale: float = 100.0) -> torch.Tensor:
    """TeCoA loss (Mao et al., ICLR 2023), per sample: CE(100 * norm(f(x + d)) @ T^T, y) with T the
    frozen text embeddings of the class prompts."""
    return F.cross_entropy(zero_shot_logits(image_embedding, class_embeddings, scale), labels, reduction="none")
