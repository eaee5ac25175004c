"""Training rows in two formats, from a ``Sample`` (image paths plus question/answer turns).

- LLaVA: ``{"id", "image": path | [paths], "conversations": [{"from": "human", "value":
  "<image>\\n...question"}, {"from": "gpt", "value": answer}, ...], "question_type"}`` with one
  ``<image>`` line per image at the start of the first human turn.
- messages (this project's typed content, see ``assistant/messages.py``): ``{"id", "messages":
  [{"role": "user", "content": [{"type": "image", "image": path}, ..., {"type": "text", "text":
  question}]}, {"role": "assistant", "content": [{"type": "text", "text": answer}]}, ...],
  "question_type"}`` with the images in the first user turn.

Both carry ``regions`` when the sample has them: each object's box (fractions of the picture) and
its words, for grounded alignment (``training.data.rows``, ``training.grounding``).

Image paths are kept exactly as given (relative to the data root). Files are streamed: JSONL one
row a line, LLaVA JSON as one array written row by row. This module knows nothing about scenes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Callable

from training.data.scene_questions import QA

IMAGE_TOKEN = "<image>"
FORMATS = ("messages", "llava", "both")


@dataclass(frozen=True)
class Sample:
    """One training conversation about one or more images."""

    id: str
    images: tuple[str, ...]  # paths relative to the data root
    turns: tuple[QA, ...]
    question_type: str
    regions: tuple[dict[str, Any], ...] = ()  # {"image", "box", "text"} per object (``training.data.rows``)


def _with_regions(row: dict[str, Any], sample: Sample) -> dict[str, Any]:
    return {**row, "regions": list(sample.regions)} if sample.regions else row


def llava_row(sample: Sample) -> dict[str, Any]:
    """The LLaVA conversation row: ``image`` is a string for one image, a list for several."""
    conversations = []
    for index, turn in enumerate(sample.turns):
        prefix = f"{IMAGE_TOKEN}\n" * len(sample.images) if index == 0 else ""
        conversations.append({"from": "human", "value": prefix + turn.question})
        conversations.append({"from": "gpt", "value": turn.answer})
    image: str | list[str] = sample.images[0] if len(sample.images) == 1 else list(sample.images)
    return _with_regions({"id": sample.id, "image": image, "conversations": conversations, "question_type": sample.question_type}, sample)


def messages_row(sample: Sample) -> dict[str, Any]:
    """The typed-content messages row."""
    messages = []
    for index, turn in enumerate(sample.turns):
        images = [{"type": "image", "image": path} for path in sample.images] if index == 0 else []
        messages.append({"role": "user", "content": [*images, {"type": "text", "text": turn.question}]})
        messages.append({"role": "assistant", "content": [{"type": "text", "text": turn.answer}]})
    return _with_regions({"id": sample.id, "messages": messages, "question_type": sample.question_type}, sample)


class RowFile:
    """Streams rows to ``path``: JSON Lines, or (``as_array=True``) one JSON array."""

    def __init__(self, path: Path, to_row: Callable[[Sample], dict[str, Any]], as_array: bool = False) -> None:
        self.path, self.to_row, self.as_array = path, to_row, as_array
        self.rows = 0
        self._file = path.open("w", encoding="utf-8")
        if as_array:
            self._file.write("[")

    def write(self, sample: Sample) -> None:
        text = json.dumps(self.to_row(sample), ensure_ascii=False)
        if self.as_array:
            self._file.write(("\n" if self.rows == 0 else ",\n") + text)
        else:
            self._file.write(text + "\n")
        self.rows += 1

    def close(self) -> None:
        if self.as_array:
            self._file.write("\n]\n")
        self._file.close()

    def __enter__(self) -> RowFile:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.close()


def open_row_files(root: Path, split: str, output_format: str) -> list[RowFile]:
    """``{split}.jsonl`` (messages) and/or ``{split}_llava.json`` (LLaVA array) under ``root``."""
    if output_format not in FORMATS:
        raise ValueError(f"unknown format {output_format!r}; expected one of {FORMATS}")
    files = []
    if output_format in ("messages", "both"):
        files.append(RowFile(root / f"{split}.jsonl", messages_row))
    if output_format in ("llava", "both"):
        files.append(RowFile(root / f"{split}_llava.json", llava_row, as_array=True))
    return files
