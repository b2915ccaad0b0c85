"""Evaluation: zero-shot accuracy, backdoor ASR, retrieval, robust accuracy."""
from mmrobust.eval.backdoor import attack_success, evaluate_backdoor
from mmrobust.eval.retrieval import evaluate_retrieval, recall_at_k
from mmrobust.eval.zeroshot import Classifier, build_classifier, evaluate_zeroshot, zero_shot_weights

__all__ = ["Classifier", "attack_success", "build_classifier", "evaluate_backdoor", "evaluate_retrieval",
           "evaluate_zeroshot", "recall_at_k", "zero_shot_weights"]
from mmrobust.eval.robust import embedding_drift, evaluate_robust  # noqa: E402

__all__ += ["embedding_drift", "evaluate_robust"]
