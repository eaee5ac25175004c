"""Retrieval over a user's own files: ingest folders of documents and pictures, search them by text
or by picture, from the chat (the ``search_knowledge`` plugin), from Python (``KnowledgeBase``) or
from langchain (``KnowledgeRetriever``).

Data flow: files (``documents``) -> embedder (``embedders``: sentence-transformers, CLIP) ->
vector index (``index``: FAISS or Qdrant) -> the persisted knowledge base (``store``) -> the plugin
and the retriever (``tool``).
"""

from assistant.embedders import CLIPEmbedder, TextEmbedder, build_embedder
from plugins.retrieval.index import IndexConfig
from plugins.retrieval.store import Hit, IngestReport, KnowledgeBase, Record
from plugins.retrieval.tool import KnowledgeRetriever, knowledge_tool

__all__ = [
    "CLIPEmbedder",
    "Hit",
    "IndexConfig",
    "IngestReport",
    "KnowledgeBase",
    "KnowledgeRetriever",
    "Record",
    "TextEmbedder",
    "build_embedder",
    "knowledge_tool",
]
