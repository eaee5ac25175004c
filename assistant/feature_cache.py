"""A size-bounded LRU cache of frozen-encoder outputs, keyed by media content hash.

Encoders are frozen, so a frame's features never change: a media item that appears again (a later
turn, a retry, the same picture twice) is never re-encoded. Connector outputs are not cached because
connectors train. Safe to use from several threads (the decode thread, callers, plugins). This
module knows nothing about encoders or prompts.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Hashable

import torch


class FeatureCache:
    def __init__(self, max_megabytes: float) -> None:
        self.max_bytes = int(max_megabytes * 1024 * 1024)
        self._entries: OrderedDict[Hashable, torch.Tensor] = OrderedDict()
        self.bytes_used = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> torch.Tensor | None:
        with self._lock:
            tensor = self._entries.get(key)
            if tensor is not None:
                self._entries.move_to_end(key)
            return tensor

    def put(self, key: Hashable, tensor: torch.Tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        if size > self.max_bytes:
            return
        with self._lock:
            if key in self._entries:
                self.bytes_used -= self._nbytes(self._entries.pop(key))
            self._entries[key] = tensor
            self.bytes_used += size
            while self.bytes_used > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self.bytes_used -= self._nbytes(evicted)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.bytes_used = 0

    @staticmethod
    def _nbytes(tensor: torch.Tensor) -> int:
        return tensor.numel() * tensor.element_size()
