"""The chat UI's handlers, history conversion and app, driven directly on a tiny assistant.

No server and no browser: the handlers are called as Gradio calls them, and the chat history is
passed through a ``gr.Chatbot`` the way ``gr.ChatInterface`` stores it between turns.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from pathlib import Path

import gradio as gr
import pytest

import launch_ui
from assistant import Assistant, AssistantError
from launch_ui import ERROR_TITLE, GENERIC_ERROR, ChatHandlers, build_app, load_examples, media_part, parse_options, to_messages

GREEDY = {"system_prompt": None, "temperature": 0.0, "top_p": 1.0}  # an empty system prompt arrives as None


def as_chatbot_stores_it(history: list) -> list[dict]:
    """``history`` after a round trip through the Chatbot component, as the next turn receives it."""
    chatbot = gr.Chatbot()
    return chatbot.preprocess(chatbot.postprocess(history))


def user_entry(text: str, files: list[str]) -> dict:
    """A user turn as ``gr.ChatInterface`` appends it: files first, then the text."""
    return {"role": "user", "content": [{"path": path} for path in files] + ([text] if text else [])}


def run_turn(handlers: ChatHandlers, history: list, text: str, files: list[str] = (), max_new_tokens: int = 8):
    """Stream one turn through the handler; returns (outputs, reply, history for the next turn)."""
    outputs = list(handlers.respond({"text": text, "files": list(files)}, history, max_new_tokens=max_new_tokens, **GREEDY))
    reply = outputs[-1][0]
    entry = reply if isinstance(reply, gr.ChatMessage) else {"role": "assistant", "content": reply}
    return outputs, reply, as_chatbot_stores_it([*history, user_entry(text, list(files)), entry])


@pytest.fixture
def corrupt_png(tmp_path) -> str:
    """A corrupt upload, stored like Gradio's cache stores uploads: under a 64-hex-digit folder."""
    path = tmp_path / "gradio" / ("0123456789abcdef" * 4) / "broken.png"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20)
    return str(path)


# ---------------------------------------------------------------- history -> messages


def test_history_conversion_keeps_earlier_images_as_image_parts(image_files):
    red, green, blue = image_files[:3]
    history = as_chatbot_stores_it(
        [
            user_entry("Compare these.", [red, green]),
            {"role": "assistant", "content": "Both are squares."},
        ]
    )
    messages = to_messages(history, {"text": "And this one?", "files": [blue]}, system_prompt="Be brief.")
    assert messages == [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "image", "image": red},
                {"type": "image", "image": green},
                {"type": "text", "text": "Compare these."},
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "Both are squares."}]},
        {"role": "user", "content": [{"type": "image", "image": blue}, {"type": "text", "text": "And this one?"}]},
    ]


def test_failed_turn_is_left_out_and_consecutive_user_turns_merge(image_files, corrupt_png):
    history = as_chatbot_stores_it(
        [
            user_entry("What is this?", [corrupt_png]),
            gr.ChatMessage(content="broken.png is corrupt", metadata={"title": ERROR_TITLE}),
            user_entry("Look here.", [image_files[0]]),  # stopped before any reply
        ]
    )
    messages = to_messages(history, {"text": "Well?", "files": []})
    assert messages == [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": image_files[0]},
                {"type": "text", "text": "Look here."},
                {"type": "text", "text": "Well?"},
            ],
        }
    ]


def test_media_part_maps_extensions_and_enforces_the_size_cap(tmp_path):
    for name, kind in [("a.png", "image"), ("b.JPG", "image"), ("c.mp4", "video"), ("d.wav", "audio")]:
        path = tmp_path / name
        path.write_bytes(b"x" * 10)
        assert media_part(str(path), max_file_mb=1) == {"type": kind, kind: str(path)}
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(AssistantError, match="notes.txt: unsupported file type"):
        media_part(str(tmp_path / "notes.txt"), max_file_mb=1)
    (tmp_path / "big.png").write_bytes(b"x" * 3000)
    with pytest.raises(AssistantError, match=r"big.png is 0.0 MB, over the 0.002 MB upload limit"):
        media_part(str(tmp_path / "big.png"), max_file_mb=0.002)
    with pytest.raises(AssistantError, match="gone.png is no longer on the server"):
        media_part(str(tmp_path / "gone.png"), max_file_mb=1)


