"""Run one blocking generation in its own thread and read its events from asyncio.

``GenerationWorker`` calls a function that returns an event iterator (``Assistant.stream_events`` or
``run_stream``) in a worker thread, so input checks, media decoding, prefill and decoding never block
the event loop. Each event, or the exception that ended the iterator, crosses to the loop through
``loop.call_soon_threadsafe`` into an ``asyncio.Queue``. Setting the worker's cancel event (the same
event the assistant is given) stops the generation promptly; the iterator is then closed, which
releases the engine's request. ``on_finish`` runs on the loop once the thread is done. This module
knows nothing about HTTP or OpenAI.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Callable, Iterator

logger = logging.getLogger(__name__)

_END = object()


class GenerationWorker:
    def __init__(self, start: Callable[[threading.Event], Iterator[Any]], on_finish: Callable[[], None] | None = None) -> None:
        """
        Args:
            start: Called in the worker thread with the cancel event; returns the event iterator.
            on_finish: Called on the event loop after the thread has finished (e.g. release a slot).
        """
        self.cancel = threading.Event()
        self._start = start
        self._on_finish = on_finish
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[tuple[Any, BaseException | None]] = asyncio.Queue()
        self._done = False
        self._thread = threading.Thread(target=self._work, name="generation", daemon=True)

    def start(self) -> "GenerationWorker":
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask the generation to stop (safe from any thread, any number of times)."""
        self.cancel.set()

    async def next(self) -> Any | None:
        """The next event, or None once the iterator has ended (or stopped after ``stop``).

        Raises:
            Exception: Whatever the iterator raised, re-raised here.
        """
        if self._done:
            return None
        item, error = await self._queue.get()
        if error is not None:
            self._done = True
            raise error
        if item is _END:
            self._done = True
            return None
        return item

    def __aiter__(self) -> "GenerationWorker":
        return self

    async def __anext__(self) -> Any:
        event = await self.next()
        if event is None:
            raise StopAsyncIteration
        return event

    def _work(self) -> None:
        try:
            events = self._start(self.cancel)
            try:
                for event in events:
                    self._send(event, None)
                    if self.cancel.is_set():
                        break
            finally:
                close = getattr(events, "close", None)
                if close is not None:
                    close()
            self._send(_END, None)
        except BaseException as error:  # handed to the reader, which decides what the client sees
            self._send(None, error)
        finally:
            if self._on_finish is not None:
                self._call_on_loop(self._on_finish)

    def _send(self, item: Any, error: BaseException | None) -> None:
        if not self._call_on_loop(self._queue.put_nowait, (item, error)):
            self.cancel.set()  # nobody can read the events any more

    def _call_on_loop(self, function: Callable[..., None], *args: Any) -> bool:
        try:
            self._loop.call_soon_threadsafe(function, *args)
            return True
        except RuntimeError:  # the loop is closed: the server is shutting down
            logger.debug("event loop closed; dropping a generation event")
            return False
