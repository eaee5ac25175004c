"""A Gradio multimodal chat over ``Assistant``: ``python launch_ui.py [--adapter DIR] [--port N]``.

It turns Gradio's chat history plus the new message into the assistant's typed-content messages on
every turn, streams the reply into the chat, and serves with limits: an upload size cap, a bounded
queue that runs one request at a time, files served only from Gradio's cache, no flagging, no
analytics, no run history, and no tracebacks shown to users. Uploaded files become content parts
through a small extension table, so audio arrives without a redesign.

It deliberately knows nothing about models, prompts, tokens or caches: re-sending earlier images is
cheap because the assistant reuses its KV prefix and feature cache, not because of anything here.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: no telemetry, no update checks

import gradio as gr  # noqa: E402

from assistant import Assistant, AssistantError  # noqa: E402
from assistant.cli_args import add_dataclass_arguments, dataclass_kwargs  # noqa: E402
from assistant.media import describe as describe_media  # noqa: E402  (how errors name a file)

logger = logging.getLogger(__name__)

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"  # written by `python -m training.data.scenes --examples examples`
MEDIA_TYPE_BY_EXTENSION = {
    **dict.fromkeys((".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"), "image"),
    **dict.fromkeys((".mp4", ".webm", ".mov", ".mkv", ".avi"), "video"),
    **dict.fromkeys((".wav", ".mp3", ".flac", ".ogg", ".m4a"), "audio"),
}
ERROR_TITLE = "Could not answer"  # marks a failed turn; it and its user message are left out of later prompts
GENERIC_ERROR = "Something went wrong while answering. The error was logged; please try again."
BYTES_PER_MB = 1024 * 1024


@dataclass
class LaunchOptions:
    """How to serve the UI; every field is a command-line flag."""

    adapter: str | None = field(
        default=None,
        metadata={"help": "assistant artifact folder (default: the built-in default)"},
    )
    host: str = field(default="127.0.0.1", metadata={"help": "interface to listen on (0.0.0.0 exposes it)"})
    port: int | None = field(default=None, metadata={"help": "port (default: 7860 or the next free one)"})
    share: bool = field(default=False, metadata={"help": "also open a public gradio.live tunnel"})
    max_file_mb: float | None = field(default=None, metadata={"help": "largest upload in MB (default: the assistant's limit)"})
    queue_size: int = field(default=16, metadata={"help": "requests that may wait; more are turned away"})

    def __post_init__(self) -> None:
        if self.port is not None and not 1 <= self.port <= 65535:
            raise ValueError(f"port must be in 1..65535, got {self.port}")
        if self.max_file_mb is not None and self.max_file_mb <= 0:
            raise ValueError(f"max file size must be positive, got {self.max_file_mb}")
        if self.queue_size < 1:
            raise ValueError(f"queue size must be at least 1, got {self.queue_size}")


def parse_options(argv: list[str] | None = None) -> LaunchOptions:
    """Command-line flags generated from the ``LaunchOptions`` fields (``--model`` is ``--adapter``)."""
    parser = argparse.ArgumentParser(description="Serve a Gradio multimodal chat over an Assistant.")
    add_dataclass_arguments(parser, LaunchOptions)
    parser.add_argument("--model", dest="adapter", default=argparse.SUPPRESS, help="the same as --adapter")
    args = parser.parse_args(argv)
    try:
        return LaunchOptions(**dataclass_kwargs(args, LaunchOptions))
    except ValueError as error:
        parser.error(str(error))


# ---------------------------------------------------------------- Gradio history -> assistant messages


def media_part(path: str, max_file_mb: float) -> dict[str, str]:
    """The content part for an uploaded file, chosen by its extension; checks the size cap."""
    name = Path(path).name
    kind = MEDIA_TYPE_BY_EXTENSION.get(Path(path).suffix.lower())
    if kind is None:
        accepted = ", ".join(sorted(MEDIA_TYPE_BY_EXTENSION))
        raise AssistantError(f"{name}: unsupported file type; upload one of {accepted}")
    try:
        size = os.path.getsize(path)
    except OSError:
        raise AssistantError(f"{name} is no longer on the server; clear the chat and upload it again") from None
    if size > max_file_mb * BYTES_PER_MB:
        raise AssistantError(f"{name} is {size / BYTES_PER_MB:.1f} MB, over the {max_file_mb:g} MB upload limit")
    return {"type": kind, kind: path}


def _content_parts(content: Any, max_file_mb: float) -> list[dict[str, str]]:
    """Parts of one Gradio chat message: a string, a file dict, or a list of text/file items."""
    parts = []
    for item in content if isinstance(content, (list, tuple)) else [content]:
        if isinstance(item, dict) and item.get("type") == "file":
            item = item["file"]
        if isinstance(item, dict) and item.get("type") == "text":
            item = item["text"]
        if isinstance(item, str):
            # The Chatbot stores text through inspect.cleandoc; the same here keeps prompts identical across turns.
            if item.strip():
                parts.append({"type": "text", "text": inspect.cleandoc(item)})
        elif isinstance(item, dict) and "path" in item:
            parts.append(media_part(item["path"], max_file_mb))
    return parts


def to_messages(
    history: list[dict[str, Any]], message: dict[str, Any], system_prompt: str | None = None, max_file_mb: float = 20.0
) -> list[dict[str, Any]]:
    """The assistant's messages for Gradio's ``history`` plus the new ``message`` ({"text", "files"}).

    Consecutive messages of one role are merged; a failed turn (its reply titled ``ERROR_TITLE``) is
    dropped with the user message it answered. Files keep their paths, so an image sent earlier is
    the same image part on every later turn.
    """
    messages: list[dict[str, Any]] = [{"role": "system", "content": system_prompt}] if (system_prompt or "").strip() else []
    for item in history:
        role = item["role"]
        if role == "assistant" and (item.get("metadata") or {}).get("title") == ERROR_TITLE:
            if messages and messages[-1]["role"] == "user":
                messages.pop()
            continue
        parts = _content_parts(item["content"], max_file_mb)
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(parts)
        else:
            messages.append({"role": role, "content": parts})
    files = [{"path": file if isinstance(file, str) else file["path"]} for file in message.get("files", [])]
    new_parts = _content_parts([*files, message.get("text") or ""], max_file_mb)  # files first, as the Chatbot shows them
    if messages and messages[-1]["role"] == "user":
        messages[-1]["content"].extend(new_parts)
    else:
        messages.append({"role": "user", "content": new_parts})
    return messages


def name_uploads(text: str, messages: list[dict[str, Any]]) -> str:
    """``text`` with each file of ``messages`` named by its file name instead of its (long) cache path."""
    parts = [part for message in messages if isinstance(message["content"], list) for part in message["content"]]
    paths = [part[part["type"]] for part in parts if part["type"] != "text"]
    for path in sorted(paths, key=len, reverse=True):
        text = text.replace(describe_media(path), Path(path).name).replace(path, Path(path).name)
    return text


def load_examples(directory: Path = EXAMPLES_DIR) -> list[dict[str, Any]]:
    """Chat examples ({"text", "files"}) from ``examples.json`` entries whose image exists."""
    index = directory / "examples.json"
    if not index.is_file():
        return []
    entries = json.loads(index.read_text(encoding="utf-8"))
    return [
        {"text": entry["question"], "files": [str(directory / entry["image"])]}
        for entry in entries
        if (directory / entry["image"]).is_file()
    ]


# ---------------------------------------------------------------- event handlers


class ChatHandlers:
    """The UI's event handlers, bound to one assistant; tests call them directly, without a server."""

    def __init__(self, bot: Assistant, max_file_mb: float | None = None) -> None:
        self.bot = bot
        self.max_file_mb = max_file_mb or bot.config.media.max_file_mb

    def respond(
        self,
        message: dict[str, Any],
        history: list[dict[str, Any]],
        system_prompt: str | None = None,  # an empty Textbox arrives as None
        temperature: float = 0.0,
        top_p: float = 1.0,
        max_new_tokens: int = 256,
    ) -> Iterator[tuple[str | gr.ChatMessage, Any]]:
        """Stream (reply so far, status) pairs; a bad request becomes a readable reply titled ``ERROR_TITLE``."""
        reply, messages = "", []
        try:
            messages = to_messages(history, message, system_prompt, self.max_file_mb)
            stream = self.bot.stream(
                messages, max_new_tokens=int(max_new_tokens), temperature=float(temperature), top_p=float(top_p)
            )
            with closing(stream):  # a cancelled event closes this generator, which closes the assistant's stream
                for piece in stream:
                    reply += piece
                    yield reply, gr.skip()
        except AssistantError as error:
            yield gr.ChatMessage(content=name_uploads(str(error), messages), metadata={"title": ERROR_TITLE}), self.status()
            return
        except Exception:
            logger.exception("answering failed")
            yield gr.ChatMessage(content=GENERIC_ERROR, metadata={"title": ERROR_TITLE}), self.status()
            return
        yield reply, self.status()

    def stop(self) -> str:
        """The Stop button: end the active generation now; returns the refreshed status."""
        self.bot.cancel()
        return self.status()

    def status(self) -> str:
        """One line: what is loaded and the last reply's speed."""
        loaded = " · ".join(f"**{name}**: {value}" for name, value in self.bot.describe().items())
        speed = self.bot.stats.last_tokens_per_second
        return loaded + (f" · **last reply**: {speed:.1f} tokens/s" if speed else "")


