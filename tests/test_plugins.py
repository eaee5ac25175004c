"""Plugins: schema from a typed function, the registry's refusals, entry-point loading, the built-ins.

Tools are invoked the langchain way, with a tool call, so the result is a ``ToolMessage``. Nothing is
downloaded; the third-party plugin is a fake distribution written to ``tmp_path``.
"""

from __future__ import annotations

import ast
import logging
import sys
from pathlib import Path
from typing import Literal

import pytest
from langchain_core.tools import ToolException
from PIL import Image

from assistant.errors import AssistantError
from assistant.tools import ToolContext, ToolPolicy, tool_spec
from plugins import available_plugins, get_plugin, load_entry_point_plugins, plugin, plugin_names, register_plugin
from plugins.calculator import calculator
from plugins.image_tools import transform_image
from plugins.notes import save_note
from plugins.registry import unregister_plugin

RED, BLUE = (255, 0, 0), (0, 0, 255)


@pytest.fixture(autouse=True)
def restore_registry():
    """Each test leaves the registry as it found it (the built-ins loaded first: removing them after a test
    that loaded them would leave an empty registry marked as loaded for every later test file)."""
    available_plugins()
    before = set(plugin_names())
    yield
    for name in set(plugin_names()) - before:
        unregister_plugin(name)


def call(tool, **args):
    return tool.invoke({"type": "tool_call", "id": "c1", "name": tool.name, "args": args})


def count_words(text: str, unit: Literal["words", "lines"] = "words", strict: bool = False) -> str:
    """Count the words or lines in a text.

    Args:
        text: The text to count.
        unit: What to count.
        strict: Count only non-empty items.
    """
    return str(len(text.split() if unit == "words" else text.splitlines()))


def test_schema_comes_from_type_hints_and_docstring():
    spec = tool_spec(plugin(count_words))
    assert spec.name == "count_words"
    assert spec.description == "Count the words or lines in a text."
    properties = spec.parameters["properties"]
    assert properties["text"] == {"type": "string", "description": "The text to count."}
    assert properties["unit"]["enum"] == ["words", "lines"] and properties["unit"]["default"] == "words"
    assert properties["strict"]["type"] == "boolean" and properties["strict"]["description"] == "Count only non-empty items."
    assert spec.parameters["required"] == ["text"]
    assert spec.policy == ToolPolicy()


def test_plugin_keyword_form_stores_policy_and_name():
    tool = plugin(name="counter", requires_confirmation=True, timeout_s=5.0)(count_words)
    assert tool.name == "counter"
    assert ToolPolicy.of(tool) == ToolPolicy(requires_confirmation=True, timeout_s=5.0)
    assert call(tool, text="a b c").content == "3"


def test_plugin_refuses_undocumented_arguments_and_bad_policy():
    def no_docstring(text: str) -> str:
        return text

    def half_documented(text: str, count: int = 1) -> str:
        """Repeat a text.

        Args:
            text: The text.
        """
        return text * count

    with pytest.raises(AssistantError, match="no_docstring"):
        plugin(no_docstring)
    with pytest.raises(AssistantError, match="count"):
        plugin(half_documented)
    with pytest.raises(AssistantError, match="timeout_s"):
        plugin(timeout_s=0)(count_words)


def test_register_plugin_refuses_duplicates_unless_replace():
    first = register_plugin(count_words)  # a plain function is wrapped
    assert get_plugin("count_words") is first and ToolPolicy.of(first) == ToolPolicy()
    assert register_plugin(first) is first  # the very same tool again changes nothing
    with pytest.raises(AssistantError, match="already registered"):
        register_plugin(plugin(count_words))
    second = register_plugin(plugin(count_words), replace=True)
    assert get_plugin("count_words") is second is not first


@pytest.mark.parametrize("name", ["bad name", "", "x" * 65, "1abc"])
def test_register_plugin_refuses_odd_names(name):
    with pytest.raises(AssistantError, match="not valid"):
        plugin(count_words, name=name)
    tool = plugin(count_words)
    tool.name = name  # a tool built elsewhere, e.g. by a third party's own code
    with pytest.raises(AssistantError, match="not valid"):
        register_plugin(tool)
    assert name not in plugin_names() and "count_words" not in plugin_names()


