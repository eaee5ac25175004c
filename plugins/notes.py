"""``save_note``: append a timestamped Markdown note to the user's notes file.

An example of a tool with a side effect: it is marked ``requires_confirmation`` so the user approves
each call before it writes. The file is ``$MMA_NOTES_FILE``, or
``~/.local/share/multimodal-assistant/notes.md``; it is read from the environment at each call.
It never reads, edits or deletes notes, and knows nothing about the conversation.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from langchain_core.tools import ToolException

from plugins.base import plugin

NOTES_FILE_VARIABLE = "MMA_NOTES_FILE"
DEFAULT_NOTES_FILE = Path("~/.local/share/multimodal-assistant/notes.md")
MAX_NOTE_CHARS = 4000
MAX_TITLE_CHARS = 200


def notes_file() -> Path:
    """Where notes go: ``$MMA_NOTES_FILE`` if set, else the default under ``~/.local/share``."""
    return Path(os.environ.get(NOTES_FILE_VARIABLE) or DEFAULT_NOTES_FILE).expanduser()


@plugin(requires_confirmation=True)
def save_note(text: str, title: str = "") -> str:
    """Save a note for the user in their Markdown notes file, with the date and time.

    Args:
        text: The note itself, in Markdown (at most 4000 characters).
        title: A short heading for the note; leave empty for none.
    """
    text, title = text.strip(), " ".join(title.split())  # a title is one line
    if not text:
        raise ToolException("the note is empty")
    if len(text) > MAX_NOTE_CHARS:
        raise ToolException(f"the note is {len(text)} characters; at most {MAX_NOTE_CHARS} are allowed")
    if len(title) > MAX_TITLE_CHARS:
        raise ToolException(f"the title is {len(title)} characters; at most {MAX_TITLE_CHARS} are allowed")
    stamp = datetime.now().astimezone().isoformat(timespec="seconds")
    heading = f"## {stamp} {title}".rstrip()
    path = notes_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as notes:
            notes.write(f"{heading}\n\n{text}\n\n")
    except OSError as error:
        raise ToolException(f"cannot write the notes file {path}: {error.strerror or error}") from None
    return f"Saved the note to {path}."
