"""Evaluation under LVLM attacks (FARE's use): the harness benchmarks (VQA, :mod:`mmrobust.eval.vqa`; captioning,
:mod:`mmrobust.eval.caption`; MMR) scored on clean images and under a white-box pixel attack on an in-process HF
model (:func:`evaluate_under_attack`; the attacks live in :mod:`mmrobust.lvlm`). VQATask and friends are
re-exported here for old imports.

Importing this package imports every module in it, so each attackable task registers itself in
``registry.LVLM_TASKS`` (:func:`mmrobust.eval.lvlm.tasks.attack_task`): a new one is one new file here.
"""
from mmrobust.eval.caption import CaptionTask, cider_scores, load_captions, tokenize_caption
from mmrobust.eval.lvlm.tasks import LVLMData, LVLMTaskSpec, attack_task, load_attack_task
from mmrobust.eval.lvlm.under_attack import evaluate_under_attack
from mmrobust.eval.vqa import VQATask, load_vqa, normalize_answer, soft_accuracy
from mmrobust.registry import import_modules

import_modules(__name__, __path__)

__all__ = ["CaptionTask", "LVLMData", "LVLMTaskSpec", "VQATask", "attack_task", "cider_scores",
           "evaluate_under_attack", "load_attack_task", "load_captions", "load_vqa", "normalize_answer",
           "soft_accuracy", "tokenize_caption"]
