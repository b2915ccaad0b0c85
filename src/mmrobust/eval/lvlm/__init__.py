"""LVLM benchmarks on the shared MLLM harness (FARE's use): open-ended VQA (VQAv2 soft accuracy), captioning
(CIDEr), and both under an untargeted pixel attack for an in-process HF model (:func:`evaluate_under_attack`).
"""
from mmrobust.eval.lvlm.caption import CaptionTask, cider_scores, load_captions, tokenize_caption
from mmrobust.eval.lvlm.under_attack import evaluate_under_attack
from mmrobust.eval.lvlm.vqa import VQATask, load_vqa, normalize_answer, soft_accuracy

__all__ = ["CaptionTask", "VQATask", "cider_scores", "evaluate_under_attack", "load_captions", "load_vqa",
           "normalize_answer", "soft_accuracy", "tokenize_caption"]