# ---------------------------------------------------------------- the app


def build_app(bot: Assistant, max_file_mb: float | None = None, queue_size: int = 16) -> gr.Blocks:
    """The Blocks app for ``bot``, queued (bounded, one request at a time) but not launched."""
    handlers = ChatHandlers(bot, max_file_mb)
    settings = [
        gr.Textbox(label="System prompt", placeholder="default: the assistant's own", lines=2, render=False),
        gr.Slider(0.0, 2.0, value=0.0, step=0.05, label="Temperature (0 = greedy)", render=False),
        gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="Top p", render=False),
        gr.Slider(1, 1024, value=256, step=1, label="Max new tokens", render=False),
    ]
    examples = [[example] for example in load_examples()]  # one list per example: the settings keep their values
    with gr.Blocks(title="Multimodal assistant", analytics_enabled=False, fill_height=True) as app:
        status = gr.Markdown(handlers.status(), render=False)
        chat = gr.ChatInterface(
            handlers.respond,
            multimodal=True,
            textbox=gr.MultimodalTextbox(
                placeholder="Ask about an image, or attach several...",
                file_types=sorted(MEDIA_TYPE_BY_EXTENSION),
                file_count="multiple",
                sources=["upload"],
                stop_btn=True,
                elem_id="message",
            ),
            chatbot=gr.Chatbot(label="Assistant", elem_id="chat", scale=1, feedback_options=None),
            additional_inputs=settings,
            additional_inputs_accordion=gr.Accordion("Settings", open=False, render=False),
            additional_outputs=[status],
            examples=examples or None,
            cache_examples=False,
            title="Multimodal assistant",
            flagging_mode="never",
            analytics_enabled=False,
        )
        chat.textbox.stop(handlers.stop, outputs=[status], queue=False)  # runs beside the built-in cancels=
        status.render()
    return app.queue(max_size=queue_size, default_concurrency_limit=1)


def serve(app: gr.Blocks, options: LaunchOptions, max_file_mb: float, block: bool = True) -> None:
    """Launch ``app`` with the safety settings; ``block=False`` returns once the server runs."""
    app.launch(
        server_name=options.host,
        server_port=options.port,
        share=options.share,
        max_file_size=int(max_file_mb * BYTES_PER_MB),
        allowed_paths=[str(EXAMPLES_DIR)],
        show_error=False,
        run_history=False,
        enable_monitoring=False,
        ssr_mode=False,
        theme=gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]),
        prevent_thread_lock=not block,
    )


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options = parse_options(argv)
    bot = Assistant.from_pretrained(options.adapter)
    max_file_mb = options.max_file_mb or bot.config.media.max_file_mb
    logger.info("loaded %s", bot.describe())
    serve(build_app(bot, max_file_mb, options.queue_size), options, max_file_mb)


if __name__ == "__main__":
    main()
