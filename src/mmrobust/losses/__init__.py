"""Losses as small functions returning per-sample tensors (B,); reduce at the call site."""
from mmrobust.losses.classification import tecoa_loss, zero_shot_logits
from mmrobust.losses.contrastive import cleanclip_loss, clip_loss, inmodal_loss
from mmrobust.losses.embedding import fare_loss, squared_l2, threshold_push

__all__ = ["cleanclip_loss", "clip_loss", "fare_loss", "inmodal_loss", "squared_l2", "tecoa_loss",
           "threshold_push", "zero_shot_logits"]
