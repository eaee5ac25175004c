"""Files to index: find them under a root, read them, and cut text into overlapping chunks.

``scan_folder`` walks a root without following links and sorts what it finds into documents (txt,
markdown, PDF), pictures, and skipped files with the reason (a link, outside the root, too large,
empty, an unsupported type). ``read_document`` returns a document's pages of text (PDFs through
pypdf; a PDF without a text layer is an error, not an empty document); ``chunk_pages`` cuts them
with langchain's ``RecursiveCharacterTextSplitter`` (paragraphs, then sentences, then words) into
chunks that carry their source, page and position. Pictures are only found here; they are decoded and checked like uploads when embedded.

It knows nothing about embeddings, indexes or the conversation.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from assistant.errors import AssistantError

DOCUMENT_SUFFIXES = {".txt": "text", ".text": "text", ".md": "markdown", ".markdown": "markdown", ".pdf": "pdf"}
PICTURE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"}


@dataclass(frozen=True)
class FoundFile:
    """A file to index: its path relative to the root, what it is, its size and content hash."""

    path: Path  # absolute, resolved
    relative: str  # how records and results name it
    kind: str  # "document" or "picture"
    size: int
    sha256: str


@dataclass
class Scan:
    """What ``scan_folder`` found: files to index and files skipped, each with the reason."""

    files: list[FoundFile] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)


@dataclass(frozen=True)
class Chunk:
    """A piece of a document's text with where it came from."""

    text: str
    source: str
    page: int  # 1-based; 1 for formats without pages
    chunk: int  # 0-based position within the document


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def scan_folder(root: str | os.PathLike, max_file_mb: float = 50.0) -> Scan:
    """Every document and picture under ``root`` (which may also be a single file).

    Symbolic links are never followed (a link is skipped, as is anything that resolves outside the
    root), so an index cannot be made to read files the user did not point at.

    Raises:
        AssistantError: ``root`` does not exist or is itself a link.
    """
    given = Path(root).expanduser()
    if given.is_symlink():
        raise AssistantError(f"{given} is a symbolic link; give the real folder or file")
    if not given.exists():
        raise AssistantError(f"{given} does not exist")
    base = given.resolve()
    scan = Scan()
    if base.is_file():
        _consider(base, base.parent, scan, max_file_mb)
        return scan
    for folder, subfolders, names in os.walk(base, followlinks=False):
        subfolders.sort()
        for name in sorted(names):
            _consider(Path(folder) / name, base, scan, max_file_mb)
        for name in subfolders:
            if (Path(folder) / name).is_symlink():
                scan.skipped.append((str((Path(folder) / name).relative_to(base)), "a symbolic link (not followed)"))
    return scan


def _consider(path: Path, base: Path, scan: Scan, max_file_mb: float) -> None:
    relative = str(path.relative_to(base)) if path.is_relative_to(base) else path.name
    if path.is_symlink():
        scan.skipped.append((relative, "a symbolic link (not followed)"))
        return
    resolved = path.resolve()
    if not resolved.is_relative_to(base):
        scan.skipped.append((relative, "outside the ingested root"))
        return
    if not resolved.is_file():
        scan.skipped.append((relative, "not a regular file"))
        return
    suffix = resolved.suffix.lower()
    kind = "document" if suffix in DOCUMENT_SUFFIXES else "picture" if suffix in PICTURE_SUFFIXES else None
    if kind is None:
        scan.skipped.append((relative, f"unsupported file type {suffix or '(none)'}"))
        return
    size = resolved.stat().st_size
    if size == 0:
        scan.skipped.append((relative, "empty"))
        return
    if size > max_file_mb * 1024 * 1024:
        scan.skipped.append((relative, f"{size / 2**20:.1f} MB, over the {max_file_mb:g} MB limit"))
        return
    try:
        digest = file_sha256(resolved)
    except OSError as error:
        scan.skipped.append((relative, f"unreadable: {error.strerror or error}"))
        return
    scan.files.append(FoundFile(resolved, relative, kind, size, digest))


def read_document(path: Path) -> list[str]:
    """The text of each page of a txt, markdown or PDF file.

    Raises:
        AssistantError: The file cannot be read or decoded, or has no text (e.g. a scanned PDF).
    """
    if DOCUMENT_SUFFIXES.get(path.suffix.lower()) == "pdf":
        pages = _read_pdf(path)
    else:
        try:
            raw = path.read_bytes()
        except OSError as error:
            raise AssistantError(f"{path.name}: cannot be read: {error.strerror or error}") from None
        if b"\x00" in raw[:8192]:
            raise AssistantError(f"{path.name}: looks binary, not text")
        pages = [raw.decode("utf-8", errors="replace")]
    if not any(page.strip() for page in pages):
        raise AssistantError(f"{path.name}: has no text" + (" (a scanned PDF without a text layer?)" if len(pages) > 1 or path.suffix.lower() == ".pdf" else ""))
    return pages


def _read_pdf(path: Path) -> list[str]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted:
            raise AssistantError(f"{path.name}: the PDF is encrypted")
        return [page.extract_text() or "" for page in reader.pages]
    except AssistantError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as error:
        raise AssistantError(f"{path.name}: not a readable PDF ({type(error).__name__}: {error})") from None


def chunk_pages(
    pages: list[str], source: str, size: int = 200, overlap: int = 40, length: Callable[[str], int] = len
) -> list[Chunk]:
    """Cut pages into overlapping chunks (paragraph, then sentence, then word boundaries).

    Args:
        pages: Text of each page.
        source: How the chunks name their document.
        size: Most ``length`` units per chunk (the embedder's tokens, so no chunk is truncated).
        overlap: Units shared by neighbouring chunks.
        length: Measures a text, e.g. the embedder's token count (default: characters).
    """
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    splitter = RecursiveCharacterTextSplitter(
        chunk_size=size, chunk_overlap=overlap, length_function=length, separators=["\n\n", "\n", ". ", " ", ""],
        keep_separator="end",
    )
    chunks: list[Chunk] = []
    for page_number, page in enumerate(pages, start=1):
        for piece in splitter.split_text(page):
            if piece.strip():
                chunks.append(Chunk(piece.strip(), source, page_number, len(chunks)))
    return chunks
