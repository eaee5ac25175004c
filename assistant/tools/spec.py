"""What the model is told about a tool, and how the project runs it.

A tool is a langchain-core tool (``BaseTool``; ``@tool(parse_docstring=True)`` derives its argument
schema from type hints and a Google-style docstring), an OpenAI-style function dict (schema only:
such a tool can be offered and called, but not run here), or a plain typed, documented function,
which is wrapped into a ``StructuredTool``. On top of langchain's description, the project keeps a
``ToolPolicy`` (confirmation, timeout, output cap) in the tool's own ``metadata`` dict, so a plugin
stays a plain langchain tool that works in any langchain agent.

This module knows nothing about prompts, tokens or the decode engine.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from langchain_core.tools import BaseTool, StructuredTool
from langchain_core.utils.function_calling import convert_to_openai_tool

from assistant.errors import AssistantError

POLICY_KEY = "multimodal_assistant"  # where a tool's ToolPolicy lives in ``tool.metadata``
TOOL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")  # OpenAI's function-name rule, starting with a letter or _
TOOL_CHOICE_MODES = ("auto", "none", "required")


@dataclass(frozen=True)
class ToolPolicy:
    """How the project runs a tool, beyond its schema."""

    requires_confirmation: bool = field(default=False, metadata={"help": "has side effects: ask before running"})
    timeout_s: float = field(default=30.0, metadata={"help": "seconds before the call is abandoned as an error"})
    max_output_chars: int = field(default=8000, metadata={"help": "longer text output is an error, not truncated silently"})
    # Whenever the tool is on offer, every user message's text passes through this before a prompt is built
    # (e.g. the medical plugin's PHI redactor), so the model never sees what it removes.
    user_text_filter: Callable[[str], str] | None = field(default=None, metadata={"help": "filter of user text (code only)"})
    # Extensions of the attached files (``{"type": "file"}`` parts) the tool reads; a chat UI accepts them as uploads
    file_types: tuple[str, ...] = field(default=(), metadata={"help": "attached-file extensions it reads, e.g. ('.dcm',)"})

    def __post_init__(self) -> None:
        if not isinstance(self.requires_confirmation, bool):
            raise AssistantError(f"requires_confirmation must be a bool, got {self.requires_confirmation!r}")
        if not (isinstance(self.timeout_s, (int, float)) and 0 < self.timeout_s <= 3600):
            raise AssistantError(f"timeout_s must be in (0, 3600], got {self.timeout_s!r}")
        if not (isinstance(self.max_output_chars, int) and self.max_output_chars > 0):
            raise AssistantError(f"max_output_chars must be a positive integer, got {self.max_output_chars!r}")
        if self.user_text_filter is not None and not callable(self.user_text_filter):
            raise AssistantError(f"user_text_filter must be a function of the text, got {self.user_text_filter!r}")
        object.__setattr__(self, "file_types", tuple(self.file_types))  # stored in metadata as a list
        if not all(isinstance(suffix, str) and suffix.startswith(".") and suffix[1:].isalnum() for suffix in self.file_types):
            raise AssistantError(f"file_types must be extensions such as '.dcm', got {self.file_types!r}")

    @classmethod
    def of(cls, tool: BaseTool | None) -> "ToolPolicy":
        """The policy stored in ``tool.metadata`` (defaults for a tool that has none)."""
        stored = ((tool.metadata or {}) if tool is not None else {}).get(POLICY_KEY) or {}
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in stored.items() if key in known})

    def attach(self, tool: BaseTool) -> BaseTool:
        """Store this policy in ``tool.metadata`` and return the tool."""
        tool.metadata = {**(tool.metadata or {}), POLICY_KEY: dataclasses.asdict(self)}
        return tool


@dataclass(frozen=True)
class ToolSpec:
    """A tool as offered to the model: name, description, JSON schema of its arguments, and policy."""

    name: str
    description: str
    parameters: dict[str, Any]
    policy: ToolPolicy = ToolPolicy()
    tool: BaseTool | None = None  # None: schema only (e.g. tools an API client runs itself)

    @property
    def text_argument(self) -> str | None:
        """The name of this tool's one required argument when it is free text (a string with no enum, const,
        pattern or format: ``generate_image(prompt)``, ``search_knowledge(query)``), else None. A user's
        ``/name text`` command can then be the call itself."""
        required = self.parameters.get("required") or []
        if len(required) != 1:
            return None
        schema = (self.parameters.get("properties") or {}).get(required[0]) or {}
        free = schema.get("type") == "string" and not {"enum", "const", "pattern", "format"} & set(schema)
        return required[0] if free else None

    def openai(self) -> dict[str, Any]:
        """The OpenAI ``{"type": "function", "function": {...}}`` form (what chat templates take)."""
        return {"type": "function", "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}


def tool_spec(tool: BaseTool | dict[str, Any] | Callable[..., Any]) -> ToolSpec:
    """Describe a langchain tool, an OpenAI function dict or a typed, documented function.

    Raises:
        AssistantError: The tool cannot be described or its name is not a valid function name.
    """
    if isinstance(tool, ToolSpec):
        return tool
    runnable: BaseTool | None = None
    if isinstance(tool, BaseTool):
        runnable = tool
    elif callable(tool) and not isinstance(tool, dict):
        try:
            runnable = StructuredTool.from_function(tool, parse_docstring=True)
        except Exception as error:  # langchain raises ValueError for undocumented arguments, TypeError for odd signatures
            raise AssistantError(f"cannot make a tool of {getattr(tool, '__name__', tool)!r}: {error}") from None
    try:
        described = convert_to_openai_tool(runnable if runnable is not None else tool)["function"]
    except Exception as error:
        raise AssistantError(f"cannot describe tool {str(tool)[:80]!r}: {error}") from None
    name = described.get("name", "")
    if not isinstance(name, str) or not TOOL_NAME.match(name):
        raise AssistantError(f"tool name {name!r} is not a valid function name (letters, digits, _ or -, at most 64)")
    parameters = described.get("parameters") or {"type": "object", "properties": {}}
    if parameters.get("type") != "object":
        raise AssistantError(f"tool {name!r}: the argument schema must be a JSON object schema")
    return ToolSpec(name, described.get("description", ""), parameters, ToolPolicy.of(runnable), runnable)


def tool_specs(tools: list[Any] | None) -> list[ToolSpec]:
    """``tool_spec`` of each tool; refuses two tools with one name."""
    specs = [tool_spec(tool) for tool in tools or []]
    names = [spec.name for spec in specs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise AssistantError(f"two tools share the name(s) {repeated}")
    return specs


@dataclass(frozen=True)
class ToolChoice:
    """``mode`` is auto | none | required | forced; ``name`` is the forced tool's name."""

    mode: str = "auto"
    name: str | None = None


def parse_tool_choice(choice: Any, specs: list[ToolSpec]) -> ToolChoice:
    """Normalise ``"auto" | "none" | "required" | <name> | {"type": "function", "function": {"name"}}``.

    Raises:
        AssistantError: Unknown mode, a named tool that is not offered, or ``required`` without tools.
    """
    if choice is None:
        choice = "auto"
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name") if choice.get("type") == "function" else None
        if not isinstance(name, str):
            raise AssistantError(f"tool_choice {choice!r} must be {{'type': 'function', 'function': {{'name': ...}}}}")
        choice = name
    if not isinstance(choice, str):
        raise AssistantError(f"tool_choice must be a string or a function dict, got {type(choice).__name__}")
    names = [spec.name for spec in specs]
    if choice in TOOL_CHOICE_MODES:
        if choice == "required" and not specs:
            raise AssistantError("tool_choice='required' needs at least one tool")
        return ToolChoice("auto" if not specs and choice == "auto" else choice)
    if choice not in names:
        raise AssistantError(f"tool_choice names {choice!r}, which is not among the offered tools {names}")
    return ToolChoice("forced", choice)
