"""Tool calls in the message format (OpenAI's shape) and their checks.

An assistant message may carry ``tool_calls``::

    [{"id": "call_1", "type": "function", "function": {"name": "calculator", "arguments": "{\\"expression\\": \\"2+2\\"}"}}]

``arguments`` is a JSON object as a string (OpenAI) or already a dict (chat templates, langchain).
A ``tool`` message answers one call through ``tool_call_id`` and may hold text and media parts.
This module knows nothing about tokens, templates or how tools run.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from assistant.errors import AssistantError


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


@dataclass
class ToolCall:
    """One call the model made: which tool, with which arguments."""

    name: str
    arguments: dict[str, Any]
    id: str = field(default_factory=new_call_id)
    error: str | None = field(default=None, compare=False)  # why it must not run: unparsable text, a forbidden tool

    def arguments_json(self) -> str:
        return json.dumps(self.arguments, ensure_ascii=False)

    def to_openai(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments_json()}}

    def to_template(self) -> dict[str, Any]:
        """The shape chat templates that accept ``tools=`` expect (arguments as a dict)."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}

    @classmethod
    def from_openai(cls, data: Any, where: str = "tool call") -> "ToolCall":
        """Parse and check one OpenAI-shaped call.

        Raises:
            AssistantError: Naming what is missing or malformed.
        """
        if not isinstance(data, dict):
            raise AssistantError(f"{where} must be an object, got {type(data).__name__}")
        function = data.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
            raise AssistantError(f"{where} needs function.name (a non-empty string)")
        arguments = function.get("arguments", {})
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as error:
                raise AssistantError(f"{where} ({function['name']}): arguments are not valid JSON: {error.msg}") from None
        if not isinstance(arguments, dict):
            raise AssistantError(f"{where} ({function['name']}): arguments must be a JSON object")
        call_id = data.get("id") or new_call_id()
        if not isinstance(call_id, str):
            raise AssistantError(f"{where}: id must be a string")
        return cls(function["name"], arguments, call_id)


def parse_tool_calls(value: Any, where: str) -> list[ToolCall]:
    """The ``tool_calls`` list of an assistant message, checked."""
    if not isinstance(value, list):
        raise AssistantError(f"{where}: tool_calls must be a list")
    return [ToolCall.from_openai(item, f"{where} tool call {index}") for index, item in enumerate(value)]
