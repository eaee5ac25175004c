"""Tool-call formats: how tools are described to a model, how it writes calls, how results come back.

A format is a small class behind a registry (one file per format, as vLLM's ``tool_parsers/``):

- ``system_block``: the tools described in a system message, for chat templates that do not accept
  ``tools=`` (templates that do render the tools themselves);
- ``render_calls`` / ``render_results``: earlier calls and their results written back into the prompt
  the way the model writes and reads them;
- ``structural_tag``: the xgrammar structural tag that constrains decoding for a ``ToolChoice``;
- ``begin`` / ``end`` / ``parse_body``: what the stream parser (``CallStreamParser``) looks for.

Formats know nothing about tokenizers, models or how calls run.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from assistant.errors import AssistantError
from assistant.tools.calls import ToolCall
from assistant.tools.events import TextDelta, ToolCallEvent
from assistant.tools.spec import ToolChoice, ToolSpec

FORMAT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


class ToolFormat:
    """Base class; subclasses set ``name``, ``begin``, ``end`` and implement the methods."""

    name: str = ""
    begin: str = ""
    end: str = ""

    def system_block(self, specs: list[ToolSpec]) -> str:
        raise NotImplementedError

    def render_calls(self, calls: list[ToolCall], guard: Callable[[str], str] = str) -> str:
        """Calls as the model writes them; ``guard`` wraps each call's arguments text (untrusted)."""
        raise NotImplementedError

    def render_results(self, results: list[str]) -> str:
        """One prompt text for consecutive tool results (each already rendered as text with media markers)."""
        raise NotImplementedError

    def escape_result(self, text: str) -> str:
        """Untrusted tool output with the format's own fences made inert."""
        return text

    def parse_body(self, body: str) -> ToolCall:
        raise NotImplementedError

    def structural_tag(self, specs: list[ToolSpec], choice: ToolChoice, parallel: bool) -> dict[str, Any] | None:
        raise NotImplementedError


_FORMATS: dict[str, type[ToolFormat]] = {}


def register_tool_format(cls: type[ToolFormat]) -> type[ToolFormat]:
    """Add a format class under ``cls.name`` (usable as a class decorator)."""
    if not FORMAT_NAME.match(cls.name or ""):
        raise ValueError(f"tool format name {cls.name!r} must be lowercase letters, digits and _")
    if cls.name in _FORMATS:
        raise ValueError(f"tool format {cls.name!r} is already registered")
    _FORMATS[cls.name] = cls
    return cls


def build_tool_format(name: str) -> ToolFormat:
    if name not in _FORMATS:
        raise AssistantError(f"unknown tool format {name!r}; available: {sorted(_FORMATS)}")
    return _FORMATS[name]()


class CallStreamParser:
    """Splits streamed reply text into text deltas and the calls written between ``begin`` and ``end``.

    Text that may be the start of a call (a prefix of ``begin``, or trailing whitespace) is held back
    until it is clearly not, so call text never reaches the user as reply text.
    """

    def __init__(self, tool_format: ToolFormat) -> None:
        self.format = tool_format
        self._buffer = ""
        self._inside = False
        self.text_parts: list[str] = []
        self.calls: list[ToolCall] = []

    @property
    def text(self) -> str:
        return "".join(self.text_parts).strip()

    def feed(self, text: str) -> list[TextDelta | ToolCallEvent]:
        self._buffer += text
        events: list[TextDelta | ToolCallEvent] = []
        begin, end = self.format.begin, self.format.end
        while True:
            if self._inside:
                at = self._buffer.find(end)
                if at < 0:
                    return events
                call = self.format.parse_body(self._buffer[:at])
                self.calls.append(call)
                events.append(ToolCallEvent(call))
                self._buffer, self._inside = self._buffer[at + len(end):], False
                continue
            at = self._buffer.find(begin)
            if at >= 0:
                self._emit(self._buffer[:at].rstrip(), events)
                self._buffer, self._inside = self._buffer[at + len(begin):], True
                continue
            keep = _partial_suffix(self._buffer, begin)
            safe = self._buffer[: len(self._buffer) - keep]
            trimmed = safe.rstrip()
            self._emit(trimmed, events)
            self._buffer = self._buffer[len(trimmed):]
            return events

    def finish(self) -> list[TextDelta | ToolCallEvent]:
        """Flush at the end of generation; a call cut off before ``end`` becomes a call marked as an error."""
        events: list[TextDelta | ToolCallEvent] = []
        if self._inside:
            call = ToolCall("unknown", {})
            call.error = f"the tool call was cut off before {self.format.end!r} (output limit reached?)"
            self.calls.append(call)
            events.append(ToolCallEvent(call))
        elif self._buffer.strip() and self.format.begin.startswith(self._buffer.strip()):
            pass  # generation ended in the middle of the opening tag: nothing of it is reply text
        else:
            self._emit(self._buffer.rstrip(), events)
        self._buffer, self._inside = "", False
        return events

    def _emit(self, text: str, events: list) -> None:
        if not text:
            return
        if not self.text_parts:
            text = text.lstrip()
            if not text:
                return
        self.text_parts.append(text)
        events.append(TextDelta(text))


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``marker``."""
    for length in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:length]):
            return length
    return 0
