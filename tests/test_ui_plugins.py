"""The chat UI's plugin handling, driven through its handlers on a tiny random assistant.

Covers ``/plugin`` commands (one forced call), the collapsible tool message, pictures a tool returns,
tool calls surviving the Chatbot round trip into the next prompt, and Approve/Deny per browser
session. No server and no browser; ``tests/test_browser.py`` drives the same things in Chromium.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Annotated, Literal

import gradio as gr
import pytest
from PIL import Image

from assistant import Assistant
from launch_ui import ERROR_TITLE, NO_APPROVAL, TOOL_TITLE, ChatHandlers, build_app, to_messages
from assistant.tools.context import ToolContext
from assistant.tools.spec import tool_spec
from langchain_core.tools import InjectedToolArg
from plugins import plugin

GREEDY = {"system_prompt": None, "temperature": 0.0, "top_p": 1.0}
PAINTED = (30, 160, 60)


@plugin(returns_media=True)
def paint(colour: Literal["green"]) -> tuple[str, list]:
    """Paint a small picture in one colour.

    Args:
        colour: The colour to paint.
    """
    return f"painted {colour}", [{"type": "image", "image": Image.new("RGB", (40, 32), PAINTED)}]


SAVED: list[str] = []


@plugin(requires_confirmation=True)
def remember(fact: Literal["milk"]) -> str:
    """Write a fact down (a side effect, so the user approves it first).

    Args:
        fact: What to write down.
    """
    SAVED.append(fact)
    return f"noted {fact}"


@plugin
def broken(text: Literal["x"]) -> str:
    """A plugin that always fails.

    Args:
        text: Ignored.
    """
    raise RuntimeError("the disk is on fire")


@plugin
def shout(text: str, times: int = 1) -> str:
    """Repeat some text in capitals.

    Args:
        text: What to repeat.
        times: How many times.
    """
    return " ".join([text.upper()] * times)


@pytest.fixture(scope="module")
def bot(make_config) -> Assistant:
    config = make_config()
    config.llm.max_context_tokens = 4096  # the tiny tokenizer spends many tokens on the tools block
    return Assistant.from_config(config)


@pytest.fixture
def handlers(bot) -> ChatHandlers:
    SAVED.clear()
    return ChatHandlers(bot, plugins={"paint": paint, "remember": remember, "broken": broken, "shout": shout}, approval_timeout_s=10)


def respond(handlers: ChatHandlers, text: str, history=(), files=(), session=None, **options):
    return handlers.respond({"text": text, "files": list(files)}, list(history), max_new_tokens=200, session=session,
                            **GREEDY, **options)


def tool_messages(shown: list) -> list[gr.ChatMessage]:
    return [m for m in shown if isinstance(m, gr.ChatMessage) and (m.metadata or {}).get("title", "").startswith(TOOL_TITLE)]


def as_chatbot_stores_it(history: list) -> list[dict]:
    chatbot = gr.Chatbot()
    return chatbot.preprocess(chatbot.postprocess(history))


def test_a_plugin_command_shows_a_collapsible_call_its_picture_and_a_reply(handlers):
    outputs = list(respond(handlers, "/paint a picture for me"))
    shown, status, approval = outputs[-1]
    [call] = tool_messages(shown)
    assert call.metadata["title"] == TOOL_TITLE + "paint" and call.metadata["status"] == "done"
    assert call.metadata["duration"] > 0 and '"colour": "green"' in call.content and "painted green" in call.content
    pictures = [m for m in shown if isinstance(m.content, gr.Image)]
    assert len(pictures) == 1 and pictures[0].content.value is not None
    assert shown.index(call) < shown.index(pictures[0])  # the picture follows the call that made it
    assert status.startswith("**llm**") and approval == NO_APPROVAL
    pending = [o[0] for o in outputs[:-1] if tool_messages(o[0])]
    assert pending, "the call is shown while it runs, before its result"


def test_a_command_with_text_for_a_one_text_argument_plugin_is_the_call_itself(handlers):
    text = 'a large red "circle" on the left, then\nmore'
    shown = list(respond(handlers, f"/shout {text}"))[-1][0]
    [call] = tool_messages(shown)
    assert call.metadata["status"] == "done" and text.upper().replace('"', "") in call.content.replace('\\"', "").replace('"', "")
    record = handlers._records[call.metadata["id"]]
    assert record["call"]["function"]["arguments"] == json.dumps({"text": text})  # not rewritten by the model
    history = as_chatbot_stores_it([{"role": "user", "content": f"/shout {text}"}, *shown])
    messages = to_messages(history, {"text": "Again", "files": []}, None, 20.0, handlers._records, handlers.plugins)
    assert messages[1]["tool_calls"][0]["function"]["arguments"] == json.dumps({"text": text})


def test_a_command_without_text_or_for_a_plugin_with_other_arguments_is_filled_by_the_model(handlers):
    assert tool_spec(shout).text_argument == "text" and tool_spec(paint).text_argument is None  # an enum is not free text
    assert tool_spec(broken).text_argument is None
    assert handlers._direct_call("shout", {"text": "/shout"}) is None  # nothing to pass through
    assert handlers._direct_call(None, {"text": "shout this"}) is None
    direct = handlers._direct_call("shout", {"text": "/shout  hello  "})
    assert (direct.name, direct.arguments) == ("shout", {"text": "hello"})


def test_a_tool_call_becomes_the_call_and_its_result_again_in_the_next_prompt(handlers):
    shown = list(respond(handlers, "/paint now"))[-1][0]
    history = as_chatbot_stores_it([{"role": "user", "content": "/paint now"}, *shown])
    messages = to_messages(history, {"text": "What colour is it?", "files": []}, None, 20.0, handlers._records, handlers.plugins)
    roles = [m["role"] for m in messages]
    assert roles[:3] == ["user", "assistant", "tool"] and roles[-1] == "user"
    assert messages[0]["content"] == [{"type": "text", "text": "now"}]  # the /paint command itself is not prompt text
    [call] = messages[1]["tool_calls"]
    assert call["function"]["name"] == "paint" and messages[2]["tool_call_id"] == call["id"]
    assert [part["type"] for part in messages[2]["content"]] == ["text", "image"]  # the picture comes back as the tool's
    assert all(part["type"] == "text" for m in messages if m["role"] == "assistant" for part in m["content"])
    prompt = handlers.bot.prepare(messages, 24, [paint])  # the rebuilt conversation is a valid prompt
    assert len(prompt.spans) == 1


def test_approve_and_deny_decide_a_side_effecting_call(handlers):
    for decision, ran in ((True, ["milk"]), (False, [])):
        SAVED.clear()
        session = {}
        stream = respond(handlers, "/remember buy milk", session=session)
        asked = None
        for shown, _, approval in stream:
            if isinstance(approval, str) and "wants to run" in approval:
                asked = tool_messages(shown)[0]
                break
        assert asked is not None and "awaiting approval" in asked.metadata["title"]
        assert handlers.decide(True, {"id": "another-browser"}) == NO_APPROVAL  # another session cannot decide it
        threading.Timer(0.2, handlers.decide, (decision, session)).start()
        shown = list(stream)[-1][0]
        [call] = tool_messages(shown)
        assert SAVED == ran
        assert ("noted milk" in call.content) == decision and ("denied" in call.content) != decision
        assert call.metadata["title"].endswith("· error") != decision


def test_without_a_decision_the_call_is_denied_after_the_timeout(handlers):
    handlers.approval_timeout_s = 0.3
    started = time.perf_counter()
    shown = list(respond(handlers, "/remember milk", session={}))[-1][0]
    assert time.perf_counter() - started < 5 and SAVED == []
    assert "denied" in tool_messages(shown)[0].content


def test_a_failing_plugin_is_an_error_in_the_chat_and_the_next_turn_works(handlers):
    shown = list(respond(handlers, "/broken"))[-1][0]
    [call] = tool_messages(shown)
    assert call.metadata["title"] == TOOL_TITLE + "broken · error" and "the disk is on fire" in call.content
    assert "Traceback" not in call.content
    reply = list(respond(handlers, "Hello"))[-1][0]
    assert isinstance(reply, str)


def test_unknown_commands_and_unknown_ticked_plugins_are_readable_errors(handlers):
    reply = list(respond(handlers, "/teleport me"))[-1][0]
    assert isinstance(reply, gr.ChatMessage) and reply.metadata["title"] == ERROR_TITLE
    assert "no plugin /teleport" in reply.content and "/paint" in reply.content
    reply = list(respond(handlers, "hi", enabled_plugins=["nope"]))[-1][0]
    assert isinstance(reply, gr.ChatMessage) and "nope" in reply.content
    assert isinstance(list(respond(handlers, "/ is not a command"))[-1][0], str)  # a lone slash is plain text


def test_the_app_lists_plugins_with_checkboxes_and_approval_buttons(bot):
    app = build_app(bot, plugins={"paint": paint, "remember": remember})
    boxes = [b for b in app.blocks.values() if isinstance(b, gr.CheckboxGroup)]
    assert len(boxes) == 1 and [value for _, value in boxes[0].choices] == ["paint", "remember"]
    assert dict(boxes[0].choices)["remember (asks first)"] == "remember"
    buttons = {b.elem_id for b in app.blocks.values() if isinstance(b, gr.Button)}
    assert {"approve", "deny"} <= buttons


@plugin(file_types=(".dcm",))
def read_scan(file: int = -1, context: Annotated[ToolContext, InjectedToolArg] = None) -> str:
    """Say how many bytes an attached scan has.

    Args:
        file: Which attached file: -1 is the latest.
    """
    source = context.file(file)
    return f"{len(open(source, 'rb').read())} bytes"


def test_uploads_of_a_type_a_plugin_reads_are_offered_and_reach_it(bot, tmp_path):
    app = build_app(bot, plugins={"paint": paint, "read_scan": read_scan})
    [box] = [b for b in app.blocks.values() if isinstance(b, gr.MultimodalTextbox)]
    assert ".dcm" in box.file_types and ".png" in box.file_types
    scan = tmp_path / "Quorvath.dcm"
    scan.write_bytes(b"\x00" * 321)
    handlers = ChatHandlers(bot, plugins={"read_scan": read_scan})
    shown = list(respond(handlers, "/read_scan", files=[str(scan)]))[-1][0]
    [call] = tool_messages(shown)
    assert call.metadata["status"] == "done" and "321 bytes" in call.content
    without = ChatHandlers(bot, plugins={"paint": paint})  # no plugin reads .dcm: the upload is refused by name
    reply = list(respond(without, "hi", files=[str(scan)]))[-1][0]
    assert reply.metadata["title"] == ERROR_TITLE and "Quorvath.dcm: unsupported file type" in reply.content


def test_a_call_faster_than_the_shown_precision_still_shows_a_duration():
    from launch_ui import shown_duration

    assert shown_duration(0.0004) == 0.01 and shown_duration(0.0) == 0.01  # 0 would hide Gradio's duration
    assert shown_duration(1.234) == 1.23
