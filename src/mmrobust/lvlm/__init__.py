"""LVLMs: robust CLIP towers in LLaVA-style models (FARE's use, Schlarmann et al. 2024).

``convert``: exact open_clip ViT <-> ``transformers.CLIPVisionModel`` weight conversion, position-embedding
resizing (224 px towers in a 336 px LLaVA-1.5) and LLaVA's penultimate-layer image features.
``swap``: put a converted tower into a LLaVA(-NeXT) in memory (:func:`swap_vision_tower`) or from disk to disk
with the processor's normalization and a ``swap.json`` record (:func:`swap_and_save`).
``labels``: answer-token labels of a chat-template dialogue, end of turn included (shared with MLLM SFT).
``attack``: pixel-space APGD on the LM loss of reference answers (untargeted) or of a target string
(targeted), answer tokens only, normalization inside the attacked function.
"""
from mmrobust.lvlm.attack import (
    EnsemblePass, LVLMAttackRecord, LVLMEnsembleRecord, attack_lvlm_ensemble, attack_lvlm_targeted,
    attack_lvlm_untargeted, build_lvlm_inputs, lm_loss_fn, targeted_success,
)
from mmrobust.lvlm.convert import (
    VisionConversion, check_convertible, convert_clip_vision, hf_to_openclip_vision, hf_vision_config,
    hf_vision_model, image_processor_settings, load_hf_vision, openclip_resize_crop, openclip_to_hf_vision,
    resize_position_embedding, vision_feature,
)
from mmrobust.lvlm.labels import dialogue_labels
from mmrobust.lvlm.swap import swap_and_save, swap_vision_tower

__all__ = ["EnsemblePass", "LVLMEnsembleRecord", "attack_lvlm_ensemble", "LVLMAttackRecord", "attack_lvlm_targeted", "attack_lvlm_untargeted", "build_lvlm_inputs", "lm_loss_fn",
           "targeted_success", "VisionConversion", "check_convertible", "convert_clip_vision", "hf_to_openclip_vision",
           "hf_vision_config", "hf_vision_model", "image_processor_settings", "load_hf_vision",
           "openclip_resize_crop", "openclip_to_hf_vision", "dialogue_labels", "resize_position_embedding",
           "swap_and_save", "swap_vision_tower", "vision_feature"]
