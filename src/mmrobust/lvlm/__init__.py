"""LVLMs: robust CLIP towers in LLaVA-style models (FARE's use, Schlarmann et al. 2024).

``convert``: exact open_clip ViT <-> ``transformers.CLIPVisionModel`` weight conversion, position-embedding
resizing (224 px towers in a 336 px LLaVA-1.5) and LLaVA's penultimate-layer image features.
"""
from mmrobust.lvlm.convert import (
    VisionConversion, check_convertible, convert_clip_vision, hf_to_openclip_vision, hf_vision_config,
    hf_vision_model, image_processor_settings, load_hf_vision, openclip_to_hf_vision, resize_position_embedding,
    vision_feature,
)

__all__ = ["VisionConversion", "check_convertible", "convert_clip_vision", "hf_to_openclip_vision",
           "hf_vision_config", "hf_vision_model", "image_processor_settings", "load_hf_vision",
           "openclip_to_hf_vision", "resize_position_embedding", "vision_feature"]
