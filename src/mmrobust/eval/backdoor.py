"""Backdoor evaluation: clean accuracy and attack success rate (ASR) of a trigger.

ASR = share of triggered test images predicted as the target class, over the test images whose
true class is not the target (Bansal et al. 2023 define it so; their released code never used the
target index, a confirmed bug this module avoids). The target is a parameter.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from mmrobust.errors import ConfigError
from mmrobust.eval.contract import evaluation
from mmrobust.eval.zeroshot import Classifier, model_classifier, predict, topk_correct
from mmrobust.models.clip import CLIPModel
from mmrobust.values import setting
from mmrobust.reports.contract import Record, Table
from mmrobust.reports.protocol import digest, templates_protocol
from mmrobust.reports.sanity import backdoor_not_taken, collect, trigger_alone, trigger_to_other_class


def attack_success(pred_triggered: torch.Tensor, labels: torch.Tensor, target: int, *, k: int = 1
                   ) -> tuple[float, int]:
    """(ASR, n) over samples whose true label != target; NaN when there are none.

    ``pred_triggered`` holds predicted class indices (N,) or logits (N, C); with logits, a hit is the
    target among the top ``k``."""
    keep = labels != target
    n = int(keep.sum())
    if pred_triggered.ndim == 2:
        hit = topk_correct(pred_triggered[keep], torch.full((n,), target, dtype=torch.long), k)
    else:
        hit = pred_triggered[keep] == target
    return (float(hit.float().mean()) if n else float("nan")), n


def trigger_generator(seed: int, index: int) -> torch.Generator:
    """The generator of sample ``index``'s trigger randomness (the same whatever the batch size)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + int(index))


def evaluate_backdoor(model: CLIPModel, dataset: Any, classifier: Classifier, *, trigger: Callable,
                      target: int, seed: int = 0, batch_size: int = 256, device: str = "cpu",
                      topk: int = 1) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Clean top-1 accuracy and top-``topk`` ASR of ``trigger`` towards class index ``target``, and
    ``clean_to_target``: the same share on the untriggered images (the model's own bias toward the target).

    The trigger gets a generator seeded by (seed, sample index), so each image's trigger is
    reproducible whatever the batch size.
    """

    def apply(images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return torch.stack([trigger(img, generator=trigger_generator(seed, i))
                            for img, i in zip(images.cpu(), index)]).to(images.device)

    clean = predict(model, classifier, dataset, batch_size=batch_size, device=device)
    keep = [int(i) for i, y in zip(clean["index"], clean["label"]) if int(y) != target]
    trig = predict(model, classifier, dataset, batch_size=batch_size, device=device, transform=apply, indices=keep)
    clean_ok = topk_correct(clean["logits"], clean["label"], 1)
    asr, n_asr = attack_success(trig["logits"], trig["label"], target, k=topk)
    base, _ = attack_success(clean["logits"], clean["label"], target, k=topk)  # the same share without the trigger
    metrics = {"clean_top1": float(clean_ok.float().mean()), "asr": asr, "clean_to_target": base, "asr_topk": topk,
               "n_clean": len(clean["label"]), "n_asr": n_asr, "target": target,
               "n_skipped": len(dataset.skips.skipped), "classifier": classifier.source}
    pred_trig = {int(i): int(lg.argmax()) for i, lg in zip(trig["index"], trig["logits"])}
    rows = [{"index": int(i), "label": int(y), "pred_clean": int(lg.argmax()), "pred_triggered": pred_trig.get(int(i))}
            for i, y, lg in zip(clean["index"], clean["label"], clean["logits"])]
    return metrics, rows


def _top_triggered(rows: list[dict[str, Any]], *, target: int) -> tuple[int | None, float]:
    """The class most triggered non-target images are predicted as, and its share of them."""
    preds = [r["pred_triggered"] for r in rows if r["label"] != target and r["pred_triggered"] is not None]
    if not preds:
        return None, 0.0
    top = max(set(preds), key=preds.count)
    return top, preds.count(top) / len(preds)


@dataclass(frozen=True)
class BackdoorSettings:
    """The trigger (spec ``{"name", "config"}`` as in poison.json), the target class name, the seed of
    per-image trigger randomness, top-k of ASR, batch size and device."""

    trigger: dict[str, Any] = field(default_factory=lambda: {"name": "badnet", "config": {}})
    target: str = ""
    seed: int = setting(0, "seed of the per-image trigger randomness")
    topk: int = 1
    batch_size: int = setting(256, "images per forward pass")
    device: str = setting("cpu", "cpu, cuda or cuda:N")


@evaluation("backdoor", settings=BackdoorSettings)
def backdoor_record(model: CLIPModel, data: Any, settings: BackdoorSettings) -> Record:
    """Clean accuracy and attack success rate of a trigger towards a target class (Bansal et al. 2023)."""
    from mmrobust.data.poison.triggers import trigger_from_dict
    from mmrobust.eval.backdoor_pictures import backdoor_pictures

    names = data.classes.classnames
    if settings.target not in names:
        raise ConfigError(f"target {settings.target!r} is not a class of the evaluation data; choose one of "
                          f"{', '.join(names)}")
    trigger = trigger_from_dict(settings.trigger)
    metrics, rows = evaluate_backdoor(model, data, model_classifier(model, data),
                                      trigger=trigger, target=names.index(settings.target),
                                      seed=settings.seed, batch_size=settings.batch_size, device=settings.device,
                                      topk=settings.topk)
    metrics["target_name"] = settings.target
    top, share = _top_triggered(rows, target=names.index(settings.target))
    metrics["triggered_top_class"], metrics["triggered_top_share"] = names[top] if top is not None else None, share
    table = Table.of("Backdoor: clean accuracy and attack success", [
        ("clean_top1", "clean top-1 accuracy", "%"), ("asr", f"attack success rate (top-{settings.topk})", "%"),
        ("target_name", "target class"), ("n_clean", "clean images", "count"),
        ("n_asr", "triggered images (true class not the target)", "count")], [metrics],
        "Clean accuracy on untouched test images; ASR = share of triggered test images predicted as the target, "
        "over the test images whose true class is not the target.")
    warnings = collect(backdoor_not_taken(metrics["asr"]), trigger_alone(metrics["asr"], metrics["clean_to_target"]),
                       trigger_to_other_class(metrics["asr"], share, metrics["triggered_top_class"] or "",
                                              settings.target))
    protocol = {**templates_protocol(names, data.classes.templates, metrics["classifier"]),
                "trigger": settings.trigger, "trigger_sha": digest(settings.trigger), "target": settings.target,
                "asr_topk": settings.topk, "trigger_seed": settings.seed}
    return Record(kind="backdoor", metrics=metrics, samples=rows, tables=[table], seeds={"trigger": settings.seed},
                  config={"trigger": settings.trigger, "target": settings.target},
                  extra={"skipped_images": data.skips.summary()["skipped"]}, warnings=warnings, protocol=protocol,
                  pictures=backdoor_pictures(data, rows, trigger, target=settings.target, seed=settings.seed,
                                             generator=trigger_generator))
