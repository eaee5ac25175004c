"""Read training rows (LLaVA JSON/JSONL or typed-messages JSONL) and check each before training.

Every row becomes a list of messages in the ``Assistant``'s typed-content format with media paths
resolved under the data root. A row that cannot be trained on is skipped and counted by reason:
``malformed_row``, ``missing_file``, ``unreadable_media``, ``placeholder_mismatch``, ``path_escape``,
``empty_assistant_turn``, ``no_assistant_turn``, ``too_long``. This module opens media to check them
but knows nothing about models.

A row may also name what is where in its pictures (grounded data, as in RefCOCO or GRIT), used by
the lexical ``align`` objective (``training.grounding``)::

    "regions": [{"image": 0, "box": [x0, y0, x1, y1], "text": "large red circle left"}, ...]

``image`` is the index of the media item among the row's media, in order (default 0), ``box`` its corners as
fractions of the picture's width and height, ``text`` the words that describe it.

Rows that teach tool use carry the tools on offer as OpenAI function dicts in ``tools``; their assistant
turns may hold ``tool_calls`` (OpenAI shape) and ``tool`` turns the results, with media parts::

    {"tools": [{"type": "function", "function": {"name": "calculator", "parameters": {...}}}],
     "messages": [{"role": "user", "content": "What is 12*7?"},
                  {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                   "function": {"name": "calculator", "arguments": "{\"expression\": \"12*7\"}"}}]},
                  {"role": "tool", "tool_call_id": "c1", "content": "84"},
                  {"role": "assistant", "content": "12 x 7 = 84."}]}
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from assistant.errors import AssistantError
from assistant.tools.spec import tool_specs

logger = logging.getLogger(__name__)

LLAVA_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
IMAGE_TOKEN = "<image>"


class BadRow(Exception):
    """A row that cannot be used; ``reason`` is one of the module's reason names."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class Region:
    """A described box in one of a row's pictures; ``box`` is (x0, y0, x1, y1) as fractions of the picture."""

    image: int
    box: tuple[float, float, float, float]
    text: str

    @property
    def centre(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2


@dataclass
class Row:
    id: str
    messages: list[dict[str, Any]]
    question_type: str | None = None
    regions: list[Region] = field(default_factory=list)
    tools: list[dict[str, Any]] = field(default_factory=list)  # OpenAI function dicts on offer in this row

    @property
    def media_count(self) -> int:
        return sum(1 for m in self.messages for p in _parts(m) if p.get("type") in ("image", "video", "audio"))


@dataclass
class RowReport:
    """Bad rows by reason, with their ids; written next to the run's outputs."""

    total: int = 0
    bad: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    details: dict[str, str] = field(default_factory=dict)

    def add(self, row_id: str, error: BadRow) -> None:
        self.bad[error.reason].append(row_id)
        self.details[row_id] = str(error)

    @property
    def bad_count(self) -> int:
        return sum(len(ids) for ids in self.bad.values())

    @property
    def bad_fraction(self) -> float:
        return self.bad_count / max(self.total, 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "total_rows": self.total,
            "bad_rows": self.bad_count,
            "bad_by_reason": {reason: {"count": len(ids), "row_ids": ids} for reason, ids in sorted(self.bad.items())},
            "details": self.details,
        }


def message_text(content: Any) -> str:
    """The text of a message's content: the string itself, or its text parts joined."""
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")


def _parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    return content if isinstance(content, list) else []


def read_records(path: Path) -> Iterator[tuple[str, Any]]:
    """(fallback id, parsed record or a BadRow) for each row of a .json list or a .jsonl file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise FileNotFoundError(f"cannot read training data {path}: {error}") from None
    if path.suffix == ".json":
        try:
            records = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from None
        if not isinstance(records, list):
            raise ValueError(f"{path} must hold a JSON list of rows")
        for index, record in enumerate(records):
            yield f"{path.name}:{index}", record
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield f"{path.name}:{number}", json.loads(line)
        except json.JSONDecodeError as error:
            yield f"{path.name}:{number}", BadRow("malformed_row", f"line {number} is not valid JSON: {error.msg}")


def _resolve(reference: Any, root: Path) -> str:
    if not isinstance(reference, str) or not reference:
        raise BadRow("malformed_row", f"media reference must be a path string, got {reference!r}")
    path = (root / reference).resolve()
    if not path.is_relative_to(root):
        raise BadRow("path_escape", f"media path {reference!r} points outside the data root")
    if not path.is_file():
        raise BadRow("missing_file", f"media file {reference!r} does not exist")
    return str(path)


def _from_llava(record: dict[str, Any], root: Path) -> list[dict[str, Any]]:
    images = record.get("image", [])
    images = [images] if isinstance(images, str) else list(images or [])
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise BadRow("malformed_row", "LLaVA row has no 'conversations' list")
    placeholders = sum(str(turn.get("value", "")).count(IMAGE_TOKEN) for turn in turns if isinstance(turn, dict))
    if placeholders != len(images):
        raise BadRow("placeholder_mismatch", f"{placeholders} {IMAGE_TOKEN} placeholders for {len(images)} images")
    pending = iter(_resolve(image, root) for image in images)
    messages = []
    for turn in turns:
        role = LLAVA_ROLES.get(turn.get("from")) if isinstance(turn, dict) else None
        if role is None or not isinstance(turn.get("value"), str):
            raise BadRow("malformed_row", f"turn {turn!r:.80} needs 'from' (human/gpt/system) and a string 'value'")
        pieces = turn["value"].split(IMAGE_TOKEN)
        content: list[dict[str, Any]] = []
        for index, piece in enumerate(pieces):
            if index:
                content.append({"type": "image", "image": next(pending)})
            piece = piece.strip("\n") if role == "user" else piece
            if piece:
                content.append({"type": "text", "text": piece})
        messages.append({"role": role, "content": content})
    return messages


def _from_messages(record: dict[str, Any], root: Path) -> list[dict[str, Any]]:
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRow("malformed_row", "row has no 'messages' list")
    resolved = []
    for message in messages:
        if not isinstance(message, dict):
            raise BadRow("malformed_row", "each message must be an object")
        content = message.get("content")
        if isinstance(content, list):
            parts = []
            for part in content:
                if isinstance(part, dict) and part.get("type") in ("image", "video", "audio"):
                    kind = part["type"]
                    source = part.get(kind)
                    if isinstance(source, list):
                        part = {**part, kind: [_resolve(frame, root) for frame in source]}
                    else:
                        part = {**part, kind: _resolve(source, root)}
                parts.append(part)
            message = {**message, "content": parts}
        resolved.append(message)
    return resolved


def parse_regions(value: Any, media_count: int) -> list[Region]:
    """The row's ``regions`` list, or ``BadRow`` naming what is wrong with it."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRow("malformed_row", f"'regions' must be a list, got {type(value).__name__}")
    regions = []
    for number, item in enumerate(value):
        where = f"regions[{number}]"
        if not isinstance(item, dict):
            raise BadRow("malformed_row", f"{where} must be an object with 'box' and 'text'")
        image, box, text = item.get("image", 0), item.get("box"), item.get("text")
        if not isinstance(image, int) or isinstance(image, bool) or not 0 <= image < media_count:
            raise BadRow("malformed_row", f"{where}: image {image!r} is not one of the row's {media_count} media items")
        if (
            not isinstance(box, list) or len(box) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)
            or not (0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1)
        ):
            raise BadRow("malformed_row", f"{where}: box {box!r} must be [x0, y0, x1, y1] fractions with x0 < x1, y0 < y1")
        if not isinstance(text, str) or not text.strip():
            raise BadRow("malformed_row", f"{where}: 'text' must be a non-empty string")
        regions.append(Region(image, (float(box[0]), float(box[1]), float(box[2]), float(box[3])), text.strip()))
    return regions


