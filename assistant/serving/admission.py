"""Bounded admission: at most ``max_concurrent`` generations run and ``max_queue`` requests wait.

A request that finds the queue full is refused at once (``Overloaded``, a 429 with ``Retry-After``)
instead of piling up, so a burst costs memory in proportion to the limits, not to the burst. A slot
is held until the generation's worker thread has finished, not merely until the response is sent.
All methods run on the event loop's thread (a worker hands its release back through
``loop.call_soon_threadsafe``). This module knows nothing about HTTP or the model.
"""

from __future__ import annotations

import asyncio


class Overloaded(Exception):
    """Every slot is busy and the waiting queue is full."""


class Admission:
    def __init__(self, max_concurrent: int, max_queue: int) -> None:
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self.running = 0
        self.waiting = 0
        self._free = asyncio.Semaphore(max_concurrent)

    async def acquire(self) -> None:
        """Take a slot, waiting in the queue when all are busy.

        Raises:
            Overloaded: All slots are busy and ``max_queue`` requests already wait.
        """
        if (self._free.locked() or self.waiting) and self.waiting >= self.max_queue:
            raise Overloaded(f"{self.running} generations are running and {self.waiting} requests are waiting")
        self.waiting += 1
        try:
            await self._free.acquire()
        finally:
            self.waiting -= 1
        self.running += 1

    def release(self) -> None:
        """Give a slot back (once per successful ``acquire``)."""
        self.running -= 1
        self._free.release()
