"""Vector indexes over unit vectors (inner product = cosine): FAISS on one machine, Qdrant beyond it.

Both answer ``search(query, k, allowed)`` with record ids and scores; ``allowed`` (ids passing a
metadata filter) restricts the search inside the index, so a filter never returns fewer than ``k``
hits while more exist.

- ``FaissIndex``: exact (``IndexFlatIP``) up to ``approximate_above`` vectors, HNSW above it. It is
  rebuilt from the stored vectors when loaded or changed, and the HNSW graph is saved beside them
  so a large index does not rebuild at every start.
- ``QdrantIndex``: a Qdrant collection through qdrant-client, embedded (a local folder, or
  ``:memory:``) or a server URL; it keeps its own vectors and persistence.

This module knows nothing about files, chunks or the conversation; faiss and qdrant-client are
imported only by the backend that needs them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from assistant.errors import AssistantError

logger = logging.getLogger(__name__)

HNSW_FILE = "hnsw.faiss"


@dataclass
class IndexConfig:
    """Which vector index holds an index's vectors."""

    backend: str = field(default="faiss", metadata={"help": "faiss (one machine) or qdrant (embedded or a server)"})
    approximate_above: int = field(default=50_000, metadata={"help": "faiss: exact search up to this many vectors, HNSW above"})
    hnsw_m: int = field(default=32, metadata={"help": "faiss HNSW: neighbours per node"})
    ef_construction: int = field(default=80, metadata={"help": "faiss HNSW: candidate list while building"})
    ef_search: int = field(default=64, metadata={"help": "faiss HNSW: candidate list while searching (recall vs speed)"})
    qdrant_location: str | None = field(default=None, metadata={"help": "qdrant: a server URL; default: embedded in the index folder"})
    qdrant_collection: str = field(default="knowledge", metadata={"help": "qdrant: the collection name"})
    qdrant_api_key: str | None = field(default=None, metadata={"help": "qdrant: API key for a server"})

    def __post_init__(self) -> None:
        if self.backend not in ("faiss", "qdrant"):
            raise AssistantError(f"index backend must be faiss or qdrant, got {self.backend!r}")
        for name in ("approximate_above", "hnsw_m", "ef_construction", "ef_search"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise AssistantError(f"index {name} must be a positive integer, got {getattr(self, name)!r}")


class VectorIndex(Protocol):
    def replace(self, ids: np.ndarray, vectors: np.ndarray, changed_ids: set[int]) -> None: ...

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]: ...

    def save(self, folder: Path) -> None: ...


