"""A Gradio multimodal chat over ``Assistant``: ``python launch_ui.py [--adapter DIR] [--port N]``.

It turns Gradio's chat history plus the new message into the assistant's typed-content messages on
every turn (``assistant.chat_history``), streams the reply into the chat, and serves with limits: an
upload size cap, a bounded queue, files served only from Gradio's cache, no flagging, no analytics,
no run history, and no tracebacks shown to users. Several browsers are answered at once (their
replies decode together in one batch); each browser has its own conversation, and its Stop button
ends its own reply only.

Plugins (``plugins/``) appear in a Plugins panel: ticked ones the model may call by itself, and
``/<plugin> text`` calls one now (``tool_choice=<plugin>``). Each call is shown as a collapsible
message (arguments, result, duration), pictures a tool returns are shown inline, and plugins with
side effects wait for Approve or Deny.

It deliberately knows nothing about models, prompts, tokens or caches: re-sending earlier images is
cheap because the assistant reuses its KV prefix and feature cache, not because of anything here.
"""

from __future__ import annotations

import argparse
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
from assistant.chat_history import BYTES_PER_MB, ERROR_TITLE, MEDIA_TYPE_BY_EXTENSION, media_part, name_uploads, split_command, to_messages  # noqa: E402,F401
from assistant.cli_args import add_dataclass_arguments, dataclass_kwargs  # noqa: E402
from assistant.config import SERVING_MODES  # noqa: E402
from assistant.tools import ToolPolicy  # noqa: E402
from assistant.tools.spec import tool_spec  # noqa: E402
from assistant.tools.calls import ToolCall  # noqa: E402
from assistant.tools.events import AssistantTurn, TextDelta, ToolCallEvent, ToolConfirmation, ToolProgress, ToolResult  # noqa: E402
from plugins import available_plugins  # noqa: E402

logger = logging.getLogger(__name__)

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"  # written by `python -m training.data.scenes --examples examples`
GENERIC_ERROR = "Something went wrong while answering. The error was logged; please try again."
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
    concurrency: int = field(default=8, metadata={"help": "replies generated at once (decoded together)"})
    serving: str | None = field(
        default=None, metadata={"help": "LLM weights to decode with: eager | merged | bf16 | int8 (default: the artifact's)"}
    )

    def __post_init__(self) -> None:
        if self.port is not None and not 1 <= self.port <= 65535:
            raise ValueError(f"port must be in 1..65535, got {self.port}")
        if self.max_file_mb is not None and self.max_file_mb <= 0:
            raise ValueError(f"max file size must be positive, got {self.max_file_mb}")
        if self.serving is not None and self.serving not in SERVING_MODES:
            raise ValueError(f"serving must be one of {', '.join(SERVING_MODES)}, got {self.serving!r}")
        if self.queue_size < 1 or self.concurrency < 1:
            raise ValueError(f"queue size and concurrency must be at least 1, got {self.queue_size}, {self.concurrency}")


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


def _session_key(session: dict[str, Any] | None) -> str:
    """A stable id for one browser session, kept in its ``gr.State`` dict."""
    if session is None:
        return "local"
    return session.setdefault("id", uuid.uuid4().hex)


