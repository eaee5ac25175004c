"""Convert OpenAI chat-completions messages into the assistant's typed-content format.

Used by the OpenAI-compatible server and the LangChain chat model (which goes through
``langchain_core.messages.convert_to_openai_messages`` first). Accepted content parts:
``text``, ``image_url`` (a ``data:image/...;base64,`` URL, or an http(s) URL when the caller passes
a ``fetch_image`` function that is allowed to fetch it), ``input_audio`` and ``file`` (its base64
``file_data``, handed to tools as bytes: a DICOM scan for the medical plugin). A converted message
never holds a file path: text from a client can therefore never make the assistant read a local
file.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Callable

from assistant.errors import AssistantError

ROLE_ALIASES = {"developer": "system"}
TEXT_PART_TYPES = ("text", "refusal")


def from_openai_messages(messages: Any, fetch_image: Callable[[str], bytes] | None = None) -> list[dict[str, Any]]:
    """OpenAI-shaped ``messages`` -> typed-content messages for ``Assistant``.

    Args:
        messages: ``[{"role", "content", ...}]`` as sent to ``/v1/chat/completions``.
        fetch_image: Called with an http(s) image URL and returns its bytes; ``None`` refuses
            remote URLs (the default everywhere: see ``assistant.serving.remote_media``).

    Raises:
        AssistantError: Naming the message and part at fault.
    """
    if not isinstance(messages, (list, tuple)) or not messages:
        raise AssistantError("messages must be a non-empty list")
    converted = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise AssistantError(f"{where} must be an object, got {type(message).__name__}")
        role = ROLE_ALIASES.get(message.get("role"), message.get("role"))
        out: dict[str, Any] = {"role": role, "content": _content(message.get("content"), where, fetch_image)}
        if role == "assistant" and message.get("tool_calls"):
            out["tool_calls"] = message["tool_calls"]
        if role == "tool":
            out["tool_call_id"] = message.get("tool_call_id")
            if message.get("name") is not None:
                out["name"] = message["name"]
        converted.append(out)
    return converted


def _content(content: Any, where: str, fetch_image: Callable[[str], bytes] | None) -> Any:
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, (list, tuple)):
        raise AssistantError(f"{where}.content must be a string or a list of parts, got {type(content).__name__}")
    parts = []
    for index, part in enumerate(content):
        part_where = f"{where}.content[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in TEXT_PART_TYPES:
            parts.append({"type": "text", "text": part.get(kind)})
        elif kind == "image_url":
            parts.append({"type": "image", "image": _image(part.get("image_url"), part_where, fetch_image)})
        elif kind == "input_audio":
            audio = part.get("input_audio")
            if not isinstance(audio, dict) or not isinstance(audio.get("data"), str):
                raise AssistantError(f"{part_where}: input_audio must be {{'data': base64, 'format': 'wav' | 'mp3'}}")
            parts.append({"type": "audio", "audio": f"data:audio/{audio.get('format', 'wav')};base64,{audio['data']}"})
        elif kind == "file":
            parts.append({"type": "file", "file": _file_data(part.get("file"), part_where)})
        else:
            shown = kind if kind is not None else type(part).__name__
            raise AssistantError(
                f"{part_where}: unsupported content part type {shown!r}; expected text, image_url, input_audio or file"
            )
    return parts


def _image(image_url: Any, where: str, fetch_image: Callable[[str], bytes] | None) -> str | bytes:
    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    if not isinstance(url, str) or not url:
        raise AssistantError(f"{where}: image_url needs a 'url' string")
    if url.startswith("data:"):
        if not url.startswith("data:image/"):
            raise AssistantError(f"{where}: a data URL image must be data:image/...;base64,...")
        return url
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme not in ("http", "https"):
        raise AssistantError(f"{where}: image URL scheme {scheme or '(none)'!r} is not accepted; send a data: URL")
    if fetch_image is None:
        raise AssistantError(f"{where}: remote image URLs are disabled on this server; send the image as a data: URL")
    return fetch_image(url)


def _file_data(file: Any, where: str) -> bytes:
    """The bytes of a ``file`` part's ``file_data`` (base64, or a base64 data URL); uploaded file ids are not kept here."""
    data = file.get("file_data") if isinstance(file, dict) else None
    if not isinstance(data, str) or not data:
        hint = " (this server keeps no uploaded files: send the bytes)" if isinstance(file, dict) and file.get("file_id") else ""
        raise AssistantError(f"{where}: a file part needs 'file': {{'file_data': base64}}{hint}")
    if data.startswith("data:"):
        header, _, data = data.partition(",")
        if not header.endswith(";base64"):
            raise AssistantError(f"{where}: a file data URL must be base64 (data:...;base64,...)")
    try:
        decoded = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise AssistantError(f"{where}: file_data is not valid base64") from None
    if not decoded:
        raise AssistantError(f"{where}: file_data is empty")
    return decoded