def parse_row(record: Any, fallback_id: str, root: Path) -> Row:
    """One record -> a ``Row`` with resolved media paths, or ``BadRow``."""
    if isinstance(record, BadRow):
        raise record
    if not isinstance(record, dict):
        raise BadRow("malformed_row", "row must be a JSON object")
    messages = _from_llava(record, root) if "conversations" in record else _from_messages(record, root)
    assistant_turns = [m for m in messages if m.get("role") == "assistant"]
    if not assistant_turns:
        raise BadRow("no_assistant_turn", "row has no assistant turn to learn from")
    for message in assistant_turns:
        if not message_text(message.get("content") or "").strip() and not message.get("tool_calls"):
            raise BadRow("empty_assistant_turn", "an assistant turn is empty")
    row = Row(str(record.get("id", fallback_id)), messages, record.get("question_type"))
    row.regions = parse_regions(record.get("regions"), row.media_count)
    row.tools = parse_row_tools(record.get("tools"))
    return row


def parse_row_tools(value: Any) -> list[dict[str, Any]]:
    """The row's ``tools`` list (OpenAI function dicts), or ``BadRow`` naming what is wrong with it."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise BadRow("malformed_row", "'tools' must be a list of {'type': 'function', 'function': {...}} objects")
    try:
        tool_specs(value)
    except AssistantError as error:
        raise BadRow("malformed_row", f"'tools': {error}") from None
    return value


def load_rows(path: str | Path, data_root: str | Path | None = None) -> tuple[list[Row], RowReport]:
    """Parse every row of ``path``; structural problems are reported, media is checked later."""
    path = Path(path)
    root = Path(data_root or path.parent).resolve()
    rows, report = [], RowReport()
    for fallback_id, record in read_records(path):
        report.total += 1
        try:
            rows.append(parse_row(record, fallback_id, root))
        except BadRow as error:
            report.add(str(record.get("id", fallback_id)) if isinstance(record, dict) else fallback_id, error)
    return rows, report


def summarise(report: RowReport) -> str:
    counts = Counter({reason: len(ids) for reason, ids in report.bad.items()})
    listed = ", ".join(f"{reason}: {count}" for reason, count in counts.most_common()) or "none"
    return f"{report.bad_count} of {report.total} rows are bad ({listed})"
