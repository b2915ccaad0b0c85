"""Losses as small functions returning per-sample tensors (B,); reduce at the call site."""
from mmrobust.losses.badclip import badclip_text_loss, badclip_visual_loss
from mmrobust.losses.classification import tecoa_loss, zero_shot_logits
from mmrobust.losses.contrastive import cleanclip_loss, clip_loss, inmodal_loss
from mmrobust.losses.embedding import fare_loss, squared_l2, threshold_push

__all__ = ["badclip_text_loss", "badclip_visual_loss", "cleanclip_loss", "clip_loss", "fare_loss", "inmodal_loss",
           "squared_l2", "tecoa_loss", "threshold_push", "zero_shot_logits"]
