"""Evaluation on one contract: every evaluation is registered by name in ``registry.EVALS`` (CLIP:
``zeroshot``, ``backdoor``, ``retrieval``, ``robust``; MLLM: ``mmr`` on the shared harness in
``eval.mllm``), takes a model, data and a frozen settings dataclass and returns one ``Record``."""
from mmrobust.eval.backdoor import BackdoorSettings, attack_success, evaluate_backdoor
from mmrobust.eval.contract import EvalSpec, evaluation, run_evaluation
from mmrobust.eval.retrieval import RetrievalSettings, evaluate_retrieval, recall_at_k
from mmrobust.eval.robust import RobustSettings, embedding_drift, evaluate_robust
from mmrobust.eval.zeroshot import (
    Classifier, ZeroShotSettings, build_classifier, evaluate_zeroshot, model_classifier, zero_shot_weights,
)

__all__ = ["BackdoorSettings", "Classifier", "EvalSpec", "RetrievalSettings", "RobustSettings", "ZeroShotSettings",
           "attack_success", "build_classifier", "embedding_drift", "evaluate_backdoor", "evaluate_retrieval",
           "evaluate_robust", "evaluate_zeroshot", "evaluation", "model_classifier", "recall_at_k",
           "run_evaluation", "zero_shot_weights"]

from mmrobust.registry import import_modules  # noqa: E402

import_modules(__name__, __path__)  # every module registers what it defines: a new one is one new file
