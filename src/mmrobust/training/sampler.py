"""Deterministic, resumable batch order: epoch e uses randperm seeded by (seed, e)."""
from __future__ import annotations

from typing import Iterator

import torch

from mmrobust.errors import ConfigError


class EpochBatches(torch.utils.data.Sampler):
    """Yields batches of ``(epoch, index)`` keys from ``start_step`` to ``total_steps`` (drop-last epochs).

    The same (seed, step) always gives the same batch, so a resumed run sees exactly the data an
    uninterrupted run would, and datasets can seed per-sample augmentations by (epoch, index).
    """

    def __init__(self, n: int, *, batch_size: int, seed: int, total_steps: int, start_step: int = 0) -> None:
        if n < batch_size:
            raise ConfigError(f"batch size {batch_size} is larger than the dataset ({n} rows); lower --batch-size")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.total_steps, self.start_step = total_steps, start_step
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
            yield [(epoch, int(i)) for i in idx]

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step)
