"""Backdoor evaluation: clean accuracy and attack success rate (ASR) of a trigger.

ASR = share of triggered test images predicted as the target class, over the test images whose
true class is not the target (Bansal et al. 2023 define it so; their released code never used the
target index, a confirmed bug this module avoids). The target is a parameter.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from mmrobust.eval.zeroshot import Classifier, predict, topk_correct
from mmrobust.models.clip import CLIPModel


def attack_success(pred_triggered: torch.Tensor, labels: torch.Tensor, target: int) -> tuple[float, int]:
    """(ASR, n) over samples whose true label != target; NaN when there are none."""
    keep = labels != target
    n = int(keep.sum())
    return (float((pred_triggered[keep] == target).float().mean()) if n else float("nan")), n


def evaluate_backdoor(model: CLIPModel, dataset: Any, classifier: Classifier, *, trigger: Callable,
                      target: int, seed: int = 0, batch_size: int = 256, device: str = "cpu",
                      topk: int = 1) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Clean top-1 accuracy and top-``topk`` ASR of ``trigger`` towards class index ``target``.

    The trigger gets a generator seeded by (seed, sample index), so each image's trigger is
    reproducible whatever the batch size.
    """

    def apply(images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return torch.stack([trigger(img, generator=torch.Generator().manual_seed(seed * 1_000_003 + int(i)))
                            for img, i in zip(images.cpu(), index)]).to(images.device)

    clean = predict(model, classifier, dataset, batch_size=batch_size, device=device)
    keep = [int(i) for i, y in zip(clean["index"], clean["label"]) if int(y) != target]
    trig = predict(model, classifier, dataset, batch_size=batch_size, device=device, transform=apply, indices=keep)
    clean_ok = topk_correct(clean["logits"], clean["label"], 1)
    hit = topk_correct(trig["logits"], torch.full_like(trig["label"], target), topk)
    asr = float(hit.float().mean()) if len(hit) else float("nan")
    metrics = {"clean_top1": float(clean_ok.float().mean()), "asr": asr, "asr_topk": topk,
               "n_clean": len(clean["label"]), "n_asr": len(hit), "target": target,
               "n_skipped": len(dataset.skips.skipped), "classifier": classifier.source}
    pred_trig = {int(i): int(lg.argmax()) for i, lg in zip(trig["index"], trig["logits"])}
    rows = [{"index": int(i), "label": int(y), "pred_clean": int(lg.argmax()), "pred_triggered": pred_trig.get(int(i))}
            for i, y, lg in zip(clean["index"], clean["label"], clean["logits"])]
    return metrics, rows
