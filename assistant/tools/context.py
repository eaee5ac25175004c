"""What a running tool may see of the conversation that called it.

A tool asks for it with an argument named ``context`` annotated
``Annotated[ToolContext, InjectedToolArg]``: langchain leaves injected arguments out of the schema the
model sees, and the tool runner fills this one in. Tools that return media use langchain's
``response_format="content_and_artifact"`` and return ``(text, parts)``, where ``parts`` is a list of
content parts in the assistant's message format, e.g. ``[{"type": "image", "image": pil_image}]``.
This module knows nothing about models or prompts.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from langchain_core.tools import ToolException
from PIL import Image

CONTEXT_ARGUMENT = "context"


@dataclass
class ToolContext:
    """The conversation's pictures and audio clips (oldest first, from user and tool turns), its attached
    files, its user text, earlier tool results' text, a cancel flag, a progress callback, the assistant."""

    images: list[Image.Image] = field(default_factory=list)
    cancel: threading.Event = field(default_factory=threading.Event)
    assistant: Any = None  # the Assistant running the loop, for plugins that use its own vision
    audio: list[Any] = field(default_factory=list)  # ``assistant.audio.AudioClip``s, whole (not cut to the token budget)
    user_texts: list[str] = field(default_factory=list)  # the user messages' text as the model saw it (after text filters)
    files: list[Any] = field(default_factory=list)  # the user's attached files (paths or bytes, unread), oldest first
    tool_texts: list[tuple[str, str]] = field(default_factory=list)  # (tool name, result text) of earlier calls, oldest first
    progress: Callable[[int, int, str], None] | None = None  # set by the runner for each running call

    def report(self, done: int, total: int, note: str = "") -> None:
        """Tell the caller how far a long call is (``done`` of ``total``); shown as progress in a chat UI."""
        if self.progress is not None:
            self.progress(done, total, note)

    def file(self, index: int = -1) -> Any:
        """The ``index``-th attached file (negative counts from the latest); the model knows it as
        "attached file {index + 1}".

        Raises:
            ToolException: There is no such file; the message goes back to the model.
        """
        return _pick(self.files, index, "attached file")

    def clip(self, index: int = -1) -> Any:
        """The ``index``-th audio clip of the conversation (negative counts from the latest).

        Raises:
            ToolException: There is no such clip; the message goes back to the model.
        """
        return _pick(self.audio, index, "audio clip")

    def image(self, index: int = -1) -> Image.Image:
        """The ``index``-th picture of the conversation (negative counts from the latest).

        Raises:
            ToolException: There is no such picture; the message goes back to the model.
        """
        return _pick(self.images, index, "picture")


def _pick(items: list[Any], index: int, what: str) -> Any:
    if not items:
        raise ToolException(f"the conversation has no {what} to work on")
    if not -len(items) <= index < len(items):
        raise ToolException(f"{what} {index} does not exist; the conversation has {len(items)}")
    return items[index]
