"""Image-text retrieval recall@K over images and their captions, one or several each (as CLIP_benchmark)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from mmrobust.errors import DataError
from mmrobust.eval.contract import evaluation
from mmrobust.eval.zeroshot import batches
from mmrobust.models.clip import CLIPModel
from mmrobust.values import setting
from mmrobust.reports.contract import Record, Table


def recall_at_k(similarity: torch.Tensor, ks: Sequence[int] = (1, 5, 10),
                caption_image: torch.Tensor | None = None) -> dict[str, float]:
    """``similarity`` (N images, M texts); text j belongs to image ``caption_image[j]`` (default: pair
    i <-> i). Image->text R@K: some caption of the image ranks in the top K; text->image R@K: its image
    ranks in the top K (CLIP_benchmark's definitions)."""
    n, m = similarity.shape
    owner = torch.arange(m) if caption_image is None else caption_image
    cols = torch.arange(m)
    positive = owner[None, :] == torch.arange(n)[:, None]  # (N, M)
    best_positive = similarity.masked_fill(~positive, float("-inf")).max(dim=1).values
    rank_i2t = (similarity > best_positive[:, None]).sum(dim=1)  # texts scoring above its best caption
    rank_t2i = (similarity > similarity[owner, cols][None, :]).sum(dim=0)  # images above the true one
    out = {}
    for k in ks:
        out[f"image_to_text_R@{k}"] = float((rank_i2t < k).float().mean())
        out[f"text_to_image_R@{k}"] = float((rank_t2i < k).float().mean())
    return out


def _encode_texts(model: CLIPModel, texts: Sequence[str], batch_size: int) -> torch.Tensor:
    return torch.cat([model.encode_text(model.tokenize(list(texts[s:s + batch_size])), normalize=True).cpu()
                      for s in range(0, len(texts), batch_size)])


@torch.no_grad()
def evaluate_retrieval(model: CLIPModel, dataset: Any, *, batch_size: int = 256, device: str = "cpu",
                       ks: Sequence[int] = (1, 5, 10)) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Recall@K both ways over distinct images and all their captions
    (:class:`mmrobust.data.captions.RetrievalSplit`); captions of unreadable images are left out."""
    img, idx = [], []
    for batch in batches(dataset, batch_size):
        if "image" not in batch:
            continue
        img.append(model.encode_image(batch["image"].to(device), normalize=True).cpu())
        idx.append(batch["index"])
    if not img:
        raise DataError("no image of the retrieval split could be read; check the image paths and --data-root")
    kept = torch.cat(idx)
    position = {int(i): k for k, i in enumerate(kept)}
    texts = [(c, position[i]) for c, i in zip(dataset.captions, dataset.caption_image) if i in position]
    owner = torch.tensor([k for _, k in texts])
    sim = torch.cat(img) @ _encode_texts(model, [c for c, _ in texts], batch_size).T
    metrics: dict[str, Any] = recall_at_k(sim, ks, owner)
    metrics.update(n=sim.shape[0], n_captions=sim.shape[1], n_skipped=len(dataset.skips.skipped))
    best = sim.argmax(dim=1)
    rows = [{"index": int(i), "best_text": int(b), "correct": bool(int(owner[b]) == k)}
            for k, (i, b) in enumerate(zip(kept, best))]
    return metrics, rows


@dataclass(frozen=True)
class RetrievalSettings:
    """Recall cut-offs, batch size and device of a retrieval evaluation."""

    ks: tuple[int, ...] = (1, 5, 10)
    batch_size: int = setting(256, "images or captions per forward pass")
    device: str = setting("cpu", "cpu, cuda or cuda:N")


@evaluation("retrieval", settings=RetrievalSettings)
def retrieval_record(model: CLIPModel, data: Any, settings: RetrievalSettings) -> Record:
    """Image-to-text and text-to-image recall@K over image-caption pairs (as CLIP_benchmark)."""
    metrics, rows = evaluate_retrieval(model, data, batch_size=settings.batch_size, device=settings.device,
                                       ks=settings.ks)
    table_rows = [{"direction": name, **{f"R@{k}": metrics[f"{key}_R@{k}"] for k in settings.ks}}
                  for name, key in (("image to text", "image_to_text"), ("text to image", "text_to_image"))]
    table = Table.of("Retrieval recall", [("direction", "direction")] + [(f"R@{k}", f"recall@{k}", "%")
                                                                         for k in settings.ks], table_rows,
                     f"Share of the queries ({metrics['n']} images, {metrics['n_captions']} captions) whose "
                     "true match ranks among the top K of all candidates (an image matches any of its captions).")
    return Record(kind="retrieval", metrics=metrics, samples=rows, tables=[table],
                  extra={"skipped_images": data.skips.summary()["skipped"]})
