"""Image-text retrieval recall@K on a manifest of (image, caption) pairs (as CLIP_benchmark)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from mmrobust.eval.contract import evaluation
from mmrobust.eval.zeroshot import batches
from mmrobust.models.clip import CLIPModel
from mmrobust.reports.contract import Record, Table


def recall_at_k(similarity: torch.Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """``similarity`` (N images, N texts) with pair i <-> i. Image->text and text->image R@K."""
    n = similarity.shape[0]
    target = torch.arange(n)
    rank_i2t = (similarity > similarity[target, target][:, None]).sum(dim=1)  # texts scoring above the true one
    rank_t2i = (similarity.T > similarity[target, target][:, None]).sum(dim=1)
    out = {}
    for k in ks:
        out[f"image_to_text_R@{k}"] = float((rank_i2t < k).float().mean())
        out[f"text_to_image_R@{k}"] = float((rank_t2i < k).float().mean())
    return out


@torch.no_grad()
def evaluate_retrieval(model: CLIPModel, dataset: Any, *, batch_size: int = 256, device: str = "cpu",
                       ks: Sequence[int] = (1, 5, 10)) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Recall@K both ways over a dataset of image-caption pairs (``ImageTextDataset``)."""
    img, txt, idx = [], [], []
    for batch in batches(dataset, batch_size):
        if "image" not in batch:
            continue
        img.append(model.encode_image(batch["image"].to(device), normalize=True).cpu())
        txt.append(model.encode_text(model.tokenize(batch["caption"]), normalize=True).cpu())
        idx.append(batch["index"])
    sim = torch.cat(img) @ torch.cat(txt).T
    metrics: dict[str, Any] = recall_at_k(sim, ks)
    metrics.update(n=sim.shape[0], n_skipped=len(dataset.skips.skipped))
    best = sim.argmax(dim=1)
    rows = [{"index": int(i), "best_text": int(b), "correct": bool(int(b) == k)}
            for k, (i, b) in enumerate(zip(torch.cat(idx), best))]
    return metrics, rows


@dataclass(frozen=True)
class RetrievalSettings:
    """Recall cut-offs, batch size and device of a retrieval evaluation."""

    ks: tuple[int, ...] = (1, 5, 10)
    batch_size: int = 256
    device: str = "cpu"


@evaluation("retrieval", settings=RetrievalSettings)
def retrieval_record(model: CLIPModel, data: Any, settings: RetrievalSettings) -> Record:
    """Image-to-text and text-to-image recall@K over image-caption pairs (as CLIP_benchmark)."""
    metrics, rows = evaluate_retrieval(model, data, batch_size=settings.batch_size, device=settings.device,
                                       ks=settings.ks)
    table_rows = [{"direction": name, **{f"R@{k}": metrics[f"{key}_R@{k}"] for k in settings.ks}}
                  for name, key in (("image to text", "image_to_text"), ("text to image", "text_to_image"))]
    table = Table.of("Retrieval recall", [("direction", "direction")] + [(f"R@{k}", f"recall@{k}", "%")
                                                                         for k in settings.ks], table_rows,
                     f"Share of the {metrics['n']} queries whose true pair ranks among the top K of all "
                     "candidates.")
    return Record(kind="retrieval", metrics=metrics, samples=rows, tables=[table],
                  extra={"skipped_images": data.skips.summary()["skipped"]})
