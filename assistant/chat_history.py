"""Chat history as a chat UI keeps it (Gradio's messages format) -> the assistant's typed-content messages.

A UI history item is ``{"role", "content", "metadata"}`` whose content is a string, a file dict
(``{"path"}``) or a list of text and file items. Uploaded files become content parts through a small
extension table (audio arrives without a redesign) and keep their paths, so an image sent earlier
is the same image part, and the same cached prefix, on every later turn. Failed turns and
``/plugin`` commands are left out of what the model reads; remembered tool calls come back as the
assistant's call plus the tool's result.

It imports no UI library and knows nothing about models, prompts or tokens.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

from assistant.errors import AssistantError
from assistant.media import describe as describe_media  # how errors name a file

MEDIA_TYPE_BY_EXTENSION = {
    **dict.fromkeys((".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"), "image"),
    **dict.fromkeys((".mp4", ".webm", ".mov", ".mkv", ".avi"), "video"),
    **dict.fromkeys((".wav", ".mp3", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac"), "audio"),
}
FILE_KIND = "file"  # any other upload: an attachment for tools (ToolPolicy.file_types); the model sees a marker
ERROR_TITLE = "Could not answer"  # marks a failed turn; it and its user message are left out of later prompts
BYTES_PER_MB = 1024 * 1024


def media_part(path: str, max_file_mb: float, file_types: Any = ()) -> dict[str, str]:
    """The content part for an uploaded file, chosen by its extension (``file_types``: attachment extensions
    a tool reads); checks the size cap."""
    name = Path(path).name
    suffix = Path(path).suffix.lower()
    kind = MEDIA_TYPE_BY_EXTENSION.get(suffix) or (FILE_KIND if suffix in file_types else None)
    if kind is None:
        accepted = ", ".join(sorted({*MEDIA_TYPE_BY_EXTENSION, *file_types}))
        raise AssistantError(f"{name}: unsupported file type; upload one of {accepted}")
    try:
        size = os.path.getsize(path)
    except OSError:
        raise AssistantError(f"{name} is no longer on the server; clear the chat and upload it again") from None
    if size > max_file_mb * BYTES_PER_MB:
        raise AssistantError(f"{name} is {size / BYTES_PER_MB:.1f} MB, over the {max_file_mb:g} MB upload limit")
    return {"type": kind, kind: path}


def _content_parts(content: Any, max_file_mb: float, file_types: Any = ()) -> list[dict[str, str]]:
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
            parts.append(media_part(item["path"], max_file_mb, file_types))
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
    file_types: Any = (),
) -> list[dict[str, Any]]:
    """The assistant's messages for Gradio's ``history`` plus the new ``message`` ({"text", "files"}).

    Consecutive messages of one role are merged; a failed turn (its reply titled ``ERROR_TITLE``) is
    dropped with the user message it answered. Files keep their paths, so an image sent earlier is
    the same image part on every later turn. A tool call's message (its ``metadata.id`` a key of
    ``tool_records``) becomes the assistant's call and the tool's result again; pictures shown for
    tools are in those results, so assistant files are skipped. A leading ``/plugin`` command (one of
    ``commands``) is not part of what the model reads. Uploads with an extension of ``file_types`` become
    ``file`` parts (attachments a tool reads).
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
        parts = [part for part in _content_parts(item["content"], max_file_mb, file_types) if role == "user" or part["type"] == "text"]
        if role == "user":
            parts = _strip_command(parts, commands)
        if not parts:
            continue
        if messages and messages[-1]["role"] == role and not messages[-1].get("tool_calls"):
            messages[-1]["content"].extend(parts)
        else:
            messages.append({"role": role, "content": parts})
    files = [{"path": file if isinstance(file, str) else file["path"]} for file in message.get("files", [])]
    new_parts = _content_parts([*files, message.get("text") or ""], max_file_mb, file_types)  # files first, as the Chatbot shows them
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