# ---------------------------------------------------------------- handlers


def test_corrupt_upload_gives_a_readable_error_and_the_next_message_works(tiny_assistant, corrupt_png):
    handlers = ChatHandlers(tiny_assistant)
    outputs, reply, history = run_turn(handlers, [], "What is this?", [corrupt_png])
    assert isinstance(reply, gr.ChatMessage) and reply.metadata["title"] == ERROR_TITLE
    assert re.search(r"\bbroken\.png (is corrupt|is not a readable image)", reply.content)
    assert "0123456789abcdef" not in reply.content and "Traceback" not in reply.content  # no server paths
    assert history[-1]["metadata"]["title"] == ERROR_TITLE  # shown in the chat

    outputs, reply, history = run_turn(handlers, history, "Hello, what can you do?")
    assert isinstance(reply, str) and reply  # a normal streamed reply, not an error
    assert len(outputs) > 1 and outputs[-1][1].startswith("**llm**")  # streamed pieces, then the status


def test_unsupported_media_and_oversized_uploads_are_readable_errors(tiny_assistant, tmp_path, image_files):
    audio = tmp_path / "voice.wav"
    audio.write_bytes(b"RIFF" + b"\x00" * 64)
    _, reply, _ = run_turn(ChatHandlers(tiny_assistant), [], "Transcribe.", [str(audio)])
    assert isinstance(reply, gr.ChatMessage) and "no audio encoder" in reply.content

    tiny_cap = ChatHandlers(tiny_assistant, max_file_mb=Path(image_files[0]).stat().st_size / 2 / 2**20)
    _, reply, _ = run_turn(tiny_cap, [], "What is this?", [image_files[0]])
    assert isinstance(reply, gr.ChatMessage) and "upload limit" in reply.content


def test_unexpected_errors_are_logged_and_users_see_a_short_message(fresh_assistant, monkeypatch, caplog):
    def explode(*args, **kwargs):
        raise RuntimeError("internal detail /secret/path")

    monkeypatch.setattr(fresh_assistant, "stream", explode)
    with caplog.at_level(logging.ERROR, logger="launch_ui"):
        _, reply, _ = run_turn(ChatHandlers(fresh_assistant), [], "Hi")
    assert isinstance(reply, gr.ChatMessage) and reply.content == GENERIC_ERROR
    assert "secret" not in reply.content
    assert any("internal detail /secret/path" in (record.exc_text or "") for record in caplog.records)


def test_stop_ends_the_stream_promptly(fresh_assistant):
    handlers = ChatHandlers(fresh_assistant)
    limit = 120
    before = fresh_assistant.stats.generated_tokens
    run_turn(handlers, [], "Describe the image in detail.", max_new_tokens=limit)
    assert fresh_assistant.stats.generated_tokens - before == limit  # control: without Stop it runs to the limit

    before = fresh_assistant.stats.generated_tokens
    stream = handlers.respond({"text": "Describe the image in detail.", "files": []}, [], max_new_tokens=limit, **GREEDY)
    first_reply, _, _ = next(stream)
    assert isinstance(first_reply, str) and first_reply
    status = handlers.stop()
    started = time.perf_counter()
    rest = list(stream)
    assert time.perf_counter() - started < 2.0
    assert fresh_assistant.stats.generated_tokens - before < limit // 4
    assert rest and isinstance(rest[-1][0], str) and rest[-1][0].startswith(first_reply)
    assert "tokens/s" in status


