"""Zero-shot classification with prompt-template ensembles (Radford et al. 2021, as CLIP_benchmark)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from mmrobust.data.datasets import collate
from mmrobust.eval.contract import evaluation
from mmrobust.models.checkpoint import load_head
from mmrobust.models.clip import CLIPModel, zero_shot_weights  # re-exported: a model operation
from mmrobust.values import setting
from mmrobust.reports.contract import Record, Table
from mmrobust.reports.protocol import templates_protocol


@dataclass(frozen=True)
class Classifier:
    """Class matrix W (C, D) applied to L2-normalized image embeddings: logits = scale * img @ W^T."""

    weights: torch.Tensor
    scale: float
    source: str  # "zero-shot" | "linear head"

    def logits(self, model: CLIPModel, images: torch.Tensor) -> torch.Tensor:
        return self.scale * model.encode_image(images, normalize=True) @ self.weights.to(images.device).T


def build_classifier(model: CLIPModel, classnames: Sequence[str], templates: Sequence[str], *,
                     model_dir: str | Path | None = None) -> Classifier:
    """The zero-shot classifier, or the trained linear head saved beside a supervised-finetuned model."""
    head = load_head(model_dir, classnames)
    if head is not None:
        return Classifier(head, 1.0, "linear head")
    return Classifier(zero_shot_weights(model, classnames, templates), 100.0, "zero-shot")


def batches(dataset: torch.utils.data.Dataset, batch_size: int, indices: Sequence[int] | None = None
            ) -> Iterator[dict[str, Any]]:
    """Evaluation batches in order, unreadable images dropped (counted in ``n_dropped``)."""
    idx = list(range(len(dataset))) if indices is None else list(indices)
    for start in range(0, len(idx), batch_size):
        yield collate([dataset[i] for i in idx[start:start + batch_size]])


@torch.no_grad()
def predict(model: CLIPModel, classifier: Classifier, dataset: torch.utils.data.Dataset, *, batch_size: int = 256,
            transform: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
            indices: Sequence[int] | None = None, device: str = "cpu", progress: Any = None
            ) -> dict[str, torch.Tensor]:
    """Logits for every readable image (optionally transformed, e.g. triggered). Returns
    ``{"index", "label", "logits"}`` tensors aligned by row, plus ``n_dropped``."""
    out: dict[str, list] = {"index": [], "label": [], "logits": []}
    dropped = 0
    for batch in batches(dataset, batch_size, indices):
        dropped += batch["n_dropped"]
        if "image" not in batch:
            continue
        images = batch["image"].to(device)
        if transform is not None:
            images = transform(images, batch["index"])
        out["logits"].append(classifier.logits(model, images).float().cpu())
        out["index"].append(batch["index"])
        out["label"].append(batch["label"])
        if progress is not None:
            progress.update(len(batch["index"]))
    res = {k: torch.cat(v) if v else torch.empty(0) for k, v in out.items()}
    res["n_dropped"] = torch.tensor(dropped)
    return res


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Per-sample bool: true label among the top-k logits."""
    k = min(k, logits.shape[1])
    return (logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1)


def evaluate_zeroshot(model: CLIPModel, dataset: Any, classifier: Classifier, *, batch_size: int = 256,
                      device: str = "cpu") -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Top-1/top-5 accuracy. Returns (metrics, per-sample rows)."""
    p = predict(model, classifier, dataset, batch_size=batch_size, device=device)
    top1, top5 = topk_correct(p["logits"], p["label"], 1), topk_correct(p["logits"], p["label"], 5)
    n = len(p["label"])
    metrics = {"top1": float(top1.float().mean()) if n else float("nan"),
               "top5": float(top5.float().mean()) if n else float("nan"),
               "n": n, "n_skipped": len(dataset.skips.skipped), "classifier": classifier.source}
    rows = [{"index": int(i), "label": int(y), "pred": int(lg.argmax()), "correct": bool(c)}
            for i, y, lg, c in zip(p["index"], p["label"], p["logits"], top1)]
    return metrics, rows


@dataclass(frozen=True)
class ZeroShotSettings:
    """Batch size and device of a zero-shot evaluation."""

    batch_size: int = setting(256, "images per forward pass")
    device: str = setting("cpu", "cpu, cuda or cuda:N")


def model_classifier(model: CLIPModel, dataset: Any) -> Classifier:
    """The classifier a CLIP evaluation uses on ``dataset``'s classes: the linear head saved beside a
    supervised-finetuned model directory, else the zero-shot template ensemble."""
    model_dir = model.name if Path(model.name).is_dir() else None
    return build_classifier(model, dataset.classes.classnames, dataset.classes.templates, model_dir=model_dir)


@evaluation("zeroshot", settings=ZeroShotSettings)
def zeroshot_record(model: CLIPModel, data: Any, settings: ZeroShotSettings) -> Record:
    """Zero-shot top-1 / top-5 accuracy over a labelled dataset (Radford et al. 2021)."""
    clf = model_classifier(model, data)
    metrics, rows = evaluate_zeroshot(model, data, clf, batch_size=settings.batch_size, device=settings.device)
    table = Table.of("Zero-shot accuracy", [("top1", "top-1 accuracy", "%"), ("top5", "top-5 accuracy", "%"),
                                            ("n", "images", "count"), ("n_skipped", "unreadable images", "count")],
                     [metrics], f"Share of test images whose true class is the top (top-5: among the top five) "
                                f"prediction of the {clf.source} classifier; unreadable images are skipped.")
    protocol = templates_protocol(data.classes.classnames, data.classes.templates, clf.source)
    return Record(kind="zeroshot", metrics=metrics, samples=rows, tables=[table],
                  extra={"skipped_images": data.skips.summary()["skipped"]}, protocol=protocol)