def test_get_plugin_error_lists_available_names():
    register_plugin(count_words)
    with pytest.raises(AssistantError, match=r"no plugin named 'nope'.*count_words"):
        get_plugin("nope")
    unregister_plugin("count_words")
    assert "count_words" not in plugin_names()


def test_available_plugins_has_the_builtins():
    plugins = available_plugins()
    assert plugins["calculator"] is calculator and plugins["transform_image"] is transform_image
    assert plugins["save_note"] is save_note and "search_knowledge" in plugins
    assert available_plugins() == plugins  # the second call registers nothing new


FAKE_MODULE = '''
from plugins import plugin

@plugin
def shout(text: str) -> str:
    """Say a text loudly.

    Args:
        text: What to say.
    """
    return text.upper() + "!"

def whisper(text: str) -> str:
    """Say a text quietly.

    Args:
        text: What to say.
    """
    return text.lower() + "..."

@plugin
def echo(text: str) -> str:
    """Repeat a text.

    Args:
        text: What to repeat.
    """
    return text

EXTRA = [echo, plugin(whisper, name="murmur")]
'''
ENTRY_POINTS = """[multimodal_assistant.plugins]
loud = fake_plugin_mod:shout
quiet = fake_plugin_mod:whisper
extra = fake_plugin_mod:EXTRA
broken = fake_broken_mod:tool
"""


