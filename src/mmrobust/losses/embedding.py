"""Embedding-space losses: FARE (Schlarmann et al. 2024) and PAR distances (Singh et al. 2024)."""
from __future__ import annotations

import torch


def squared_l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """||a_i - b_i||_2^2 summed over the embedding dimension, per sample (B,)."""
    return (a - b).pow(2).flatten(1).sum(dim=1)


def fare_loss(adv_embedding: torch.Tensor, clean_reference: torch.Tensor) -> torch.Tensor:
    """FARE loss (Schlarmann et al., ICML 2024), per sample: ||f(x + d) - f_orig(x)||_2^2 on
    unnormalized embeddings, ``clean_reference`` from the frozen original encoder on the clean image."""
    return squared_l2(adv_embedding, clean_reference.detach())


def threshold_push(distance: torch.Tensor, tau: float) -> torch.Tensor:
    """PAR's thresholded push term: D while D <= tau, else 0 (stop pushing once far enough)."""
    return torch.where(distance <= tau, distance, torch.zeros_like(distance))
