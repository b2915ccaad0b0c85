"""Deterministic, resumable batch order: epoch e uses randperm seeded by (seed, e)."""
from __future__ import annotations

from typing import Iterator, Sequence, TypeVar

import torch

from mmrobust.errors import ConfigError

K = TypeVar("K")


def rank_share(keys: Sequence[K], *, rank: int, world_size: int, micro_batches: int = 1) -> list[K]:
    """This rank's part of a global batch, laid out so results do not depend on the world size.

    The global batch is cut into ``micro_batches`` contiguous micro-batches, and each of those into
    ``world_size`` contiguous slices; rank r takes slice r of every micro-batch, in order. Gathered over
    ranks, micro-batch m is then exactly micro-batch m of one process with the same global batch.
    """
    n = len(keys)
    if n % (world_size * micro_batches):
        raise ConfigError(f"batch size {n} is not divisible by world size {world_size} x accum steps "
                          f"{micro_batches}; every rank takes an equal slice: use --batch-size "
                          f"{max(1, n // (world_size * micro_batches)) * world_size * micro_batches}")
    micro = n // micro_batches
    part = micro // world_size
    return [k for m in range(micro_batches) for k in keys[m * micro + rank * part:m * micro + (rank + 1) * part]]


class EpochBatches(torch.utils.data.Sampler):
    """Yields batches of ``(epoch, index)`` keys from ``start_step`` to ``total_steps`` (drop-last epochs).

    The same (seed, step) always gives the same batch, so a resumed run sees exactly the data an
    uninterrupted run would, and datasets can seed per-sample augmentations by (epoch, index).
    ``batch_size`` is the global batch; with ``world_size`` > 1 each rank gets its :func:`rank_share`.
    """

    def __init__(self, n: int, *, batch_size: int, seed: int, total_steps: int, start_step: int = 0,
                 rank: int = 0, world_size: int = 1, micro_batches: int = 1) -> None:
        if n < batch_size:
            raise ConfigError(f"batch size {batch_size} is larger than the dataset ({n} rows); lower --batch-size")
        rank_share(range(batch_size), rank=rank, world_size=world_size, micro_batches=micro_batches)  # checks
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.total_steps, self.start_step = total_steps, start_step
        self.rank, self.world_size, self.micro_batches = rank, world_size, micro_batches
        self.steps_per_epoch = n // batch_size
        self._perm: tuple[int, torch.Tensor] | None = None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed((self.seed * 100003 + epoch) % 2**63)  # any seed, same streams
            self._perm = (epoch, torch.randperm(self.n, generator=g))
        return self._perm[1]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start_step, self.total_steps):
            epoch, k = divmod(step, self.steps_per_epoch)
            idx = self._permutation(epoch)[k * self.batch_size:(k + 1) * self.batch_size]
            keys = [(epoch, int(i)) for i in idx]
            yield keys if self.world_size == 1 else rank_share(keys, rank=self.rank, world_size=self.world_size,
                                                                micro_batches=self.micro_batches)

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step)
