"""A Gradio multimodal chat over ``Assistant``: ``python launch_ui.py [--adapter DIR] [--port N]``.

It turns Gradio's chat history plus the new message into the assistant's typed-content messages on
every turn, streams the reply into the chat, and serves with limits: an upload size cap, a bounded
queue that runs one request at a time, files served only from Gradio's cache, no flagging, no
analytics, no run history, and no tracebacks shown to users. Uploaded files become content parts
through a small extension table, so audio arrives without a redesign.

Plugins (``plugins/``) appear in a Plugins panel: ticked ones the model may call by itself, and
``/<plugin> text`` calls one now (``tool_choice=<plugin>``). Each call is shown as a collapsible
message (arguments, result, duration), pictures a tool returns are shown inline, and plugins with
side effects wait for Approve or Deny.

It deliberately knows nothing about models, prompts, tokens or caches: re-sending earlier images is
cheap because the assistant reuses its KV prefix and feature cache, not because of anything here.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import threading
import uuid
from collections import OrderedDict
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: no telemetry, no update checks

import gradio as gr  # noqa: E402

from assistant import Assistant, AssistantError  # noqa: E402
from assistant.cli_args import add_dataclass_arguments, dataclass_kwargs  # noqa: E402
from assistant.media import describe as describe_media  # noqa: E402  (how errors name a file)
from assistant.tools import ToolPolicy  # noqa: E402
from assistant.tools.calls import ToolCall  # noqa: E402
from assistant.tools.events import AssistantTurn, TextDelta, ToolCallEvent, ToolConfirmation, ToolResult  # noqa: E402
from plugins import available_plugins  # noqa: E402

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
TOOL_TITLE = "🛠️ "  # starts the title of a tool call's collapsible message
NO_APPROVAL = "No plugin call is waiting for approval."
MAX_TOOL_RECORDS = 2000  # tool calls remembered for rebuilding later prompts


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


def split_command(text: str, commands: Any) -> tuple[str | None, str]:
    """``("name", rest)`` for a message ``/name rest`` whose name is in ``commands``, else ``(None, text)``."""
    if not text.startswith("/"):
        return None, text
    name, _, rest = text[1:].partition(" ")
    return (name, rest.strip()) if name in commands else (None, text)


def to_messages(
    history: list[dict[str, Any]],
    message: dict[str, Any],
    system_prompt: str | None = None,
    max_file_mb: float = 20.0,
    tool_records: dict[str, dict[str, Any]] | None = None,
    commands: Any = (),
) -> list[dict[str, Any]]:
    """The assistant's messages for Gradio's ``history`` plus the new ``message`` ({"text", "files"}).

    Consecutive messages of one role are merged; a failed turn (its reply titled ``ERROR_TITLE``) is
    dropped with the user message it answered. Files keep their paths, so an image sent earlier is
    the same image part on every later turn. A tool call's message (its ``metadata.id`` a key of
    ``tool_records``) becomes the assistant's call and the tool's result again; pictures shown for
    tools are in those results, so assistant files are skipped. A leading ``/plugin`` command (one of
    ``commands``) is not part of what the model reads.
    """
    messages: list[dict[str, Any]] = [{"role": "system", "content": system_prompt}] if (system_prompt or "").strip() else []
    records = tool_records or {}
    for item in history:
        role, metadata = item["role"], item.get("metadata") or {}
        if role == "assistant" and metadata.get("title") == ERROR_TITLE:
            while messages and messages[-1]["role"] != "user":  # a failed turn leaves nothing behind
                messages.pop()
            if messages and messages[-1]["role"] == "user":
                messages.pop()
            continue
        if role == "assistant" and metadata.get("id") in records:
            _append_tool_record(messages, records[metadata["id"]])
            continue
        parts = [part for part in _content_parts(item["content"], max_file_mb) if role == "user" or part["type"] == "text"]
        if role == "user":
            parts = _strip_command(parts, commands)
        if not parts:
            continue
        if messages and messages[-1]["role"] == role and not messages[-1].get("tool_calls"):
            messages[-1]["content"].extend(parts)
        else:
            messages.append({"role": role, "content": parts})
    files = [{"path": file if isinstance(file, str) else file["path"]} for file in message.get("files", [])]
    new_parts = _content_parts([*files, message.get("text") or ""], max_file_mb)  # files first, as the Chatbot shows them
    new_parts = _strip_command(new_parts, commands)
    if messages and messages[-1]["role"] == "user":
        messages[-1]["content"].extend(new_parts)
    else:
        messages.append({"role": "user", "content": new_parts})
    return messages


def _strip_command(parts: list[dict[str, Any]], commands: Any) -> list[dict[str, Any]]:
    texts = [index for index, part in enumerate(parts) if part["type"] == "text"]
    if not texts:
        return parts
    first = texts[0]
    name, rest = split_command(parts[first]["text"], commands)
    if name is None:
        return parts
    text = rest or f"Use {name}."
    return [*parts[:first], {"type": "text", "text": text}, *parts[first + 1 :]]


def _append_tool_record(messages: list[dict[str, Any]], record: dict[str, Any]) -> None:
    """Add a remembered call (to the assistant turn that made it) and its tool result."""
    index = len(messages)
    while index and messages[index - 1]["role"] == "tool":  # results of earlier calls of the same turn
        index -= 1
    caller = messages[index - 1] if index and messages[index - 1]["role"] == "assistant" else None
    if caller is None or (index < len(messages) and not caller.get("tool_calls")):
        caller = {"role": "assistant", "content": []}
        messages.append(caller)
    caller.setdefault("tool_calls", []).append(record["call"])
    messages.append(record["result"])


def name_uploads(text: str, messages: list[dict[str, Any]]) -> str:
    """``text`` with each file of ``messages`` named by its file name instead of its (long) cache path."""
    parts = [part for message in messages if isinstance(message["content"], list) for part in message["content"]]
    paths = [part[part["type"]] for part in parts if part["type"] != "text"]
    for path in sorted(paths, key=len, reverse=True):
        text = text.replace(describe_media(path), Path(path).name).replace(path, Path(path).name)
    return text


def _session_key(session: dict[str, Any] | None) -> str:
    """A stable id for one browser session, kept in its ``gr.State`` dict."""
    if session is None:
        return "local"
    return session.setdefault("id", uuid.uuid4().hex)


def _call_markdown(call: ToolCall) -> str:
    return f"**Arguments**\n\n```json\n{json.dumps(call.arguments, ensure_ascii=False, indent=1)}\n```"


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


@dataclass
class PendingApproval:
    """A plugin call waiting for the user's Approve or Deny."""

    call: ToolCall
    decided: threading.Event = field(default_factory=threading.Event)
    approved: bool = False


