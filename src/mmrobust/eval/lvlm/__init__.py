"""LVLM benchmarks on the shared MLLM harness (FARE's use): open-ended VQA (VQAv2 soft accuracy), captioning
(CIDEr), MMR, and each under an untargeted pixel attack for an in-process HF model (:func:`evaluate_under_attack`).

Importing this package imports every module in it, so each attackable task registers itself in
``registry.LVLM_TASKS`` (:func:`mmrobust.eval.lvlm.tasks.attack_task`): a new one is one new file here.
"""
from mmrobust.eval.lvlm.caption import CaptionTask, cider_scores, load_captions, tokenize_caption
from mmrobust.eval.lvlm.tasks import LVLMData, LVLMTaskSpec, attack_task, load_attack_task
from mmrobust.eval.lvlm.under_attack import evaluate_under_attack
from mmrobust.eval.lvlm.vqa import VQATask, load_vqa, normalize_answer, soft_accuracy
from mmrobust.registry import import_modules

import_modules(__name__, __path__)

__all__ = ["CaptionTask", "LVLMData", "LVLMTaskSpec", "VQATask", "attack_task", "cider_scores",
           "evaluate_under_attack", "load_attack_task", "load_captions", "load_vqa", "normalize_answer",
           "soft_accuracy", "tokenize_caption"]
