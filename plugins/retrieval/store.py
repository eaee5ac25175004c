"""``KnowledgeBase``: a folder of a user's documents and pictures, embedded and searchable.

``ingest(root)`` brings the index in line with a folder: new files are added, changed ones (by
content hash) re-embedded, files gone from the folder removed, and every file that cannot be used
is listed with the reason. ``delete(source)`` removes one file's records. ``search`` takes text or a
picture and returns the nearest chunks and pictures, optionally only of one kind or one source.

On disk (format version 1)::

    index/manifest.json          format version, embedder, index settings, current generation
    index/gen-000007/records.jsonl one record per chunk or picture (id, kind, source, page, text...)
    index/gen-000007/vectors.npy  (N, D) float32 unit vectors, row i for record i
    index/gen-000007/hnsw.faiss   the HNSW graph, for large indexes

Every change writes a complete new generation folder, then replaces ``manifest.json`` atomically
(``os.replace``), then removes the old generation. A crash at any point leaves a manifest naming a
complete generation, so the previous index stays readable. Writers hold a file lock, so two
processes never interleave; a search in this process reads one immutable snapshot, so a concurrent
ingest never shows it a half-changed index.

It knows nothing about the conversation or how results are shown.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from assistant.config import MediaConfig
from assistant.errors import AssistantError
from assistant.media import load_image
from plugins.retrieval.documents import FoundFile, chunk_pages, read_document, scan_folder
from assistant.embedders import DEFAULT_TEXT_MODEL, Embedder, build_embedder, check_text_length, resolve_image_head
from plugins.retrieval.index import FaissIndex, IndexConfig, QdrantIndex, build_index

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
RECORDS = "records.jsonl"
VECTORS = "vectors.npy"
LOCK = ".write.lock"
KINDS = ("text", "picture")
MAX_K = 100


@dataclass(frozen=True)
class Record:
    """One indexed chunk of a document, or one picture."""

    id: int
    kind: str  # "text" or "picture"
    source: str  # the file's absolute path
    sha256: str  # of the whole file, to notice changes
    text: str = ""  # the chunk (empty for pictures)
    page: int = 1
    chunk: int = 0


@dataclass(frozen=True)
class Hit:
    score: float
    record: Record


@dataclass
class IngestReport:
    """What an ingest changed, and which files it could not use and why."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    records: int = 0  # records in the index afterwards

    def summary(self) -> str:
        return (f"{len(self.added)} added, {len(self.updated)} updated, {len(self.removed)} removed, "
                f"{self.unchanged} unchanged, {len(self.skipped)} skipped; {self.records} records in the index")


@dataclass(frozen=True)
class _Snapshot:
    records: tuple[Record, ...]
    vectors: np.ndarray  # (N, D)
    index: Any

    @functools.cached_property
    def by_id(self) -> dict[int, Record]:
        return {record.id: record for record in self.records}


