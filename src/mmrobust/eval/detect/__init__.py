"""Poisoned-pair detection (Huang et al., "Detecting Backdoor Samples in Contrastive Language Image
Pretraining", ICLR 2025): score each pair's embedding by the density / dimensionality of its k nearest
neighbours (``dao``, ``kdist``, ``lid``, ``slof``) or by an isolation forest (``iforest``); higher = more
suspicious. Each detector is registered in ``registry.DETECTORS`` (a new one is one new file here)::

    from mmrobust.eval.detect import score_embeddings, detection_metrics
    scores = score_embeddings(emb, ["dao", "kdist"], k=16)          # {"dao": (N,), "kdist": (N,)}
    detection_metrics(scores["dao"].numpy(), poisoned_mask)          # auroc, ap, precision_at_n
"""
from mmrobust.eval.detect.density import DEFAULT_K, dao, kdist, lid, slof
from mmrobust.eval.detect.forest import isolation_forest
from mmrobust.eval.detect.knn import Neighbors, nearest
from mmrobust.eval.detect.metrics import detection_metrics, top_order
from mmrobust.eval.detect.run import detector_options, score_embeddings, uses_neighbours

__all__ = ["DEFAULT_K", "Neighbors", "dao", "detection_metrics", "detector_options", "isolation_forest", "kdist",
           "lid", "nearest", "score_embeddings", "slof", "top_order", "uses_neighbours"]

from mmrobust.registry import import_modules  # noqa: E402

import_modules(__name__, __path__)  # every module registers what it defines: a new detector is one new file
