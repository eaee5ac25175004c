"""Deterministic, resumable, rank-sharded batch order.

Epoch ``e`` is a permutation seeded by ``seed + e``, cut to a multiple of ``world * batch_size`` so every
rank runs the same number of batches (no DDP hang). With row lengths, rows are grouped by length
inside windows of ``GROUP_WINDOW`` batches (less padding) and the batches are then shuffled. Micro-batch
``m`` is a pure function of ``m``, which is what lets ``--resume`` continue exactly where a run stopped.
"""

from __future__ import annotations

from typing import Iterator

import torch

GROUP_WINDOW = 16  # batches whose rows are sorted by length together


class ResumableBatchSampler(torch.utils.data.Sampler):
    def __init__(
        self, num_rows: int, batch_size: int, seed: int, rank: int, world: int, start: int, stop: int,
        lengths: list[int] | None = None,
    ) -> None:
        self.batches_per_epoch = num_rows // (world * batch_size)
        if self.batches_per_epoch == 0:
            raise ValueError(f"{num_rows} rows are fewer than one batch ({batch_size} x {world} processes)")
        self.num_rows, self.batch_size, self.seed = num_rows, batch_size, seed
        self.rank, self.world, self.start, self.stop = rank, world, start, stop
        self.lengths = lengths
        self._order: tuple[int, list[int]] = (-1, [])

    def __len__(self) -> int:
        return self.stop - self.start

    def batch(self, micro_step: int) -> list[tuple[int, int]]:
        epoch, position = divmod(micro_step, self.batches_per_epoch)
        if self._order[0] != epoch:
            self._order = (epoch, self._epoch_order(epoch))
        mine = self._order[1][self.rank :: self.world]
        return [(epoch, index) for index in mine[position * self.batch_size : (position + 1) * self.batch_size]]

    def _epoch_order(self, epoch: int) -> list[int]:
        """Row indices of one epoch; each run of ``world * batch_size`` of them is one global batch."""
        generator = torch.Generator().manual_seed(self.seed + epoch)
        global_batch = self.world * self.batch_size
        order = torch.randperm(self.num_rows, generator=generator).tolist()[: self.batches_per_epoch * global_batch]
        if self.lengths is None:
            return order
        window = GROUP_WINDOW * global_batch
        grouped = []
        for start in range(0, len(order), window):
            grouped += sorted(order[start : start + window], key=lambda index: self.lengths[index])
        batches = [grouped[i : i + global_batch] for i in range(0, len(grouped), global_batch)]
        shuffled = torch.randperm(len(batches), generator=generator).tolist()
        return [index for b in shuffled for index in batches[b]]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for micro_step in range(self.start, self.stop):
            yield self.batch(micro_step)
