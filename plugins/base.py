"""``@plugin``: turn a typed, documented function into a langchain tool that carries a ``ToolPolicy``.

The argument schema the model sees comes from the function's type hints and its Google-style
docstring (the summary becomes the description, each ``Args`` entry an argument's description),
through langchain-core's ``@tool(parse_docstring=True)``. The policy (ask before running, timeout,
output cap) is stored in the tool's ``metadata``, where ``ToolPolicy.of`` reads it back, so the result
is still a plain ``StructuredTool`` that any langchain agent can run.

This module does not know about the registry, entry points or how and when tools are run.
"""

from __future__ import annotations

from typing import Any, Callable

from langchain_core.tools import BaseTool, tool

from assistant.errors import AssistantError
from assistant.tools.spec import TOOL_NAME, ToolPolicy


def check_plugin_name(name: object) -> None:
    """Raise ``AssistantError`` unless ``name`` is a valid function name (``assistant.tools.spec.TOOL_NAME``)."""
    if not isinstance(name, str) or not TOOL_NAME.match(name):
        raise AssistantError(f"plugin name {name!r} is not valid: start with a letter or _, then letters, digits, _ or -, at most 64")


def plugin(
    func: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    requires_confirmation: bool = False,
    timeout_s: float = 30.0,
    max_output_chars: int = 8000,
    returns_media: bool = False,
    user_text_filter: Callable[[str], str] | None = None,
    file_types: tuple[str, ...] = (),
) -> Any:
    """Make a langchain tool of ``func``; usable as ``@plugin`` or ``@plugin(requires_confirmation=True)``.

    Args:
        func: The typed function with a Google-style docstring documenting every argument.
        name: The tool's name; defaults to the function's name.
        requires_confirmation: The tool has side effects: the user approves each call.
        timeout_s: Seconds before a call is abandoned as an error.
        max_output_chars: Longer text output is an error.
        returns_media: The function returns ``(text, parts)``, parts being media content parts.
        user_text_filter: While the tool is on offer, every user message's text passes through this function
            before a prompt is built (a module-level function: it is stored in the tool's metadata).
        file_types: Extensions of attached files the tool reads (``ToolContext.file``); a chat UI offers them as uploads.

    Returns:
        The ``StructuredTool`` (or, without ``func``, a decorator that makes one).

    Raises:
        AssistantError: The name or policy is invalid, or the docstring does not document every argument.
    """
    policy = ToolPolicy(requires_confirmation, timeout_s, max_output_chars, user_text_filter, tuple(file_types))  # checked before any tool is made
    if name is not None:  # langchain would quietly use the function's name for ""
        check_plugin_name(name)
    response_format = "content_and_artifact" if returns_media else "content"

    def decorate(function: Callable[..., Any]) -> BaseTool:
        label = name if name is not None else getattr(function, "__name__", repr(function))
        try:
            made = tool(label, parse_docstring=True, response_format=response_format)(function)
        except (ValueError, TypeError) as error:  # langchain: "Found invalid Google-Style docstring." and odd signatures
            raise AssistantError(f"cannot make a plugin of {label!r}: {error} (it needs a docstring with an Args section)") from None
        undocumented = [argument for argument, schema in made.args.items() if not schema.get("description")]
        if undocumented:
            raise AssistantError(f"plugin {label!r}: the docstring's Args section does not describe {undocumented}")
        return policy.attach(made)

    return decorate(func) if func is not None else decorate
