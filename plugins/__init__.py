"""Plugins: tools the assistant's model can call, written as typed, documented functions.

A plugin is a langchain-core tool. Its argument schema comes from type hints and the Google-style
docstring; a ``ToolPolicy`` in its metadata says whether the user must approve each call::

    from plugins import plugin

    @plugin(requires_confirmation=False)
    def word_count(text: str) -> str:
        \"\"\"Count the words in a text.

        Args:
            text: The text to count.
        \"\"\"
        return str(len(text.split()))

A package makes its plugins available by declaring them in its ``pyproject.toml``::

    [project.entry-points."multimodal_assistant.plugins"]
    word_count = "my_package.tools:word_count"

``available_plugins()`` returns the built-ins (``calculator``, ``caption_image``, ``transform_image``, ``save_note``,
``search_knowledge`` over the user's own files, see ``plugins.retrieval``)
and every installed entry-point plugin. Nothing here imports gradio or ``training``.
"""

from plugins.base import plugin
from plugins.registry import available_plugins, get_plugin, load_entry_point_plugins, plugin_names, register_plugin

__all__ = [
    "available_plugins",
    "get_plugin",
    "load_entry_point_plugins",
    "plugin",
    "plugin_names",
    "register_plugin",
]