@pytest.fixture
def fake_distribution(tmp_path: Path, monkeypatch):
    info = tmp_path / "fake_plugin_dist-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-plugin-dist\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    (tmp_path / "fake_plugin_mod.py").write_text(FAKE_MODULE)
    (tmp_path / "fake_broken_mod.py").write_text("raise ImportError('needs the missing package nonexistent_dep')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for module in ("fake_plugin_mod", "fake_broken_mod"):
        sys.modules.pop(module, None)


def test_entry_point_plugins_load_and_a_broken_one_is_skipped(fake_distribution, caplog):
    with caplog.at_level(logging.WARNING, logger="plugins.registry"):
        registered = load_entry_point_plugins()
    assert sorted(registered) == ["echo", "murmur", "shout", "whisper"]
    assert call(get_plugin("shout"), text="hi").content == "HI!"
    assert call(get_plugin("whisper"), text="HI").content == "hi..."  # a plain function, wrapped
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert all(part in warnings[0] for part in ("'broken'", "fake_broken_mod", "fake-plugin-dist", "nonexistent_dep"))
    assert load_entry_point_plugins() == []  # loading again registers nothing twice


def test_entry_point_with_a_taken_name_is_skipped_whole(fake_distribution, caplog):
    register_plugin(plugin(count_words, name="echo"))
    with caplog.at_level(logging.WARNING, logger="plugins.registry"):
        registered = load_entry_point_plugins()
    assert sorted(registered) == ["shout", "whisper"]  # "extra" holds echo and murmur: neither is registered
    assert "murmur" not in plugin_names() and get_plugin("echo").func is count_words
    assert any("'extra'" in record.getMessage() and "already registered" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("expression, expected", [
    ("2 + 3 * 4", "14"), ("(2 + 3) * 4", "20"), ("-2 ** 2", "-4"), ("7 // 2", "3"), ("7 % 3", "1"),
    ("1 / 4", "0.25"), ("2 ** 10", "1024"), ("sqrt(16) + log(e)", "5"), ("cos(pi)", "-1"), ("0.1 + 0.2", "0.3"),
])
def test_calculator_results(expression, expected):
    assert call(calculator, expression=expression).content == expected


@pytest.mark.parametrize("expression, message", [
    ("__import__('os')", "unknown function '__import__'"),
    ("2**10**10", "too large"),
    ("1/0", "divides by zero"),
    ("7 % 0", "divides by zero"),
    ("(1).real", "attribute access"),
    ("math.pi", "attribute access"),
    ("x + 1", "unknown name 'x'"),
    ("'a' * 3", "not a number"),
    ("2 ^ 3", "write \\*\\*"),
    ("1 +", "not an arithmetic expression"),
    ("1" * 201, "at most 200"),
    ("sqrt(-1)", "math domain error"),
])
def test_calculator_refuses(expression, message):
    with pytest.raises(ToolException, match=message):
        call(calculator, expression=expression)


def two_colour_picture() -> Image.Image:
    picture = Image.new("RGB", (40, 20), BLUE)  # (W, H): left half red, right half blue
    picture.paste(RED, (0, 0, 20, 20))
    return picture


def test_transform_image_rotates_a_quarter_turn_counterclockwise():
    context = ToolContext(images=[Image.new("RGB", (5, 5)), two_colour_picture()])
    message = call(transform_image, rotate=90, context=context)
    (part,) = message.artifact
    result = part["image"]
    assert part["type"] == "image" and result.size == (20, 40)
    assert result.getpixel((10, 35)) == RED and result.getpixel((10, 5)) == BLUE  # the left half went to the bottom
    assert "20x40" in message.content
    clockwise = call(transform_image, rotate=-90, context=context).artifact[0]["image"]
    assert clockwise.getpixel((10, 5)) == RED


def test_transform_image_other_angles_flip_and_grayscale():
    context = ToolContext(images=[two_colour_picture(), Image.new("RGB", (5, 5))])
    tilted = call(transform_image, rotate=45, image=0, context=context).artifact[0]["image"]
    assert tilted.width > 40 and tilted.height > 20  # expand=True keeps the corners
    flipped = call(transform_image, flip="horizontal", image=0, context=context).artifact[0]["image"]
    assert flipped.size == (40, 20) and flipped.getpixel((5, 10)) == BLUE
    grey = call(transform_image, grayscale=True, image=0, context=context).artifact[0]["image"]
    assert grey.mode == "L" and grey.getpixel((5, 10)) != grey.getpixel((35, 10))
    assert context.images[0].getpixel((5, 10)) == RED  # the conversation's picture is untouched


def test_transform_image_errors_and_schema_hides_context():
    with pytest.raises(ToolException, match="no picture"):
        call(transform_image, rotate=90, context=ToolContext())
    with pytest.raises(ToolException, match="does not exist"):
        call(transform_image, rotate=90, image=3, context=ToolContext(images=[two_colour_picture()]))
    with pytest.raises(ToolException, match="nothing to do"):
        call(transform_image, rotate=360, context=ToolContext(images=[two_colour_picture()]))
    parameters = tool_spec(transform_image).parameters
    assert "context" not in parameters["properties"] and "context" not in parameters.get("required", [])
    assert set(parameters["properties"]) == {"rotate", "flip", "grayscale", "image"}
    assert (parameters["properties"]["rotate"]["minimum"], parameters["properties"]["rotate"]["maximum"]) == (-360, 360)
    assert parameters["properties"]["image"]["minimum"] == -64  # a bounded index: no endless digits under the grammar


def test_save_note_appends_to_the_notes_file(tmp_path, monkeypatch):
    notes = tmp_path / "nested" / "notes.md"
    monkeypatch.setenv("MMA_NOTES_FILE", str(notes))
    assert ToolPolicy.of(save_note).requires_confirmation is True
    assert str(notes) in call(save_note, text="Buy milk", title="Shopping").content
    call(save_note, text="Second thought")
    written = notes.read_text(encoding="utf-8")
    assert written.index("Buy milk") < written.index("Second thought")
    assert written.startswith("## ") and "Shopping\n\nBuy milk\n" in written


def test_save_note_refuses_overlong_and_empty_notes(tmp_path, monkeypatch):
    notes = tmp_path / "notes.md"
    monkeypatch.setenv("MMA_NOTES_FILE", str(notes))
    with pytest.raises(ToolException, match="at most 4000"):
        call(save_note, text="x" * 4001)
    with pytest.raises(ToolException, match="empty"):
        call(save_note, text="   ")
    assert not notes.exists()


def test_plugins_import_neither_gradio_nor_training():
    imported = set()
    for source in (Path(__file__).parents[1] / "plugins").glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
    assert "assistant" in imported and not imported & {"gradio", "training"}
