"""Gathering embeddings across processes so contrastive losses see the global batch."""
from __future__ import annotations

import torch
import torch.distributed as dist


def rank_and_size() -> tuple[int, int]:
    """(rank, world_size); (0, 1) when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All-gather ``x`` (B, D) along dim 0 keeping gradients for every rank's slice.

    With one process this is the identity. Uses ``torch.distributed.nn.all_gather`` whose backward
    sums gradients across ranks, so per-rank losses over local rows x global columns add up to the
    loss over the global batch (as open_clip's ``gather_with_grad``).
    """
    rank, size = rank_and_size()
    if size == 1:
        return x
    import torch.distributed.nn as dist_nn

    return torch.cat(dist_nn.all_gather(x), dim=0)


def local_targets(batch: int, device: torch.device) -> torch.Tensor:
    """Indices of this rank's rows inside the gathered global batch."""
    rank, _ = rank_and_size()
    return torch.arange(batch, device=device) + rank * batch


def global_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of per-sample values ``x`` (B,) over the global batch, with gradients to every rank's rows.

    With one process this is ``x.mean()``. Each rank gets the same value; since the all-reduce's backward
    sums over ranks too, averaging the ranks' gradients gives the gradient of this global mean (needed
    where a loss is not linear in the batch mean, e.g. PAR's threshold on the mean distance).
    """
    rank, size = rank_and_size()
    if size == 1:
        return x.mean()
    import torch.distributed.nn as dist_nn

    total = dist_nn.all_reduce(torch.stack([x.sum(), x.new_tensor(float(x.shape[0]))]))
    return total[0] / total[1]
