"""Validate chat messages in the typed-content format and load the media they reference.

Format (the same for chat, streaming and training rows)::

    {"role": "system" | "user" | "assistant" | "tool",
     "content": "text" | [{"type": "text", "text": ...},
                          {"type": "image", "image": path | bytes | PIL image | array | data URL},
                          {"type": "video", "video": path | [frames...], "fps": 1.0},
                          {"type": "audio", "audio": ...},
                          {"type": "file", "file": path | bytes}],  # an attachment for tools (a DICOM scan)
     "tool_calls": [{"id", "type": "function", "function": {"name", "arguments"}}],  # assistant turns
     "tool_call_id": ..., "name": ...}  # tool turns: which call this answers

A file part is not read here and never reaches an encoder: the model sees only ``attachment_marker``
("[attached file 1 (.dcm)]": its place and extension, never its name, which may carry a patient's),
and a tool that reads attachments gets them through ``attached_files``.

Validation happens before anything is encoded or cached, so a bad request changes nothing.
This module knows nothing about tokens or models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from assistant.config import MediaConfig
from assistant.errors import AssistantError
from assistant.audio import AudioBudget, cut_to_budget
from assistant.media import LoadedMedia, load_image, load_video
from assistant.tools.calls import ToolCall, parse_tool_calls

ROLES = ("system", "user", "assistant", "tool")
MEDIA_TYPES = ("image", "video", "audio")
FILE_TYPE = "file"
RESERVED_CHARACTERS = ("\ue000", "\ue001", "\ue002", "\ue003")  # the prompt builder's markers


@dataclass
class Message:
    """A validated message: text and loaded media parts in order, plus tool-call fields."""

    role: str
    parts: list[str | LoadedMedia]
    tool_calls: list[ToolCall] = field(default_factory=list)  # assistant turns
    tool_call_id: str | None = None  # tool turns
    name: str | None = None  # tool turns: the tool's name

    @property
    def media(self) -> list[LoadedMedia]:
        return [part for part in self.parts if isinstance(part, LoadedMedia)]


def _text_part(text: Any, where: str) -> str:
    if not isinstance(text, str):
        raise AssistantError(f"{where}: text must be a string, got {type(text).__name__}")
    if any(marker in text for marker in RESERVED_CHARACTERS):
        raise AssistantError(f"{where}: text contains reserved characters U+E000/U+E001")
    return text


def validate_messages(
    messages: Any,
    limits: MediaConfig,
    supported_media: tuple[str, ...],
    frames_per_video: int,
    load_extra: dict[str, Callable[[Any], LoadedMedia]] | None = None,
    final_roles: tuple[str, ...] = ("user", "tool"),
    audio_budget: AudioBudget | None = None,
) -> list[Message]:
    """Check a conversation and load its media.

    Args:
        messages: The conversation, oldest first; the last message must be a user or tool turn.
        limits: Media size and count limits.
        supported_media: Media types this assistant has encoders for (e.g. ("image", "video")).
        frames_per_video: Frames sampled from each video.
        load_extra: Loaders for further media types (audio arrives through this slot).
        final_roles: Roles the last message may have (training rows end with the assistant).
        audio_budget: The LLM tokens the audio of one message may use; longer audio is cut
            (``assistant.audio.cut_to_budget`` logs each cut).

    Raises:
        AssistantError: Naming the first problem found.
    """
    if not isinstance(messages, (list, tuple)) or not messages:
        raise AssistantError("messages must be a non-empty list of {'role', 'content'} dicts")
    loaders: dict[str, Callable[[Any], LoadedMedia]] = {
        "image": lambda source: load_image(source, limits),
        "video": lambda source, fps=None: load_video(source, limits, frames_per_video, fps),
        **(load_extra or {}),
    }
    parsed, media_count, file_count = [], 0, 0
    for index, message in enumerate(messages):
        where = f"message {index}"
        if not isinstance(message, dict):
            raise AssistantError(f"{where} must be a dict, got {type(message).__name__}")
        role = message.get("role")
        if role not in ROLES:
            raise AssistantError(f"{where} has role {role!r}; expected one of {ROLES}")
        content = message.get("content", "")
        if content is None:
            content = ""
        raw_parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(raw_parts, (list, tuple)):
            raise AssistantError(f"{where}: content must be a string or a list of parts")
        parts: list[str | LoadedMedia] = []
        for part_index, part in enumerate(raw_parts):
            part_where = f"{where} part {part_index}"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                text = _text_part(part.get("text"), part_where)
                if text:
                    parts.append(text)
            elif kind in MEDIA_TYPES:
                if role not in ("user", "tool"):
                    raise AssistantError(f"{part_where}: {kind} is only allowed in user or tool turns")
                if kind not in supported_media or kind not in loaders:
                    raise AssistantError(f"{part_where}: this assistant has no {kind} encoder configured")
                if kind not in part:
                    raise AssistantError(f"{part_where}: {kind} part has no {kind!r} field")
                media_count += 1
                if media_count > limits.max_items_per_request:
                    raise AssistantError(
                        f"too many media items: more than the limit of {limits.max_items_per_request} per request"
                    )
                extra = {"fps": part["fps"]} if kind == "video" and "fps" in part else {}
                parts.append(loaders[kind](part[kind], **extra))
            elif kind == FILE_TYPE:
                if role != "user":
                    raise AssistantError(f"{part_where}: files are only allowed in user turns")
                file_count += 1
                parts.append(attachment_marker(file_count, _file_source(part, part_where)))
            else:
                shown = kind if kind is not None else type(part).__name__
                raise AssistantError(
                    f"{part_where}: unknown content type {shown!r}; expected text, {', '.join(MEDIA_TYPES)} or {FILE_TYPE}"
                )
        audio = [part for part in parts if isinstance(part, LoadedMedia) and part.modality == "audio"]
        if audio and audio_budget is not None:
            kept = iter(cut_to_budget(audio, audio_budget, where))  # a prefix of ``audio``, the last one maybe cut
            parts = [next(kept, None) if any(part is item for item in audio) else part for part in parts]
            parts = [part for part in parts if part is not None]
        calls = parse_tool_calls(message["tool_calls"], where) if message.get("tool_calls") else []
        if calls and role != "assistant":
            raise AssistantError(f"{where}: only assistant turns carry tool_calls, not {role}")
        call_id, name = message.get("tool_call_id"), message.get("name")
        for key, value in (("tool_call_id", call_id), ("name", name)):
            if value is not None and not isinstance(value, str):
                raise AssistantError(f"{where}: {key} must be a string")
        if not parts and not calls and role != "assistant":
            raise AssistantError(f"{where} ({role}) is empty")
        parsed.append(Message(role, parts, calls, call_id, name))
    if parsed[-1].role not in final_roles:
        raise AssistantError(f"the last message must be a {' or '.join(final_roles)} turn, got {parsed[-1].role!r}")
    return parsed


def _file_source(part: dict[str, Any], where: str) -> Any:
    source = part.get(FILE_TYPE)
    if isinstance(source, (bytes, bytearray)) and source:
        return source
    if isinstance(source, str) and source.strip():
        return source
    raise AssistantError(f"{where}: a file part needs 'file': a path or non-empty bytes")


def attachment_marker(number: int, source: Any) -> str:
    """What the model reads for the ``number``-th attached file of a conversation (counted from 1)."""
    suffix = "" if isinstance(source, (bytes, bytearray)) else Path(source).suffix.lower()
    return f"[attached file {number} ({suffix if 1 < len(suffix) <= 8 and suffix[1:].isalnum() else 'no extension'})]"


def attached_files(messages: list[dict[str, Any]]) -> list[Any]:
    """The ``file`` of every file part of the user messages, oldest first (paths or bytes, as sent)."""
    return [part[FILE_TYPE] for message in messages if isinstance(message, dict) and message.get("role") == "user"
            and isinstance(message.get("content"), list)
            for part in message["content"] if isinstance(part, dict) and part.get("type") == FILE_TYPE]


def _text_parts(message: Any, role: str = "user") -> list[str]:
    """The text of one ``role`` message: its string content or its text parts ([] for other roles)."""
    if not isinstance(message, dict) or message.get("role") != role:
        return []
    content = message.get("content")
    if isinstance(content, str):
        return [content]
    return [part["text"] for part in content or [] if isinstance(part, dict) and part.get("type") == "text"
            and isinstance(part.get("text"), str)] if isinstance(content, list) else []


def user_texts(messages: list[dict[str, Any]]) -> list[str]:
    """Every user message's text, in order."""
    return [text for message in messages for text in _text_parts(message)]


def tool_texts(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """``(tool name, text)`` of every tool message, in order."""
    return [(str(message.get("name") or ""), "\n".join(_text_parts(message, "tool")))
            for message in messages if isinstance(message, dict) and message.get("role") == "tool"]


def filter_user_text(messages: list[dict[str, Any]], filters: list[Callable[[str], str]]) -> list[dict[str, Any]]:
    """``messages`` with every user message's text (a string content or its text parts) passed through
    ``filters`` in order; other roles, media and the input list are left as they are."""
    if not filters or not isinstance(messages, list):
        return messages

    def apply(text: str) -> str:
        for step in filters:
            text = step(text)
        return text

    filtered = []
    for message in messages:
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                message = {**message, "content": apply(content)}
            elif isinstance(content, list):
                message = {**message, "content": [
                    {**part, "text": apply(part["text"])} if isinstance(part, dict) and part.get("type") == "text"
                    and isinstance(part.get("text"), str) else part for part in content]}
        filtered.append(message)
    return filtered
