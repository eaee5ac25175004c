"""A bounded pool of KV prefixes: each conversation's cache, found again by its content.

An entry is the KV cache of one finished (or just prefilled) sequence together with one key per
cached position (token id, or media key + offset). A new request takes the entry that shares the
longest prefix with its keys, so a conversation's next turn continues from its own cache, and a
system prompt or tool schemas shared by many sessions are prefilled once and reused by all. Entries
are evicted least recently used once their total size passes ``max_mb``; an evicted session simply
prefills again. Tensors handed out are never written in place (the cache layers concatenate), so an
entry can serve several requests at once.

The pool knows nothing about models, sampling or threads; its owner serialises access.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from dataclasses import dataclass
from typing import Hashable

import torch

Layers = list[tuple[torch.Tensor, torch.Tensor]]  # per layer (keys, values), each (1, H, T, D)


def common_prefix_length(cached: list[Hashable], new: list[Hashable]) -> int:
    length = min(len(cached), len(new))
    for index in range(length):
        if cached[index] != new[index]:
            return index
    return length


@dataclass
class PoolEntry:
    keys: list[Hashable]
    layers: Layers
    nbytes: int


class KVPool:
    def __init__(self, max_mb: float) -> None:
        self.max_bytes = int(max_mb * 2**20)
        self._entries: OrderedDict[Hashable, PoolEntry] = OrderedDict()
        self._anonymous = itertools.count()
        self.evictions = 0
        self.nbytes = 0  # running totals, so other threads can read them while the owner writes
        self.cached_tokens = 0

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self.nbytes = self.cached_tokens = 0

    def new_name(self) -> Hashable:
        """A name for a sequence that came without a session id."""
        return ("anonymous", next(self._anonymous))

    def longest_prefix(self, keys: list[Hashable]) -> tuple[Hashable | None, int]:
        """The entry sharing the longest prefix with ``keys`` and that length (``(None, 0)`` if none)."""
        best, best_length = None, 0
        for name, entry in self._entries.items():
            length = common_prefix_length(entry.keys, keys)
            if length > best_length:
                best, best_length = name, length
        if best is not None:
            self._entries.move_to_end(best)
        return best, best_length

    def prefix(self, name: Hashable, length: int) -> Layers:
        """The first ``length`` positions of entry ``name`` as views (never modified in place)."""
        return [(k[:, :, :length], v[:, :, :length]) for k, v in self._entries[name].layers]

    def covers(self, name: Hashable, length: int) -> bool:
        """Whether ``length`` positions are the whole of entry ``name`` (a continuation may replace it)."""
        entry = self._entries.get(name)
        return entry is not None and len(entry.keys) == length

    def put(self, name: Hashable, keys: list[Hashable], layers: Layers) -> None:
        """Store (or replace) entry ``name``, then evict the least recently used beyond the cap."""
        nbytes = sum(k.element_size() * k.nelement() + v.element_size() * v.nelement() for k, v in layers)
        self._remove(name)
        if nbytes > self.max_bytes:
            self.evictions += 1
            return
        self._entries[name] = PoolEntry(list(keys), layers, nbytes)
        self.nbytes += nbytes
        self.cached_tokens += len(keys)
        while self.nbytes > self.max_bytes and len(self._entries) > 1:
            self._remove(next(iter(self._entries)))
            self.evictions += 1

    def _remove(self, name: Hashable) -> None:
        entry = self._entries.pop(name, None)
        if entry is not None:
            self.nbytes -= entry.nbytes
            self.cached_tokens -= len(entry.keys)
