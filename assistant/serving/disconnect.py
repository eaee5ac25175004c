"""Notice that an HTTP client went away while the server waits for it, and stop its work.

Once a request's body has been read, the ASGI ``receive`` channel only ever delivers
``http.disconnect``. ``DisconnectWatch`` listens on it in a task while the handler waits (for an
admission slot, for the first event, for a whole non-streamed answer); when the client leaves, it
calls ``on_disconnect`` (which sets the generation's cancel event) and makes the pending wait raise
``ClientGone``. A streamed answer is watched by the streaming response itself (see
``assistant.serving.completions``). This module knows nothing about the model or OpenAI.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Awaitable, Callable

from starlette.types import Receive


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


class DisconnectWatch:
    def __init__(self, receive: Receive, on_disconnect: Callable[[], None] = lambda: None) -> None:
        self._receive = receive
        self.on_disconnect = on_disconnect
        self.gone = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> "DisconnectWatch":
        self._task = asyncio.create_task(self._listen())
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _listen(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.gone.set()
                self.on_disconnect()
                return

    async def wait(self, awaitable: Awaitable[Any], undo: Callable[[Any], None] | None = None) -> Any:
        """The result of ``awaitable``, unless the client leaves first.

        Args:
            awaitable: What to wait for; cancelled when the client leaves.
            undo: Called with the result if ``awaitable`` finished anyway while being cancelled
                (e.g. release an admission slot it took).

        Raises:
            ClientGone: The client disconnected before ``awaitable`` finished.
        """
        task = asyncio.ensure_future(awaitable)
        gone = asyncio.create_task(self.gone.wait())
        try:
            await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # the handler itself was cancelled
            task.cancel()
            raise
        finally:
            gone.cancel()
        if task.done():
            return task.result()
        task.cancel()
        try:
            result = await task
        except asyncio.CancelledError:
            raise ClientGone() from None
        if undo is not None:
            undo(result)
        raise ClientGone()
