"""Command-line chat over ``Assistant``: one question, or an interactive session with history.

    python -m assistant.chat --image photo.png "What is in this picture?"
    python -m assistant.chat --adapter DIR             # interactive; /image PATH attaches a picture

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
    parser.add_argument("--system", help="system prompt")
    add_dataclass_arguments(parser, SamplingOptions)
    parser.add_argument("--verbose", action="store_true", help="log at INFO level")
    return parser


def user_message(text: str, images: list[str], videos: list[str]) -> dict[str, Any]:
    parts = [{"type": "image", "image": path} for path in images] + [{"type": "video", "video": path} for path in videos]
    return {"role": "user", "content": parts + [{"type": "text", "text": text}]}


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
    if args.question:
        return 0 if answer(bot, history + [user_message(args.question, args.image, args.video)], options) is not None else 1
    images, videos = list(args.image), list(args.video)
    print("Chat with the assistant. /image PATH or /video PATH attaches media, /reset clears, Ctrl-D quits.")
    while True:
        try:
            line = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            return 0
        if line.startswith("/image ") or line.startswith("/video "):
            (images if line.startswith("/image") else videos).append(line.split(" ", 1)[1].strip())
            continue
        if line == "/reset":
            history, images, videos = history[:1] if args.system else [], [], []
            continue
        if not line:
            continue
        message = user_message(line, images, videos)
        sys.stdout.write("assistant> ")
        reply = answer(bot, history + [message], options)
        if reply is not None:  # a failed turn is not added to the history
            history += [message, {"role": "assistant", "content": reply}]
            images, videos = [], []


if __name__ == "__main__":
    sys.exit(main())
