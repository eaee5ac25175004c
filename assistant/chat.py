"""Command-line chat over ``Assistant``: one question, or an interactive session with history.

    python -m assistant.chat --image photo.png "What is in this picture?"
    python -m assistant.chat --image scene.png --audio question.wav     # a spoken question (no text needed)
    python -m assistant.chat --adapter DIR             # interactive; /image, /video or /audio PATH attaches media

A thin shell: it builds messages and prints the stream; all model logic lives in ``Assistant``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from typing import Any

from assistant.assistant import Assistant
from assistant.cli_args import add_dataclass_arguments, dataclass_kwargs
from assistant.errors import AssistantError
from assistant.generation import SamplingOptions

logger = logging.getLogger("assistant.chat")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m assistant.chat", description=__doc__.split("\n")[0])
    parser.add_argument("question", nargs="?", help="ask once and exit; omit for an interactive chat")
    parser.add_argument("--adapter", "--model", dest="adapter", help="adapter artifact folder (default: built-in)")
    parser.add_argument("--image", action="append", default=[], help="image file to attach (repeatable)")
    parser.add_argument("--video", action="append", default=[], help="video file to attach (repeatable)")
    parser.add_argument("--audio", action="append", default=[], help="audio file to attach (repeatable)")
    parser.add_argument("--system", help="system prompt")
    add_dataclass_arguments(parser, SamplingOptions)
    parser.add_argument("--verbose", action="store_true", help="log at INFO level")
    return parser


def user_message(text: str, images: list[str], videos: list[str], audio: list[str] = ()) -> dict[str, Any]:
    parts = [{"type": "image", "image": path} for path in images] + [{"type": "video", "video": path} for path in videos]
    parts += [{"type": "audio", "audio": path} for path in audio]
    return {"role": "user", "content": parts + ([{"type": "text", "text": text}] if text else [])}


def answer(bot: Assistant, messages: list[dict[str, Any]], options: dict[str, Any]) -> str | None:
    """Stream one reply to stdout; on bad input print the error and return None."""
    pieces = []
    try:
        for piece in bot.stream(messages, **options):
            sys.stdout.write(piece)
            sys.stdout.flush()
            pieces.append(piece)
    except AssistantError as error:
        sys.stdout.write(f"error: {error}")
        return None
    finally:
        sys.stdout.write("\n")
    return "".join(pieces)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    options = dataclasses.asdict(SamplingOptions(**dataclass_kwargs(args, SamplingOptions)))
    try:
        bot = Assistant.from_pretrained(args.adapter)
    except AssistantError as error:
        logger.error("%s", error)
        return 2
    history: list[dict[str, Any]] = [{"role": "system", "content": args.system}] if args.system else []
    if args.question or args.audio:
        message = user_message(args.question or "", args.image, args.video, args.audio)
        return 0 if answer(bot, history + [message], options) is not None else 1
    attached: dict[str, list[str]] = {"image": list(args.image), "video": list(args.video), "audio": []}
    print("Chat with the assistant. /image, /video or /audio PATH attaches media, /reset clears, Ctrl-D quits.")
    while True:
        try:
            line = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            return 0
        command, _, rest = line.partition(" ")
        if command.lstrip("/") in attached and command.startswith("/") and rest.strip():
            attached[command.lstrip("/")].append(rest.strip())
            continue
        if line == "/reset":
            history = history[:1] if args.system else []
            attached = {kind: [] for kind in attached}
            continue
        if not line:
            continue
        message = user_message(line, attached["image"], attached["video"], attached["audio"])
        sys.stdout.write("assistant> ")
        reply = answer(bot, history + [message], options)
        if reply is not None:  # a failed turn is not added to the history
            history += [message, {"role": "assistant", "content": reply}]
            attached = {kind: [] for kind in attached}


if __name__ == "__main__":
    sys.exit(main())