class ChatHandlers:
    """The UI's event handlers, bound to one assistant; tests call them directly, without a server.

    ``session`` is a per-browser ``gr.State`` dict: it keys the pending approval, so one browser can
    never approve another's call.
    """

    def __init__(
        self, bot: Assistant, max_file_mb: float | None = None, plugins: dict[str, Any] | None = None,
        approval_timeout_s: float = 300.0,
    ) -> None:
        self.bot = bot
        self.max_file_mb = max_file_mb or bot.config.media.max_file_mb
        self.plugins = dict(plugins or {})
        self.approval_timeout_s = approval_timeout_s
        self._records: OrderedDict[str, dict[str, Any]] = OrderedDict()  # call id -> {"call", "result"}
        self._pending: dict[str, PendingApproval] = {}
        self._lock = threading.Lock()

    def respond(
        self,
        message: dict[str, Any],
        history: list[dict[str, Any]],
        system_prompt: str | None = None,  # an empty Textbox arrives as None
        temperature: float = 0.0,
        top_p: float = 1.0,
        max_new_tokens: int = 256,
        enabled_plugins: list[str] | None = None,
        session: dict[str, Any] | None = None,
    ) -> Iterator[tuple[Any, Any, Any]]:
        """Stream (reply so far, status, approval text) triples; a bad request becomes a readable reply
        titled ``ERROR_TITLE``. With plugins ticked or a ``/plugin`` command the reply is a list of
        messages: text, one collapsible message per tool call, and the pictures tools return."""
        reply, messages = "", []
        sampling = {"max_new_tokens": int(max_new_tokens), "temperature": float(temperature), "top_p": float(top_p)}
        try:
            forced = self._command(message.get("text") or "")
            messages = to_messages(history, message, system_prompt, self.max_file_mb, self._records, self.plugins)
            names = list(dict.fromkeys([*(enabled_plugins or []), *([forced] if forced else [])]))
            if names:
                yield from self._respond_with_plugins(messages, names, forced, sampling, _session_key(session))
                return
            stream = self.bot.stream(messages, **sampling)
            with closing(stream):  # a cancelled event closes this generator, which closes the assistant's stream
                for piece in stream:
                    reply += piece
                    yield reply, gr.skip(), gr.skip()
        except AssistantError as error:
            yield gr.ChatMessage(content=name_uploads(str(error), messages), metadata={"title": ERROR_TITLE}), self.status(), NO_APPROVAL
            return
        except Exception:
            logger.exception("answering failed")
            yield gr.ChatMessage(content=GENERIC_ERROR, metadata={"title": ERROR_TITLE}), self.status(), NO_APPROVAL
            return
        yield reply, self.status(), gr.skip()

    def _command(self, text: str) -> str | None:
        """The plugin a ``/name`` message forces; an unknown ``/name`` is an error naming the plugins."""
        name, _ = split_command(text, self.plugins)
        if name is None and text.startswith("/") and text[1:2].isidentifier():
            asked = text[1:].split(" ", 1)[0]
            raise AssistantError(f"there is no plugin /{asked}; plugins: {', '.join('/' + n for n in sorted(self.plugins)) or 'none'}")
        return name

    def _respond_with_plugins(
        self, messages: list[dict[str, Any]], names: list[str], forced: str | None, sampling: dict[str, Any], session: str
    ) -> Iterator[tuple[Any, Any, Any]]:
        unknown = [name for name in names if name not in self.plugins]
        if unknown:
            raise AssistantError(f"unknown plugin(s) {unknown}; plugins: {sorted(self.plugins)}")
        shown: list[gr.ChatMessage] = []
        text_message: gr.ChatMessage | None = None
        by_call: dict[str, gr.ChatMessage] = {}
        calls: dict[str, dict[str, Any]] = {}
        events = self.bot.run_stream(
            messages, [self.plugins[name] for name in names], tool_choice=forced or "auto",
            followup_tool_choice="none" if forced else "auto", confirm=lambda call: self._await_approval(session, call),
            **sampling,
        )
        with closing(events):
            for event in events:
                approval: Any = gr.skip()
                if isinstance(event, TextDelta):
                    if text_message is None:
                        text_message = gr.ChatMessage(content="")
                        shown.append(text_message)
                    text_message.content += event.text
                elif isinstance(event, ToolCallEvent):
                    text_message = None
                    by_call[event.call.id] = gr.ChatMessage(
                        content=_call_markdown(event.call), metadata={"title": TOOL_TITLE + event.call.name, "status": "pending", "id": event.call.id}
                    )
                    shown.append(by_call[event.call.id])
                elif isinstance(event, AssistantTurn):
                    calls.update({call["id"]: call for call in event.message.get("tool_calls", [])})
                elif isinstance(event, ToolConfirmation):
                    by_call[event.call.id].metadata["title"] = f"{TOOL_TITLE}{event.call.name} · awaiting approval"
                    approval = f"**{event.call.name}** wants to run with `{event.call.arguments_json()}`: Approve or Deny."
                elif isinstance(event, ToolResult):
                    shown += self._show_result(by_call[event.call.id], event, calls)
                    approval = NO_APPROVAL
                yield shown, gr.skip(), approval
        yield shown, self.status(), NO_APPROVAL

    def _show_result(self, shown: gr.ChatMessage, result: ToolResult, calls: dict[str, dict[str, Any]]) -> list[gr.ChatMessage]:
        """Complete a call's message with its result; remember the call for later turns; the pictures to show."""
        text = result.message["content"][0]["text"]
        shown.metadata.update(title=TOOL_TITLE + result.call.name + ("" if result.ok else " · error"), status="done",
                              duration=round(result.duration_s, 2))
        shown.content = f"{_call_markdown(result.call)}\n\n**Result**\n\n{text}"
        with self._lock:
            self._records[result.call.id] = {"call": calls.get(result.call.id, result.call.to_openai()), "result": result.message}
            while len(self._records) > MAX_TOOL_RECORDS:
                self._records.popitem(last=False)
        pictures = [part["image"] for part in result.message["content"][1:] if part["type"] == "image"]
        return [gr.ChatMessage(content=gr.Image(value=picture, show_label=False)) for picture in pictures]

    def _await_approval(self, session: str, call: ToolCall) -> bool:
        """Block the reply until this browser presses Approve or Deny (Deny after ``approval_timeout_s``)."""
        pending = PendingApproval(call)
        with self._lock:
            self._pending[session] = pending
        try:
            if not pending.decided.wait(self.approval_timeout_s):
                logger.info("no decision on %s within %.0f s: denied", call.name, self.approval_timeout_s)
            return pending.approved
        finally:
            with self._lock:
                if self._pending.get(session) is pending:
                    del self._pending[session]

    def decide(self, approved: bool, session: dict[str, Any] | None = None) -> str:
        """Approve or Deny the call this browser's reply waits on; returns the approval text."""
        with self._lock:
            pending = self._pending.get(_session_key(session))
        if pending is None:
            return NO_APPROVAL
        pending.approved = approved
        pending.decided.set()
        return f"{'Approved' if approved else 'Denied'}: {pending.call.name}"

    def stop(self, session: dict[str, Any] | None = None) -> str:
        """The Stop button: end the active generation now (denying a waiting approval); returns the status."""
        self.decide(False, session)
        self.bot.cancel()
        return self.status()

    def status(self) -> str:
        """One line: what is loaded and the last reply's speed."""
        loaded = " · ".join(f"**{name}**: {value}" for name, value in self.bot.describe().items())
        speed = self.bot.stats.last_tokens_per_second
        return loaded + (f" · **last reply**: {speed:.1f} tokens/s" if speed else "")