class KnowledgeBase:
    """An index folder plus the embedder that built it."""

    def __init__(
        self,
        folder: str | os.PathLike,
        embedder: Embedder | None = None,
        index: IndexConfig | None = None,
        embedder_model: str = DEFAULT_TEXT_MODEL,
        image_head: str | None = "auto",
        chunk_tokens: int | None = None,
        overlap_tokens: int | None = None,
        max_file_mb: float = 50.0,
    ) -> None:
        """Open ``folder`` (created on the first ingest).

        Args:
            folder: The index folder.
            embedder: What embeds texts and pictures; default: the one recorded in the index, or
                ``build_embedder(embedder_model)`` for a new index.
            index: Vector index settings for a new index (an existing index keeps its own).
            embedder_model: A sentence-transformers or CLIP model for a new index ("default": MiniLM).
            image_head: A new index's picture side for a sentence-transformers model (see
                ``assistant.embedders.build_embedder``; "auto": the shipped head with MiniLM).
            chunk_tokens: Most embedder tokens per text chunk (at most what the embedder reads);
                default: the index's own setting, for a new index min(200, what the embedder reads).
            overlap_tokens: Tokens shared by neighbouring chunks (default: the index's, or a fifth of a chunk).
            max_file_mb: Larger files are skipped.

        Raises:
            AssistantError: The folder holds an index of another format version, a damaged one, or
                one built by another embedder than ``embedder``.
        """
        self.folder = Path(folder).expanduser()
        self.max_file_mb = max_file_mb
        self._write_lock = threading.RLock()
        manifest = self._read_manifest()
        if manifest is None:
            self.index_config = index or IndexConfig()
            self.embedder_spec = {"model": embedder_model, "kind": "auto", "image_head": resolve_image_head(embedder_model, image_head)}
            self.generation = 0
            self.next_id = 0
        else:
            self.index_config = IndexConfig(**manifest["index"])
            self.embedder_spec = manifest["embedder"]
            self.generation = manifest["generation"]
            self.next_id = manifest["next_id"]
        self.embedder = embedder or build_embedder(self.embedder_spec["model"], self.embedder_spec.get("kind", "auto"),
                                                   image_head=self.embedder_spec.get("image_head"))
        if manifest is not None and manifest["embedder"]["name"] != self.embedder.name:
            raise AssistantError(
                f"the index at {self.folder} was built with {manifest['embedder']['name']}, not {self.embedder.name}; "
                "open it with that embedder or ingest into a new folder"
            )
        self.embedder_spec = {**self.embedder_spec, "name": self.embedder.name, "dim": self.embedder.dim}
        chunking = (manifest or {}).get("chunking", {})
        chunk_tokens = chunk_tokens or chunking.get("chunk_tokens") or min(200, self.embedder.max_tokens)
        overlap_tokens = overlap_tokens if overlap_tokens is not None else chunking.get("overlap_tokens", chunk_tokens // 5)
        if not 1 <= chunk_tokens <= self.embedder.max_tokens:
            raise AssistantError(f"chunk_tokens must be in 1..{self.embedder.max_tokens} for {self.embedder.name}, got {chunk_tokens}")
        if not 0 <= overlap_tokens < chunk_tokens:
            raise AssistantError(f"overlap_tokens must be in 0..{chunk_tokens - 1}, got {overlap_tokens}")
        self.chunk_tokens, self.overlap_tokens = chunk_tokens, overlap_tokens
        self._snapshot = self._load(manifest)

    # ---------------------------------------------------------------- reading

    def __len__(self) -> int:
        return len(self._snapshot.records)

    @property
    def records(self) -> tuple[Record, ...]:
        return self._snapshot.records

    def sources(self) -> dict[str, int]:
        """Indexed files and how many records each has."""
        counts: dict[str, int] = {}
        for record in self._snapshot.records:
            counts[record.source] = counts.get(record.source, 0) + 1
        return counts

    def search(self, query: str | Image.Image, k: int = 5, kind: str = "any", source: str | None = None) -> list[Hit]:
        """The ``k`` records nearest to a text or a picture, best first.

        Args:
            query: Text (at most the embedder's token limit) or a PIL picture.
            k: How many results, 1..100.
            kind: "any", "text" (document chunks) or "picture".
            source: Only records of this file (its absolute path, as ``sources()`` lists it).

        Raises:
            AssistantError: Empty or too long a query, ``k`` or ``kind`` out of range, or a picture
                query to an embedder without a picture side.
        """
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_K:
            raise AssistantError(f"k must be an integer in 1..{MAX_K}, got {k!r}")
        if kind not in ("any", *KINDS):
            raise AssistantError(f"kind must be any, text or picture, got {kind!r}")
        snapshot = self._snapshot
        if isinstance(query, Image.Image):
            vector = self.embedder.embed_images([query])[0]
        elif isinstance(query, str):
            if not query.strip():
                raise AssistantError("the query is empty")
            check_text_length(self.embedder, query)
            vector = self.embedder.embed_texts([query])[0]
        else:
            raise AssistantError(f"a query is a text or a PIL picture, got {type(query).__name__}")
        allowed = None
        if kind != "any" or source is not None:
            allowed = np.array([r.id for r in snapshot.records if (kind == "any" or r.kind == kind) and (source is None or r.source == source)],
                               dtype=np.int64)
            if not len(allowed):
                return []
        scores, ids = snapshot.index.search(vector, k, allowed)
        return [Hit(float(score), snapshot.by_id[int(i)]) for score, i in zip(scores, ids) if int(i) in snapshot.by_id]

    # ---------------------------------------------------------------- changing

    def ingest(self, root: str | os.PathLike, progress: bool = True) -> IngestReport:
        """Bring the index in line with the files under ``root`` (a folder or one file).

        Raises:
            AssistantError: ``root`` is missing or a link. Unusable files are reported, not raised.
        """
        scan = scan_folder(root, self.max_file_mb)
        report = IngestReport(skipped=list(scan.skipped))
        with self._writing():
            snapshot = self._snapshot
            existing: dict[str, list[int]] = {}
            for position, record in enumerate(snapshot.records):
                existing.setdefault(record.source, []).append(position)
            found = {str(file.path) for file in scan.files}
            drop: set[int] = set()
            new_records: list[Record] = []
            new_vectors: list[np.ndarray] = []
            for file in tqdm(scan.files, desc="ingest", unit="file", disable=not progress or len(scan.files) < 2):
                source = str(file.path)
                old = existing.get(source, [])
                if old and snapshot.records[old[0]].sha256 == file.sha256:
                    report.unchanged += 1
                    continue
                try:
                    records, vectors = self._embed_file(file)
                except AssistantError as error:
                    report.skipped.append((file.relative, str(error)))
                    continue
                drop.update(old)
                new_records += records
                new_vectors.append(vectors)
                (report.updated if old else report.added).append(file.relative)
            base = Path(root).expanduser().resolve()
            if base.is_dir():  # files of this folder that are gone from it
                skipped_sources = {str(base / relative) for relative, _ in scan.skipped}
                for source, positions in existing.items():
                    if Path(source).is_relative_to(base) and source not in found and source not in skipped_sources:
                        drop.update(positions)
                        report.removed.append(str(Path(source).relative_to(base)))
            if new_records or drop:
                keep = [i for i in range(len(snapshot.records)) if i not in drop]
                records = [snapshot.records[i] for i in keep] + new_records
                vectors = np.concatenate([snapshot.vectors[keep], *new_vectors]) if new_vectors else snapshot.vectors[keep]
                self._commit(records, vectors, {record.id for record in new_records})
            report.records = len(self._snapshot.records)
        logger.info("ingest of %s: %s", root, report.summary())
        return report

    def delete(self, source: str | os.PathLike) -> int:
        """Remove every record of one file (by its path); returns how many were removed.

        Raises:
            AssistantError: No record has that source.
        """
        wanted = str(source) if str(source) in self.sources() else str(Path(source).expanduser().resolve())
        with self._writing():
            snapshot = self._snapshot
            keep = [i for i, record in enumerate(snapshot.records) if record.source != wanted]
            removed = len(snapshot.records) - len(keep)
            if not removed:
                raise AssistantError(f"no indexed file is {wanted}; indexed: {len(self.sources())} files (see sources())")
            self._commit([snapshot.records[i] for i in keep], snapshot.vectors[keep], set())
        return removed

    def _embed_file(self, file: FoundFile) -> tuple[list[Record], np.ndarray]:
        source = str(file.path)
        if file.kind == "picture":
            if not self.embedder.supports_images:
                raise AssistantError(f"a picture, and the embedder {self.embedder.name} has no picture side")
            picture = load_image(source, MediaConfig(max_file_mb=self.max_file_mb)).frames[0].image  # checked like an upload
            vectors = self.embedder.embed_images([picture])
            return [Record(self._new_id(), "picture", source, file.sha256)], vectors
        chunks = chunk_pages(read_document(file.path), source, self.chunk_tokens, self.overlap_tokens, self.embedder.count_tokens)
        if not chunks:
            raise AssistantError(f"{file.path.name}: has no text")
        vectors = self.embedder.embed_texts([chunk.text for chunk in chunks])
        records = [Record(self._new_id(), "text", source, file.sha256, chunk.text, chunk.page, chunk.chunk) for chunk in chunks]
        return records, vectors

    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    # ---------------------------------------------------------------- persistence

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Hold this process's writer lock and the folder's file lock (other processes)."""
        from filelock import FileLock

        self.folder.mkdir(parents=True, exist_ok=True)
        with self._write_lock, FileLock(str(self.folder / LOCK), timeout=600):
            yield

    def _read_manifest(self) -> dict[str, Any] | None:
        path = self.folder / MANIFEST
        if not path.is_file():
            if self.folder.is_dir() and any(p.name.startswith("gen-") for p in self.folder.iterdir()):
                raise AssistantError(f"the index at {self.folder} has no {MANIFEST} (damaged); delete the folder and ingest again")
            return None
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise AssistantError(f"the index manifest {path} is unreadable ({error}); delete the folder and ingest again") from None
        version = manifest.get("format_version") if isinstance(manifest, dict) else None
        if version != FORMAT_VERSION:
            raise AssistantError(f"the index at {self.folder} has format version {version!r}; this version reads {FORMAT_VERSION}. "
                                 "Ingest the files again into a new folder")
        return manifest

    def _load(self, manifest: dict[str, Any] | None) -> _Snapshot:
        index = build_index(self.embedder.dim, self.index_config, self.folder)
        if manifest is None:
            index.replace(np.zeros(0, dtype=np.int64), np.zeros((0, self.embedder.dim), dtype=np.float32), set())
            return _Snapshot((), np.zeros((0, self.embedder.dim), dtype=np.float32), index)
        generation = self.folder / _generation_name(self.generation)
        try:
            records = tuple(Record(**json.loads(line)) for line in (generation / RECORDS).read_text().splitlines() if line)
            vectors = np.load(generation / VECTORS, allow_pickle=False)
        except (OSError, ValueError, TypeError) as error:
            raise AssistantError(f"the index at {self.folder} is damaged ({generation.name}: {error}); delete the folder and ingest again") from None
        if vectors.shape != (len(records), self.embedder.dim):
            raise AssistantError(f"the index at {self.folder} is damaged: {len(records)} records but vectors of shape {vectors.shape}")
        index.load(generation, np.array([r.id for r in records], dtype=np.int64), vectors)
        return _Snapshot(records, vectors, index)

    def _commit(self, records: list[Record], vectors: np.ndarray, changed: set[int]) -> None:
        """Write a complete new generation, switch the manifest to it, drop the old one."""
        generation = self.generation + 1
        final = self.folder / _generation_name(generation)
        staging = self.folder / f".{final.name}.tmp-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            ids = np.array([r.id for r in records], dtype=np.int64)
            vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(records), self.embedder.dim)
            index = self._snapshot.index if isinstance(self._snapshot.index, QdrantIndex) else FaissIndex(self.embedder.dim, self.index_config)
            index.replace(ids, vectors, changed)
            with (staging / RECORDS).open("w", encoding="utf-8") as handle:
                for record in records:
                    handle.write(json.dumps(dataclasses.asdict(record), ensure_ascii=False) + "\n")
            np.save(staging / VECTORS, vectors, allow_pickle=False)
            index.save(staging)
            _fsync_folder(staging)
            shutil.rmtree(final, ignore_errors=True)  # a leftover of a crash between rename and manifest
            os.replace(staging, final)
            manifest = {
                "format_version": FORMAT_VERSION, "generation": generation, "next_id": self.next_id,
                "embedder": self.embedder_spec, "index": dataclasses.asdict(self.index_config), "records": len(records),
                "chunking": {"chunk_tokens": self.chunk_tokens, "overlap_tokens": self.overlap_tokens},
                "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            _atomic_write_text(self.folder / MANIFEST, json.dumps(manifest, indent=1))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        previous, self.generation = self.generation, generation
        self._snapshot = _Snapshot(tuple(records), vectors, index)
        for old in self.folder.glob("gen-*"):
            if old.name != final.name:
                shutil.rmtree(old, ignore_errors=True)
        logger.debug("index %s: generation %d -> %d (%d records)", self.folder, previous, generation, len(records))

    def close(self) -> None:
        if isinstance(self._snapshot.index, QdrantIndex):
            self._snapshot.index.close()


def _generation_name(number: int) -> str:
    return f"gen-{number:06d}"


def _fsync_folder(folder: Path) -> None:
    for path in folder.iterdir():
        with path.open("rb") as handle:
            os.fsync(handle.fileno())


def _atomic_write_text(path: Path, text: str) -> None:
    staging = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with staging.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(staging, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def iter_hits_text(hits: list[Hit]) -> Iterator[str]:
    """Each hit as a numbered line for a model or a terminal: score, source, page and text."""
    for number, hit in enumerate(hits, start=1):
        record = hit.record
        where = f"{record.source}" + (f", page {record.page}" if record.kind == "text" else "")
        body = record.text if record.kind == "text" else "(a picture)"
        yield f"[{number}] {where} (score {hit.score:.3f})\n{body}"
