"""The plugin registry: a plain dict of name -> langchain tool behind ``register_plugin``.

Plugins arrive three ways and all pass through ``register_plugin``, which refuses odd names (the
function-name rule of ``assistant.tools.spec.TOOL_NAME``), tools that cannot be described to a
model, and a second tool under a name already taken:

* the built-ins (``calculator``, ``caption_image``, ``transform_image``, ``save_note``, ``search_knowledge``,
  ``transcribe_audio``, ``draft_medical_report``, ``generate_image``);
* third-party packages declaring the entry-point group ``multimodal_assistant.plugins``; each entry
  point loads to a ``BaseTool``, a list of them, or a plain typed, documented function (wrapped with
  ``@plugin``); one that fails to load is logged and skipped, never fatal;
* code calling ``register_plugin`` directly.

It does not know how tools are offered to the model, confirmed or run.
"""

from __future__ import annotations

import logging
import threading
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Callable

from langchain_core.tools import BaseTool

from assistant.errors import AssistantError
from assistant.tools.spec import tool_spec
from plugins.base import check_plugin_name, plugin
from plugins.calculator import calculator
from plugins.captioning import caption_image
from plugins.image_tools import transform_image
from plugins.notes import save_note
from plugins.retrieval.tool import knowledge_tool
from plugins.medical.tool import draft_medical_report
from plugins.text_to_image.tool import generate_image
from plugins.transcription import transcribe_audio

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "multimodal_assistant.plugins"
BUILTIN_PLUGINS: tuple[BaseTool, ...] = (calculator, caption_image, transform_image, save_note, knowledge_tool(), transcribe_audio,
                                        draft_medical_report, generate_image)

_plugins: dict[str, BaseTool] = {}
_lock = threading.RLock()
_loaded = threading.Event()  # set once the built-ins and entry points are registered


def _as_tool(candidate: Any) -> BaseTool:
    if isinstance(candidate, BaseTool):
        return candidate
    if callable(candidate):
        return plugin(candidate)
    raise AssistantError(f"a plugin must be a langchain BaseTool or a typed, documented function, got {type(candidate).__name__}")


def _checked(tool: BaseTool, replace: bool) -> BaseTool | None:
    """``tool`` if it may be registered, None if this very tool is already registered."""
    check_plugin_name(tool.name)
    if _plugins.get(tool.name) is tool:
        return None
    if tool.name in _plugins and not replace:
        raise AssistantError(f"a plugin named {tool.name!r} is already registered; pass replace=True to replace it")
    tool_spec(tool)  # raises AssistantError if the tool cannot be described to a model
    return tool


def register_plugin(tool: BaseTool | Callable[..., Any], *, replace: bool = False) -> BaseTool:
    """Add a tool (or a typed, documented function, wrapped with ``@plugin``) to the registry.

    Registering the very same tool object again changes nothing.

    Raises:
        AssistantError: The name is invalid or taken (without ``replace``), or the tool cannot be described.
    """
    tool = _as_tool(tool)
    with _lock:
        if _checked(tool, replace) is not None:
            _plugins[tool.name] = tool
    return tool


def get_plugin(name: str) -> BaseTool:
    """The registered tool called ``name``.

    Raises:
        AssistantError: No plugin has that name; the message lists the available ones.
    """
    with _lock:
        if name not in _plugins:
            raise AssistantError(f"no plugin named {name!r}; available: {sorted(_plugins)}")
        return _plugins[name]


def plugin_names() -> list[str]:
    """The registered plugin names, sorted."""
    with _lock:
        return sorted(_plugins)


def unregister_plugin(name: str) -> None:
    """Remove a plugin (for tests); an unknown name is an error."""
    with _lock:
        if _plugins.pop(name, None) is None:
            raise AssistantError(f"no plugin named {name!r} to unregister; available: {sorted(_plugins)}")


def _register_entry_point(entry_point: EntryPoint) -> list[str]:
    loaded = entry_point.load()
    tools = [_as_tool(item) for item in (loaded if isinstance(loaded, (list, tuple)) else [loaded])]
    with _lock:  # all of an entry point's tools, or none of them
        fresh = [tool for tool in tools if _checked(tool, replace=False) is not None]
        if len({tool.name for tool in fresh}) < len(fresh):
            raise AssistantError("two of its tools share a name")
        _plugins.update({tool.name: tool for tool in fresh})
    return [tool.name for tool in fresh]


def load_entry_point_plugins(group: str = ENTRY_POINT_GROUP) -> list[str]:
    """Register the plugins installed packages declare under the entry-point ``group``.

    A failing entry point (import error, wrong type, bad or taken name) is logged as a warning naming
    it, its distribution and the reason, and skipped. Returns the names newly registered.
    """
    registered: list[str] = []
    for entry_point in entry_points(group=group):
        distribution = entry_point.dist.name if entry_point.dist is not None else "an unknown distribution"
        try:
            registered += _register_entry_point(entry_point)
        except Exception as error:  # a broken third-party plugin must not stop the assistant
            logger.warning("skipping plugin entry point %r (%s) from %s: %s: %s",
                           entry_point.name, entry_point.value, distribution, type(error).__name__, error)
    return registered


def available_plugins() -> dict[str, BaseTool]:
    """Register the built-ins and entry-point plugins (the first call only) and return ``{name: tool}``."""
    with _lock:
        if not _loaded.is_set():
            for tool in BUILTIN_PLUGINS:
                register_plugin(tool)
            load_entry_point_plugins()
            _loaded.set()
        return dict(_plugins)


def select_plugins(names: list[str]) -> list[BaseTool]:
    """The registered plugins called ``names`` in order (``["all"]``: every one, by name), e.g. for a server.

    Raises:
        AssistantError: A name is not a registered plugin.
    """
    available = available_plugins()
    if "all" in names:
        return [available[name] for name in sorted(available)]
    unknown = [name for name in names if name not in available]
    if unknown:
        raise AssistantError(f"unknown plugin(s) {unknown}; available: {sorted(available)}")
    return [available[name] for name in dict.fromkeys(names)]
