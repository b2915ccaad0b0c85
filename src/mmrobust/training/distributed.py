"""torch.distributed for the training loop: torchrun's environment, gradient averaging, rank-0 writes.

Why no ``DistributedDataParallel`` wrapper: a Task calls its model's ``encode_image``/``encode_text``
(not ``forward``, which is what DDP hooks), may train only one tower, runs inner attacks through the
same model, and holds frozen references that must never be wrapped or synced. So the loop keeps the
Task as it is and, once per optimizer step (after the last micro-batch, DDP's ``no_sync`` semantics),
all-reduces the trainable gradients in buckets: SUM, then divide by the world size (gloo has no AVG).
The contrastive losses gather embeddings with gradients (:mod:`mmrobust.losses.distributed`), whose
backward sums over ranks, so the averaged gradient is the gradient of the global-batch loss. What this
does not reproduce is DDP's overlap of the all-reduce with the backward pass.

Example (what ``mmrobust train`` does under ``torchrun --nproc_per_node 2 -m mmrobust.cli.main train ...``)::

    with distributed_from_env("cuda"):
        train(task, dataset, cfg, "runs/x")     # each rank takes its slice of every global batch
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterable, Iterator, Sequence

import torch
import torch.distributed as dist

from mmrobust.errors import ConfigError
from mmrobust.losses.distributed import rank_and_size

BUCKET_BYTES = 25 * 2**20  # DDP's default bucket size

__all__ = ["rank_and_size", "is_main", "barrier", "init_from_env", "distributed_from_env", "broadcast_", "all_reduce_mean_",
           "mean_across_ranks", "max_across_ranks"]


def is_main() -> bool:
    """True on rank 0 (or without a process group): the rank that writes files and shows progress."""
    return rank_and_size()[0] == 0


def barrier() -> None:
    """Wait for every rank; a no-op in one process."""
    if rank_and_size()[1] > 1:
        dist.barrier()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, str(default))
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} must be an integer; launch with torchrun, "
                          "which sets RANK, WORLD_SIZE and LOCAL_RANK") from None


def init_from_env(device: str = "cpu") -> tuple[int, int]:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT).

    Backend nccl for a cuda ``device`` (and ``torch.cuda.set_device(LOCAL_RANK)``, so "cuda" means this
    rank's GPU), gloo otherwise. With WORLD_SIZE unset or 1 nothing happens. Returns (rank, world_size).
    """
    size = _env_int("WORLD_SIZE", 1)
    if size <= 1 or (dist.is_available() and dist.is_initialized()):
        return rank_and_size()
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed; run one process")
    missing = [v for v in ("RANK", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise ConfigError(f"WORLD_SIZE={size} but {', '.join(missing)} unset; launch with torchrun "
                          "--nproc_per_node N (it sets them), or unset WORLD_SIZE for one process")
    cuda = torch.device(device).type == "cuda"
    if cuda:
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device} under torchrun but CUDA is not available; use --device cpu (gloo)")
        torch.cuda.set_device(_env_int("LOCAL_RANK", 0))
    dist.init_process_group(backend="nccl" if cuda else "gloo", rank=_env_int("RANK", 0), world_size=size)
    return rank_and_size()


@contextlib.contextmanager
def distributed_from_env(device: str = "cpu") -> Iterator[tuple[int, int]]:
    """:func:`init_from_env` for the duration of a block; destroys the process group it created."""
    created = _env_int("WORLD_SIZE", 1) > 1 and not (dist.is_available() and dist.is_initialized())
    ranks = init_from_env(device)
    try:
        yield ranks
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()


def broadcast_(tensors: Iterable[torch.Tensor], src: int = 0) -> None:
    """Overwrite ``tensors`` in place with rank ``src``'s values (start all ranks from the same weights)."""
    if rank_and_size()[1] == 1:
        return
    with torch.no_grad():
        for t in tensors:
            dist.broadcast(t.data, src=src)


def _buckets(tensors: Sequence[torch.Tensor], limit: int) -> Iterator[list[torch.Tensor]]:
    """Consecutive groups of same dtype and device, each at most ``limit`` bytes (or one tensor)."""
    bucket: list[torch.Tensor] = []
    size = 0
    for t in tensors:
        nbytes = t.numel() * t.element_size()
        if bucket and (size + nbytes > limit or t.dtype != bucket[0].dtype or t.device != bucket[0].device):
            yield bucket
            bucket, size = [], 0
        bucket.append(t)
        size += nbytes
    if bucket:
        yield bucket


def all_reduce_mean_(tensors: Sequence[torch.Tensor], *, bucket_bytes: int = BUCKET_BYTES) -> None:
    """Replace each tensor (e.g. every trainable ``.grad``) by its mean over ranks, in place.

    Flattens buckets of ~25 MB so a model with many small tensors costs few collectives; every rank
    must pass the same shapes in the same order.
    """
    size = rank_and_size()[1]
    if size == 1:
        return
    for bucket in _buckets(list(tensors), bucket_bytes):
        flat = torch.cat([t.reshape(-1) for t in bucket])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(size)
        offset = 0
        for t in bucket:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()


def mean_across_ranks(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The mean over ranks of scalar ``values`` (same keys everywhere), in one collective."""
    if rank_and_size()[1] == 1 or not values:
        return values
    keys = sorted(values)
    stacked = torch.stack([values[k].detach().to(torch.float64).reshape(()) for k in keys])
    all_reduce_mean_([stacked])
    return dict(zip(keys, stacked.unbind()))


def max_across_ranks(value: int, device: torch.device) -> int:
    """The largest ``value`` any rank holds (e.g. unreadable images in this step)."""
    if rank_and_size()[1] == 1:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())
