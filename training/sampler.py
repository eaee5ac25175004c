"""Deterministic, resumable, rank-sharded batch order.

Epoch ``e`` is a permutation seeded by ``seed + e``, cut to a multiple of ``world * batch_size`` so every
rank runs the same number of batches (no DDP hang). Micro-batch ``m`` is therefore a pure function of
``m``, which is what lets ``--resume`` continue exactly where a run stopped.
"""

from __future__ import annotations

from typing import Iterator

import torch


class ResumableBatchSampler(torch.utils.data.Sampler):
    def __init__(self, num_rows: int, batch_size: int, seed: int, rank: int, world: int, start: int, stop: int) -> None:
        self.batches_per_epoch = num_rows // (world * batch_size)
        if self.batches_per_epoch == 0:
            raise ValueError(f"{num_rows} rows are fewer than one batch ({batch_size} x {world} processes)")
        self.num_rows, self.batch_size, self.seed = num_rows, batch_size, seed
        self.rank, self.world, self.start, self.stop = rank, world, start, stop
        self._order: tuple[int, list[int]] = (-1, [])

    def __len__(self) -> int:
        return self.stop - self.start

    def batch(self, micro_step: int) -> list[tuple[int, int]]:
        epoch, position = divmod(micro_step, self.batches_per_epoch)
        if self._order[0] != epoch:
            permutation = torch.randperm(self.num_rows, generator=torch.Generator().manual_seed(self.seed + epoch))
            self._order = (epoch, permutation.tolist())
        mine = self._order[1][: self.batches_per_epoch * self.world * self.batch_size][self.rank :: self.world]
        return [(epoch, index) for index in mine[position * self.batch_size : (position + 1) * self.batch_size]]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for micro_step in range(self.start, self.stop):
            yield self.batch(micro_step)