# ---------------------------------------------------------------- the app


def build_app(bot: Assistant, max_file_mb: float | None = None, queue_size: int = 16, plugins: dict[str, Any] | None = None) -> gr.Blocks:
    """The Blocks app for ``bot``, queued (bounded, one request at a time) but not launched.

    ``plugins`` maps names to langchain tools (default: every registered plugin, ``plugins.available_plugins()``).
    """
    handlers = ChatHandlers(bot, max_file_mb, available_plugins() if plugins is None else plugins)
    session = gr.State({})
    choices = [(f"{name}{' (asks first)' if ToolPolicy.of(tool).requires_confirmation else ''}", name) for name, tool in sorted(handlers.plugins.items())]
    plugin_box = gr.CheckboxGroup(
        choices, value=[], label="Plugins the model may call by itself",
        info="Or type /name and a message to call one now: " + ", ".join(f"/{name}" for name in sorted(handlers.plugins)),
        elem_id="plugins", render=False,
    )
    settings = [
        gr.Textbox(label="System prompt", placeholder="default: the assistant's own", lines=2, render=False),
        gr.Slider(0.0, 2.0, value=0.0, step=0.05, label="Temperature (0 = greedy)", render=False),
        gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="Top p", render=False),
        gr.Slider(1, 1024, value=256, step=1, label="Max new tokens", render=False),
    ]
    examples = [[example] for example in load_examples()]  # one list per example: the settings keep their values
    with gr.Blocks(title="Multimodal assistant", analytics_enabled=False, fill_height=True) as app:
        status = gr.Markdown(handlers.status(), render=False)
        approval = gr.Markdown(NO_APPROVAL, elem_id="approval", render=False)
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
            additional_inputs=[*settings, plugin_box, session],
            additional_inputs_accordion=gr.Accordion("Settings and plugins", open=False, render=False),
            additional_outputs=[status, approval],
            examples=examples or None,
            cache_examples=False,
            title="Multimodal assistant",
            flagging_mode="never",
            analytics_enabled=False,
        )
        chat.textbox.stop(handlers.stop, inputs=[session], outputs=[status], queue=False)  # runs beside the built-in cancels=
        with gr.Row(equal_height=True):
            approval.render()
            approve = gr.Button("Approve", elem_id="approve", size="sm", scale=0)
            deny = gr.Button("Deny", elem_id="deny", size="sm", scale=0)
        approve.click(lambda state: handlers.decide(True, state), inputs=[session], outputs=[approval], queue=False)
        deny.click(lambda state: handlers.decide(False, state), inputs=[session], outputs=[approval], queue=False)
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