class FaissIndex:
    """Exact or HNSW inner-product search over (N, D) unit vectors with int64 ids."""

    def __init__(self, dim: int, config: IndexConfig) -> None:
        self.dim = dim
        self.config = config
        self.ids = np.zeros(0, dtype=np.int64)
        self._index: Any = None

    @property
    def approximate(self) -> bool:
        return len(self.ids) > self.config.approximate_above

    def replace(self, ids: np.ndarray, vectors: np.ndarray, changed_ids: set[int] | None = None) -> None:
        """Index exactly these ``ids`` (N,) and ``vectors`` (N, D)."""
        import faiss

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.ids = np.asarray(ids, dtype=np.int64)
        if len(self.ids) > self.config.approximate_above:
            inner = faiss.IndexHNSWFlat(self.dim, self.config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = self.config.ef_construction
        else:
            inner = faiss.IndexFlatIP(self.dim)
        index = faiss.IndexIDMap2(inner)
        if len(self.ids):
            index.add_with_ids(vectors, self.ids)
        self._index = index

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of the ``k`` nearest, best first; ids of -1 pad when fewer exist."""
        import faiss

        query = np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)
        if self._index is None or not len(self.ids):
            return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
        if allowed is not None:
            selector = faiss.IDSelectorBatch(np.asarray(allowed, dtype=np.int64))
            params = faiss.SearchParametersHNSW(sel=selector, efSearch=max(self.config.ef_search, k)) if self.approximate else faiss.SearchParameters(sel=selector)
        elif self.approximate:
            params = faiss.SearchParametersHNSW(efSearch=max(self.config.ef_search, k))
        else:
            params = None
        scores, ids = self._index.search(query, k, params=params)
        keep = ids[0] >= 0
        return scores[0][keep], ids[0][keep]

    def save(self, folder: Path) -> None:
        """Write the HNSW graph (exact indexes are rebuilt from the vectors, which is as fast as reading)."""
        import faiss

        if self.approximate and self._index is not None:
            faiss.write_index(self._index, str(folder / HNSW_FILE))

    def load(self, folder: Path, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Restore from a saved folder (the HNSW graph if present and current, else rebuild)."""
        import faiss

        graph = folder / HNSW_FILE
        if len(ids) > self.config.approximate_above and graph.is_file():
            index = faiss.read_index(str(graph))
            if index.ntotal == len(ids):
                self._index, self.ids = index, np.asarray(ids, dtype=np.int64)
                return
            logger.warning("%s holds %d vectors, the records %d: rebuilding it", graph, index.ntotal, len(ids))
        self.replace(ids, vectors)


class QdrantIndex:
    """A Qdrant collection (embedded in a folder, in memory, or on a server) holding the vectors."""

    def __init__(self, dim: int, config: IndexConfig, folder: Path | None) -> None:
        from qdrant_client import QdrantClient
        from qdrant_client.http import models

        self.dim = dim
        self.config = config
        self._models = models
        location = config.qdrant_location
        if location and location.startswith(("http://", "https://")):
            self.client = QdrantClient(url=location, api_key=config.qdrant_api_key, timeout=30)
        elif location == ":memory:" or folder is None:
            self.client = QdrantClient(location=":memory:")
        else:
            self.client = QdrantClient(path=str(Path(location) if location else folder / "qdrant"))
        name = config.qdrant_collection
        if not self.client.collection_exists(name):
            self.client.create_collection(name, vectors_config=models.VectorParams(size=dim, distance=models.Distance.DOT))
        self.name = name

    def replace(self, ids: np.ndarray, vectors: np.ndarray, changed_ids: set[int] | None = None) -> None:
        """Make the collection hold exactly ``ids``: upsert the changed ones, delete the ones gone."""
        models = self._models
        wanted = {int(i) for i in ids}
        present = self._all_ids()
        gone = sorted(present - wanted)
        if gone:
            self.client.delete(self.name, points_selector=models.PointIdsList(points=gone), wait=True)
        fresh = [index for index, point in enumerate(ids) if int(point) not in present or (changed_ids and int(point) in changed_ids)]
        for start in range(0, len(fresh), 512):
            batch = fresh[start : start + 512]
            self.client.upsert(self.name, points=models.Batch(ids=[int(ids[i]) for i in batch],
                                                              vectors=[vectors[i].astype(np.float32).tolist() for i in batch]), wait=True)

    def _all_ids(self) -> set[int]:
        found: set[int] = set()
        offset = None
        while True:
            points, offset = self.client.scroll(self.name, limit=1024, offset=offset, with_payload=False, with_vectors=False)
            found.update(int(point.id) for point in points)
            if offset is None:
                return found

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        models = self._models
        query_filter = None
        if allowed is not None:
            query_filter = models.Filter(must=[models.HasIdCondition(has_id=[int(i) for i in allowed])])
        hits = self.client.query_points(self.name, query=query.astype(np.float32).tolist(), limit=k, query_filter=query_filter).points
        return np.array([hit.score for hit in hits], dtype=np.float32), np.array([int(hit.id) for hit in hits], dtype=np.int64)

    def save(self, folder: Path) -> None:
        """Nothing to write: Qdrant persists the collection itself."""

    def load(self, folder: Path, ids: np.ndarray, vectors: np.ndarray) -> None:
        if self._all_ids() != {int(i) for i in ids}:
            logger.warning("qdrant collection %r differs from the index records: syncing it", self.name)
            self.replace(ids, vectors)

    def close(self) -> None:
        self.client.close()


def build_index(dim: int, config: IndexConfig, folder: Path | None = None) -> FaissIndex | QdrantIndex:
    if config.backend == "qdrant":
        return QdrantIndex(dim, config, folder)
    return FaissIndex(dim, config)
