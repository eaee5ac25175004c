"""``search_knowledge``: the retrieval plugin, and a langchain retriever over the same index.

``knowledge_tool(kb)`` makes the chat plugin for one ``KnowledgeBase``: it returns the passages
found, numbered and with their sources, as text, and the pictures found as image parts, so the
assistant can look at them in the next step ("what else is in the second one?"). Retrieved text is
untrusted: the prompt builder fences tool output as data and neutralises special tokens.

The built-in ``search_knowledge`` plugin opens the index in ``$MMA_KNOWLEDGE_DIR`` (default
``~/.local/share/multimodal-assistant/knowledge``) on its first call; fill it with
``python -m plugins.retrieval ingest FOLDER``.

``KnowledgeRetriever`` is a langchain-core ``BaseRetriever`` over a ``KnowledgeBase``, so the same
index drops into a langchain retrieval chain. It knows nothing about prompts or decoding.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Annotated, Any, Literal

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.tools import BaseTool, ToolException
from pydantic import ConfigDict, Field

from assistant.config import MediaConfig
from assistant.errors import AssistantError
from assistant.media import load_image
from plugins.base import plugin
from plugins.retrieval.store import Hit, KnowledgeBase

KNOWLEDGE_DIR_VARIABLE = "MMA_KNOWLEDGE_DIR"
DEFAULT_KNOWLEDGE_DIR = Path("~/.local/share/multimodal-assistant/knowledge")
MAX_RESULTS = 10


def knowledge_dir() -> Path:
    """Where the built-in plugin's index lives: ``$MMA_KNOWLEDGE_DIR`` or the default."""
    return Path(os.environ.get(KNOWLEDGE_DIR_VARIABLE) or DEFAULT_KNOWLEDGE_DIR).expanduser()


def format_results(hits: list[Hit], limits: MediaConfig | None = None) -> tuple[str, list[dict[str, Any]]]:
    """Text listing the hits (numbered, with sources) and the image parts of the picture hits."""
    if not hits:
        return "Nothing in the knowledge base matches.", []
    lines, parts = [], []
    for number, hit in enumerate(hits, start=1):
        record = hit.record
        if record.kind == "picture":
            try:
                parts.append({"type": "image", "image": load_image(record.source, limits or MediaConfig()).frames[0].image})
                picture = len(parts)
                lines.append(f"[{number}] picture {picture} of this result: {record.source} (score {hit.score:.2f})")
            except AssistantError as error:
                lines.append(f"[{number}] picture {record.source} could not be shown: {error}")
        else:
            page = f", page {record.page}" if record.page > 1 or record.source.lower().endswith(".pdf") else ""
            lines.append(f"[{number}] {record.source}{page} (score {hit.score:.2f}):\n{record.text}")
    return "\n\n".join(lines), parts


def knowledge_tool(knowledge: KnowledgeBase | None = None, name: str = "search_knowledge") -> BaseTool:
    """The retrieval plugin over ``knowledge`` (default: the index in ``knowledge_dir()``, opened on first use)."""
    opened: dict[str, tuple[int, KnowledgeBase]] = {}  # folder -> (manifest mtime in ns, knowledge base)
    lock = threading.Lock()

    def base() -> KnowledgeBase:
        if knowledge is not None:
            return knowledge
        with lock:
            folder = knowledge_dir()
            manifest = folder / "manifest.json"
            if not manifest.is_file():
                raise ToolException(f"the knowledge base {folder} is empty; add files with: python -m plugins.retrieval ingest FOLDER")
            changed = manifest.stat().st_mtime_ns
            if str(folder) not in opened or opened[str(folder)][0] != changed:  # reopened after another process ingested
                opened[str(folder)] = (changed, KnowledgeBase(folder))
            return opened[str(folder)][1]

    def search_knowledge(
        query: str,
        k: Annotated[int, Field(ge=1, le=MAX_RESULTS)] = 4,
        kind: Literal["any", "text", "picture"] = "any",
    ) -> tuple[str, list[dict[str, Any]]]:
        """Search the user's own documents and pictures; returns the best passages with their sources, and pictures.

        Args:
            query: What to look for, in a few words (e.g. "a red star", "refund policy").
            k: How many results.
            kind: "text" for document passages, "picture" for pictures, "any" for both.
        """
        try:
            return format_results(base().search(query, k=k, kind=kind))
        except AssistantError as error:
            raise ToolException(str(error)) from None

    return plugin(search_knowledge, name=name, returns_media=True, timeout_s=60.0)


class KnowledgeRetriever(BaseRetriever):
    """A langchain retriever: ``invoke(query)`` gives ``Document``s with the record's metadata."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    knowledge: Any  # a KnowledgeBase (pydantic cannot check our class)
    k: int = 4
    kind: str = "text"

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        hits = self.knowledge.search(query, k=self.k, kind=self.kind)
        return [
            Document(page_content=hit.record.text, metadata={"source": hit.record.source, "page": hit.record.page,
                                                             "chunk": hit.record.chunk, "kind": hit.record.kind,
                                                             "score": hit.score, "id": hit.record.id})
            for hit in hits
        ]
