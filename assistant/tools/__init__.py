"""Tool calling: tool descriptions, the tool-call format the model writes, constrained decoding of
calls, running calls safely, and the generate -> run -> generate loop.

Plugins (``plugins/``) are langchain-core tools; nothing here imports ``plugins``.
"""

from assistant.tools import hermes  # noqa: F401  (registers the hermes tool format)
from assistant.tools.context import CONTEXT_ARGUMENT, ToolContext
from assistant.tools.spec import ToolChoice, ToolPolicy, ToolSpec, parse_tool_choice, tool_spec, tool_specs

__all__ = [
    "CONTEXT_ARGUMENT",
    "ToolChoice",
    "ToolContext",
    "ToolPolicy",
    "ToolSpec",
    "parse_tool_choice",
    "tool_spec",
    "tool_specs",
]
