"""Command line for the knowledge base the ``search_knowledge`` plugin reads.

    python -m plugins.retrieval ingest ~/Documents/handbook ~/Pictures/site-photos
    python -m plugins.retrieval search "refund policy" --k 5
    python -m plugins.retrieval search --picture photo.png --kind picture
    python -m plugins.retrieval list
    python -m plugins.retrieval delete ~/Documents/handbook/old.pdf

The index folder is ``--index`` (default ``$MMA_KNOWLEDGE_DIR`` or
``~/.local/share/multimodal-assistant/knowledge``). Index settings (``--backend qdrant
--qdrant-location http://host:6333`` ...) apply when a new index is made. Errors print one line
and exit with status 2; it is a thin shell over ``KnowledgeBase``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from assistant.cli_args import add_dataclass_arguments, dataclass_kwargs
from assistant.config import MediaConfig
from assistant.errors import AssistantError
from assistant.media import load_image
from assistant.embedders import DEFAULT_TEXT_MODEL
from plugins.retrieval.index import IndexConfig
from plugins.retrieval.store import KnowledgeBase, iter_hits_text
from plugins.retrieval.tool import knowledge_dir


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m plugins.retrieval", description=__doc__.split("\n")[0])
    parser.add_argument("--index", default=None, help="index folder (default: $MMA_KNOWLEDGE_DIR or ~/.local/share/multimodal-assistant/knowledge)")
    parser.add_argument("--embedder", default=DEFAULT_TEXT_MODEL, help="a new index's embedder: default (MiniLM), a sentence-transformers or CLIP id/folder")
    add_dataclass_arguments(parser, IndexConfig)
    commands = parser.add_subparsers(dest="command", required=True)
    ingest = commands.add_parser("ingest", help="add or update the files of folders (or single files)")
    ingest.add_argument("paths", nargs="+")
    search = commands.add_parser("search", help="the nearest chunks and pictures to a text or a picture")
    search.add_argument("query", nargs="?", default=None)
    search.add_argument("--picture", default=None, help="search with this picture instead of a text")
    search.add_argument("--k", type=int, default=5)
    search.add_argument("--kind", choices=["any", "text", "picture"], default="any")
    commands.add_parser("list", help="the indexed files and their record counts")
    delete = commands.add_parser("delete", help="remove one file's records")
    delete.add_argument("source")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_arguments(argv)
    try:
        knowledge = KnowledgeBase(args.index or knowledge_dir(), index=IndexConfig(**dataclass_kwargs(args, IndexConfig)),
                                  embedder_model=args.embedder)
        if args.command == "ingest":
            for path in args.paths:
                report = knowledge.ingest(path)
                print(f"{path}: {report.summary()}")
                for relative, reason in report.skipped:
                    print(f"  skipped {relative}: {reason}")
        elif args.command == "search":
            if (args.query is None) == (args.picture is None):
                raise AssistantError("give a text query or --picture PATH, not both")
            query = load_image(args.picture, MediaConfig()).frames[0].image if args.picture else args.query
            hits = knowledge.search(query, k=args.k, kind=args.kind)
            print("\n\n".join(iter_hits_text(hits)) if hits else "no results")
        elif args.command == "list":
            for source, count in sorted(knowledge.sources().items()):
                print(f"{count:6d}  {source}")
            print(f"{len(knowledge)} records in {knowledge.folder}")
        else:
            print(f"removed {knowledge.delete(args.source)} records of {args.source}")
    except AssistantError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