def shown_duration(seconds: float) -> float:
    """A call's duration for its message, at least 0.01 s: Gradio hides a zero duration, which reads as "still running"."""
    return max(round(seconds, 2), 0.01)


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

    ``session`` is a per-browser ``gr.State`` dict: it keys the pending approval and the reply's cancel
    event, so one browser can never approve another's call or stop another's reply.
    """

    def __init__(
        self, bot: Assistant, max_file_mb: float | None = None, plugins: dict[str, Any] | None = None,
        approval_timeout_s: float = 300.0,
    ) -> None:
        self.bot = bot
        self.max_file_mb = max_file_mb or bot.config.media.max_file_mb
        self.plugins = dict(plugins or {})
        # attachments (the model reads a marker) of the types a plugin reads, e.g. DICOM for the medical plugin
        self.file_types = sorted({suffix for tool in self.plugins.values() for suffix in ToolPolicy.of(tool).file_types})
        self.approval_timeout_s = approval_timeout_s
        self._records: OrderedDict[str, dict[str, Any]] = OrderedDict()  # call id -> {"call", "result"}
        self._pending: dict[str, PendingApproval] = {}
        self._cancels: dict[str, threading.Event] = {}  # session -> its reply's cancel event
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
        reply, messages, key, cancel = "", [], _session_key(session), threading.Event()
        with self._lock:
            self._cancels[key] = cancel
        sampling = {"max_new_tokens": int(max_new_tokens), "temperature": float(temperature), "top_p": float(top_p),
                    "cancel": cancel, "session": key}
        try:
            forced = self._command(message.get("text") or "")
            messages = to_messages(history, message, system_prompt, self.max_file_mb, self._records, self.plugins, self.file_types)
            names = list(dict.fromkeys([*(enabled_plugins or []), *([forced] if forced else [])]))
            if names:
                yield from self._respond_with_plugins(messages, names, forced, sampling, key, self._direct_call(forced, message))
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
        finally:
            with self._lock:
                if self._cancels.get(key) is cancel:
                    del self._cancels[key]
        yield reply, self.status(), gr.skip()

    def _command(self, text: str) -> str | None:
        """The plugin a ``/name`` message forces; an unknown ``/name`` is an error naming the plugins."""
        name, _ = split_command(text, self.plugins)
        if name is None and text.startswith("/") and text[1:2].isidentifier():
            asked = text[1:].split(" ", 1)[0]
            raise AssistantError(f"there is no plugin /{asked}; plugins: {', '.join('/' + n for n in sorted(self.plugins)) or 'none'}")
        return name

    def _direct_call(self, forced: str | None, message: dict[str, Any]) -> ToolCall | None:
        """``/name text`` for a plugin whose one required argument is text: the call itself, with ``text`` as that
        argument (the 135M default rewrote such text, or filled it with the argument's description)."""
        if forced is None:
            return None
        _, rest = split_command(message.get("text") or "", self.plugins)
        argument = tool_spec(self.plugins[forced]).text_argument
        return ToolCall(forced, {argument: rest}) if argument and rest else None

    def _respond_with_plugins(
        self, messages: list[dict[str, Any]], names: list[str], forced: str | None, sampling: dict[str, Any], session: str,
        direct: ToolCall | None = None,
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
            direct_calls=[direct] if direct else None,
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
                elif isinstance(event, ToolProgress):  # a long call (e.g. drawing a picture) says how far it is
                    by_call[event.call.id].metadata["log"] = f"{event.note + ': ' if event.note else ''}{event.done}/{event.total}"
                elif isinstance(event, ToolResult):
                    by_call[event.call.id].metadata.pop("log", None)
                    shown += self._show_result(by_call[event.call.id], event, calls)
                    approval = NO_APPROVAL
                yield shown, gr.skip(), approval
        yield shown, self.status(), NO_APPROVAL

    def _show_result(self, shown: gr.ChatMessage, result: ToolResult, calls: dict[str, dict[str, Any]]) -> list[gr.ChatMessage]:
        """Complete a call's message with its result; remember the call for later turns; the pictures to show."""
        text = result.message["content"][0]["text"]
        shown.metadata.update(title=TOOL_TITLE + result.call.name + ("" if result.ok else " · error"), status="done",
                              duration=shown_duration(result.duration_s))
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
        """The Stop button: end this browser's reply now (denying its waiting approval); returns the status."""
        self.decide(False, session)
        with self._lock:
            cancel = self._cancels.get(_session_key(session))
        if cancel is not None:
            cancel.set()
        return self.status()

    def status(self) -> str:
        """One line: what is loaded and the last reply's speed."""
        loaded = " · ".join(f"**{name}**: {value}" for name, value in self.bot.describe().items())
        speed = self.bot.stats.last_tokens_per_second
        return loaded + (f" · **last reply**: {speed:.1f} tokens/s" if speed else "")


# ---------------------------------------------------------------- the app


def build_app(
    bot: Assistant, max_file_mb: float | None = None, queue_size: int = 16, plugins: dict[str, Any] | None = None,
    concurrency: int = 8,
) -> gr.Blocks:
    """The Blocks app for ``bot``, queued (bounded; ``concurrency`` replies decoded together) but not launched.

    ``plugins`` maps names to langchain tools (default: every registered plugin, ``plugins.available_plugins()``).
    """
    handlers = ChatHandlers(bot, max_file_mb, available_plugins() if plugins is None else plugins)
    hears = "audio" in bot.supported_media  # microphone recording and audio uploads (shown as players in the chat)
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
                placeholder="Ask about a picture or a recording (type, record, or attach several files)..." if hears
                else "Ask about an image, or attach several...",
                file_types=sorted({suffix for suffix, kind in MEDIA_TYPE_BY_EXTENSION.items() if kind in bot.supported_media} | set(handlers.file_types)),
                file_count="multiple",
                sources=["upload", "microphone"] if hears else ["upload"],
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
    return app.queue(max_size=queue_size, default_concurrency_limit=concurrency)


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
    bot = Assistant.from_pretrained(options.adapter, serving=options.serving)
    max_file_mb = options.max_file_mb or bot.config.media.max_file_mb
    logger.info("loaded %s", bot.describe())
    serve(build_app(bot, max_file_mb, options.queue_size, concurrency=options.concurrency), options, max_file_mb)


if __name__ == "__main__":
    main()