def test_stop_in_one_browser_ends_only_that_browsers_reply(fresh_assistant):
    alone = ChatHandlers(Assistant(fresh_assistant.model, fresh_assistant.tokenizer, fresh_assistant.config))
    expected = list(alone.respond({"text": "Hello!", "files": []}, [], max_new_tokens=60, **GREEDY))[-1][0]
    handlers, mine, theirs = ChatHandlers(fresh_assistant), {}, {}
    my_stream = handlers.respond({"text": "Describe the image in detail.", "files": []}, [], max_new_tokens=300, session=mine, **GREEDY)
    their_stream = handlers.respond({"text": "Hello!", "files": []}, [], max_new_tokens=60, session=theirs, **GREEDY)
    next(my_stream), next(their_stream)
    handlers.stop(mine)
    assert list(their_stream)[-1][0] == expected  # the other browser's reply is whole and unchanged
    assert len(list(my_stream)) < 300


def test_second_turn_reuses_the_prefix_and_does_not_re_encode_the_image(fresh_assistant, image_files):
    handlers = ChatHandlers(fresh_assistant)
    # Stray whitespace: the Chatbot stores the text trimmed, so the next prompt must trim it the same way.
    _, reply, history = run_turn(handlers, [], "  What is in this picture? \n", [image_files[1]])
    assert isinstance(reply, str)
    first = dataclasses.replace(fresh_assistant.stats)
    assert first.encoder_calls == 1 and first.reused_tokens == 0
    first_prompt_tokens = first.prefill_tokens

    messages = to_messages(history, {"text": "How many circles are there?", "files": []})
    assert messages[0]["content"][0] == {"type": "image", "image": image_files[1]}  # same file path as turn 1

    _, reply, _ = run_turn(handlers, history, "How many circles are there?")
    second = fresh_assistant.stats
    assert isinstance(reply, str)
    assert second.reused_tokens - first.reused_tokens >= first_prompt_tokens  # all of turn 1's prompt, image included
    assert second.encoder_calls == first.encoder_calls
    assert second.media_cache_hits == first.media_cache_hits  # the image span came from the KV cache, not re-embedded


# ---------------------------------------------------------------- the app and the command line


def test_build_app_is_queued_bounded_and_wires_stop(tiny_assistant):
    app = build_app(tiny_assistant, max_file_mb=2, queue_size=3)
    assert isinstance(app, gr.Blocks) and not app.analytics_enabled
    assert app._queue.max_size == 3 and app._queue.default_concurrency_limit == 8  # browsers answered at once
    stop_listeners = [fn for fn in app.fns.values() if any(trigger == "stop" for _, trigger in fn.targets)]
    assert any(fn.cancels for fn in stop_listeners), "Stop must cancel the streaming events"
    assert any(fn.name == "stop" for fn in stop_listeners), "Stop must also cancel this browser's request"
    textbox = next(block for block in app.blocks.values() if isinstance(block, gr.MultimodalTextbox))
    assert textbox.file_count == "multiple" and ".png" in textbox.file_types and ".mp4" in textbox.file_types
    status = next(block for block in app.blocks.values() if isinstance(block, gr.Markdown) and "**llm**" in str(block.value))
    assert tiny_assistant.describe()["image connector"] in status.value


def test_shipped_examples_exist_and_load():
    examples = load_examples()
    assert len(examples) == 3
    for example in examples:
        assert example["text"].endswith("?") and Path(example["files"][0]).is_file()
        assert Path(example["files"][0]).parent == launch_ui.EXAMPLES_DIR


def test_command_line_flags():
    defaults = parse_options([])
    assert (defaults.adapter, defaults.host, defaults.port, defaults.share) == (None, "127.0.0.1", None, False)
    options = parse_options(["--model", "artifacts/run1", "--port", "8000", "--share", "--max-file-mb", "5"])
    assert (options.adapter, options.port, options.share, options.max_file_mb) == ("artifacts/run1", 8000, True, 5.0)
    assert parse_options(["--adapter", "x", "--no-share"]).adapter == "x"
    with pytest.raises(SystemExit):
        parse_options(["--port", "70000"])
    with pytest.raises(SystemExit):
        parse_options(["--share", "false"])  # a switch, never type=bool
