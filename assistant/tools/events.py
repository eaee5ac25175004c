"""Typed events a tool-aware stream yields, so call text never reaches the user as reply text.

One generation step yields ``TextDelta``s and ``ToolCallEvent``s and ends with ``AssistantTurn``;
the tool loop adds ``ToolConfirmation`` (a call waits for approval), ``ToolProgress`` while a long call
reports how far it is, and ``ToolResult`` per call.
This module knows nothing about how events are produced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from assistant.tools.calls import ToolCall


@dataclass
class TextDelta:
    """A piece of reply text."""

    text: str


@dataclass
class ToolCallEvent:
    """The model finished writing a tool call (it has not run yet)."""

    call: ToolCall


@dataclass
class ToolConfirmation:
    """A call to a tool with side effects waits for approval."""

    call: ToolCall


@dataclass
class ToolProgress:
    """A running call reported progress (``ToolContext.report``): ``done`` of ``total`` units, and a note."""

    call: ToolCall
    done: int
    total: int
    note: str = ""


@dataclass
class ToolResult:
    """A call ran (or was refused): ``message`` is the ``tool`` message appended to the conversation."""

    call: ToolCall
    message: dict[str, Any]
    ok: bool
    duration_s: float


@dataclass
class AssistantTurn:
    """One generation step ended: the assistant message (text and ``tool_calls``) and why it ended.

    ``finish_reason``: ``stop`` (end of turn), ``tool_calls``, ``length`` (``max_new_tokens``) or
    ``cancelled``.
    """

    message: dict[str, Any]
    finish_reason: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: list[ToolCall] = field(default_factory=list)  # the parsed calls, with any parse error kept


Event = TextDelta | ToolCallEvent | ToolConfirmation | ToolProgress | ToolResult | AssistantTurn
