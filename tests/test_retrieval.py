"""Retrieval: scanning and chunking files, the persisted index, FAISS and Qdrant, the plugin, langchain.

The text embedder is a tiny random BERT made into a sentence-transformers model here (the packaged
MiniLM's tokenizer files, random weights), so nothing is downloaded and the real loading path runs.
Random embeddings carry no meaning, so searches look for a chunk's own text: its vector is identical
and must come first. Pictures use a small test image head (mean colour) through the same interface.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from langchain_core.tools import ToolException
from PIL import Image

from assistant.errors import AssistantError
from plugins.retrieval import IndexConfig, KnowledgeBase, KnowledgeRetriever, TextEmbedder, knowledge_tool
from plugins.retrieval.documents import chunk_pages, read_document, scan_folder

PARAGRAPHS = [
    "The refund policy allows returns within thirty days of purchase when the receipt is kept.",
    "Solar panels convert sunlight into electricity using photovoltaic cells made of silicon.",
    "The annual meeting of the gardening club takes place every spring in the town hall.",
    "A healthy diet includes vegetables, fruit, whole grains and enough water every day.",
]


class ColourHead:
    """A test image head: the picture's mean colour, placed in a fixed corner of the text space."""

    name = "test-colour-head"

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def embed(self, images: list[Image.Image]) -> np.ndarray:
        vectors = np.zeros((len(images), self.dim), dtype=np.float32)
        for row, image in enumerate(images):
            vectors[row, :3] = np.asarray(image.convert("RGB"), dtype=np.float32).reshape(-1, 3).mean(0) / 255 + 0.01
        return vectors


@pytest.fixture(scope="module")
def embedder(tiny_sentence_model) -> TextEmbedder:
    text_only = TextEmbedder(tiny_sentence_model)
    return TextEmbedder(tiny_sentence_model, image_head=ColourHead(text_only.dim))


@pytest.fixture
def corpus(tmp_path) -> Path:
    root = tmp_path / "corpus"
    (root / "notes").mkdir(parents=True)
    (root / "policy.txt").write_text(PARAGRAPHS[0] + "\n\n" + PARAGRAPHS[1])
    (root / "notes" / "club.md").write_text(PARAGRAPHS[2])
    (root / "notes" / "diet.md").write_text(PARAGRAPHS[3])
    Image.new("RGB", (40, 30), (220, 20, 20)).save(root / "red.png")
    Image.new("RGB", (40, 30), (20, 20, 220)).save(root / "blue.png")
    return root


def kb(folder, embedder, **options) -> KnowledgeBase:
    return KnowledgeBase(folder, embedder=embedder, chunk_tokens=40, overlap_tokens=8, **options)


def top(knowledge: KnowledgeBase, query, **options):
    return knowledge.search(query, k=3, **options)[0].record


# ---------------------------------------------------------------- files and chunks


def test_scan_refuses_links_and_lists_unusable_files(tmp_path, corpus):
    outside = tmp_path / "secret.txt"
    outside.write_text("not for the index")
    os.symlink(outside, corpus / "link.txt")
    os.symlink(tmp_path, corpus / "loop")
    (corpus / "empty.txt").write_text("")
    (corpus / "tool.exe").write_bytes(b"MZ")
    (corpus / "big.txt").write_text("x" * 3000)
    scan = scan_folder(corpus, max_file_mb=0.002)
    reasons = dict(scan.skipped)
    assert "symbolic link" in reasons["link.txt"] and "symbolic link" in reasons["loop"]
    assert reasons["empty.txt"] == "empty" and "unsupported file type .exe" in reasons["tool.exe"]
    assert "over the 0.002 MB limit" in reasons["big.txt"]
    assert sorted(f.relative for f in scan.files) == ["blue.png", "notes/club.md", "notes/diet.md", "policy.txt", "red.png"]
    assert all(not str(f.path).startswith(str(tmp_path / "secret")) for f in scan.files)
    with pytest.raises(AssistantError, match="symbolic link"):
        scan_folder(corpus / "loop")
    with pytest.raises(AssistantError, match="does not exist"):
        scan_folder(tmp_path / "nowhere")


def test_chunks_fit_the_embedder_overlap_and_keep_their_page(embedder):
    text = " ".join(f"Sentence number {i} talks about topic {i % 7}." for i in range(60))
    chunks = chunk_pages([text, "Second page."], "doc.pdf", size=30, overlap=10, length=embedder.count_tokens)
    assert len(chunks) > 5 and all(embedder.count_tokens(c.text) <= 30 for c in chunks)
    assert [c.chunk for c in chunks] == list(range(len(chunks)))
    assert chunks[-1].page == 2 and chunks[-1].text == "Second page." and chunks[0].page == 1
    first, second = chunks[0].text.split(), chunks[1].text.split()
    assert set(first[-4:]) & set(second[:8]), "neighbouring chunks overlap"


def test_pdfs_are_read_per_page_and_a_pdf_without_text_is_an_error(tmp_path):
    from pypdf import PdfWriter

    blank = tmp_path / "scan.pdf"
    writer = PdfWriter()
    writer.add_blank_page(200, 200)
    writer.write(blank)
    with pytest.raises(AssistantError, match="scan.pdf: has no text"):
        read_document(blank)
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4 garbage")
    with pytest.raises(AssistantError, match="broken.pdf: not a readable PDF"):
        read_document(broken)
    binary = tmp_path / "data.txt"
    binary.write_bytes(b"\x00\x01\x02" * 10)
    with pytest.raises(AssistantError, match="looks binary"):
        read_document(binary)


# ---------------------------------------------------------------- the knowledge base


def test_ingest_query_delete_reopen(tmp_path, corpus, embedder):
    folder = tmp_path / "index"
    knowledge = kb(folder, embedder)
    report = knowledge.ingest(corpus, progress=False)
    assert sorted(report.added) == ["blue.png", "notes/club.md", "notes/diet.md", "policy.txt", "red.png"]
    assert report.skipped == [] and report.records == len(knowledge) >= 5
    found = top(knowledge, PARAGRAPHS[2])
    assert found.kind == "text" and found.source == str(corpus / "notes" / "club.md") and PARAGRAPHS[2] in found.text
    red = top(knowledge, Image.new("RGB", (8, 8), (200, 30, 30)), kind="picture")
    assert red.source == str(corpus / "red.png")
    only_diet = knowledge.search(PARAGRAPHS[0], k=5, source=str(corpus / "notes" / "diet.md"))
    assert {hit.record.source for hit in only_diet} == {str(corpus / "notes" / "diet.md")}

    club_records = knowledge.sources()[str(corpus / "notes" / "club.md")]
    assert knowledge.delete(corpus / "notes" / "club.md") == club_records >= 1
    assert str(corpus / "notes" / "club.md") not in knowledge.sources()
    reopened = kb(folder, embedder)
    assert reopened.records == knowledge.records
    assert top(reopened, PARAGRAPHS[3]).source.endswith("diet.md")
    assert all(hit.record.source != str(corpus / "notes" / "club.md") for hit in reopened.search(PARAGRAPHS[2], k=10))
    with pytest.raises(AssistantError, match="no indexed file"):
        reopened.delete(corpus / "notes" / "club.md")


def test_reingest_updates_changed_files_and_removes_missing_ones(tmp_path, corpus, embedder):
    knowledge = kb(tmp_path / "index", embedder)
    knowledge.ingest(corpus, progress=False)
    before = {r.id for r in knowledge.records if r.source.endswith("policy.txt")}
    (corpus / "policy.txt").write_text("Returns are no longer accepted after fourteen days.")
    (corpus / "notes" / "diet.md").unlink()
    report = knowledge.ingest(corpus, progress=False)
    assert report.updated == ["policy.txt"] and report.removed == ["notes/diet.md"] and report.unchanged == 3
    assert not before & {r.id for r in knowledge.records}  # the old chunks are gone, not duplicated
    assert "fourteen days" in top(knowledge, "Returns are no longer accepted after fourteen days.").text
    assert str(corpus / "notes" / "diet.md") not in knowledge.sources()
    again = knowledge.ingest(corpus, progress=False)
    assert (again.added, again.updated, again.removed, again.unchanged) == ([], [], [], 4)


def test_a_crash_while_writing_leaves_the_previous_index_readable(tmp_path, corpus, embedder, monkeypatch):
    folder = tmp_path / "index"
    knowledge = kb(folder, embedder)
    knowledge.ingest(corpus, progress=False)
    records = knowledge.records
    (corpus / "extra.txt").write_text("A brand new document about volcanoes and lava.")

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr("plugins.retrieval.store._atomic_write_text", crash)  # the vectors are written, the manifest is not
    with pytest.raises(KeyboardInterrupt):
        knowledge.ingest(corpus, progress=False)
    monkeypatch.undo()
    reopened = kb(folder, embedder)
    assert reopened.records == records and top(reopened, PARAGRAPHS[3]).source.endswith("diet.md")
    assert [p.name for p in folder.iterdir() if p.name.startswith(".gen")] == []  # staging was cleaned up
    assert reopened.ingest(corpus, progress=False).added == ["extra.txt"]  # and the next write works


def test_damaged_old_and_foreign_indexes_are_clear_errors(tmp_path, corpus, embedder, tiny_sentence_model):
    folder = tmp_path / "index"
    kb(folder, embedder).ingest(corpus, progress=False)
    with pytest.raises(AssistantError, match="was built with"):
        KnowledgeBase(folder, embedder=TextEmbedder(tiny_sentence_model))  # no picture head: another embedder
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "format_version": 0}))
    with pytest.raises(AssistantError, match="format version 0"):
        kb(folder, embedder)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    shutil.rmtree(next(folder.glob("gen-*")))
    with pytest.raises(AssistantError, match="damaged"):
        kb(folder, embedder)
    (folder / "manifest.json").unlink()
    (folder / "gen-000009").mkdir()
    with pytest.raises(AssistantError, match="no manifest.json"):
        kb(folder, embedder)


def test_bad_queries_are_clear_errors(tmp_path, corpus, embedder):
    knowledge = kb(tmp_path / "index", embedder)
    knowledge.ingest(corpus, progress=False)
    for k in (0, 101, "3", True):
        with pytest.raises(AssistantError, match="k must be"):
            knowledge.search("refund", k=k)
    with pytest.raises(AssistantError, match="empty"):
        knowledge.search("   ")
    with pytest.raises(AssistantError, match=r"tokens; the embedder .* reads at most"):
        knowledge.search("refund policy " * 200)
    with pytest.raises(AssistantError, match="kind must be"):
        knowledge.search("refund", kind="video")
    assert knowledge.search("refund", kind="text", source="/nowhere") == []
    assert len(knowledge.search("refund", k=100)) == len(knowledge)  # k above the size: everything, no padding


def test_pictures_without_a_picture_embedder_are_skipped_with_the_reason(tmp_path, corpus, tiny_sentence_model):
    (corpus / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 10)
    knowledge = KnowledgeBase(tmp_path / "index", embedder=TextEmbedder(tiny_sentence_model), chunk_tokens=40, overlap_tokens=8)
    report = knowledge.ingest(corpus, progress=False)
    reasons = dict(report.skipped)
    assert "no picture side" in reasons["red.png"] and "no picture side" in reasons["broken.png"]
    assert {r.kind for r in knowledge.records} == {"text"}
    with pytest.raises(AssistantError, match="no picture side"):
        knowledge.search(Image.new("RGB", (4, 4)))


def test_a_corrupt_picture_is_skipped_and_the_rest_indexed(tmp_path, corpus, embedder):
    (corpus / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 10)
    report = kb(tmp_path / "index", embedder).ingest(corpus, progress=False)
    assert "broken.png" in dict(report.skipped) and len(report.added) == 5


def test_faiss_exact_hnsw_and_qdrant_local_return_the_same_top_k(tmp_path, corpus, embedder):
    exact = kb(tmp_path / "exact", embedder)
    hnsw = kb(tmp_path / "hnsw", embedder, index=IndexConfig(approximate_above=2))
    qdrant = kb(tmp_path / "qdrant", embedder, index=IndexConfig(backend="qdrant"))
    for knowledge in (exact, hnsw, qdrant):
        knowledge.ingest(corpus, progress=False)
    assert exact.records == hnsw.records == qdrant.records  # ids are assigned in scan order
    for query in [*PARAGRAPHS, "gardening in spring", Image.new("RGB", (5, 5), (20, 30, 200))]:
        ranked = [[(h.record.id, round(h.score, 4)) for h in knowledge.search(query, k=4)] for knowledge in (exact, hnsw, qdrant)]
        assert ranked[0] == ranked[1] == ranked[2], query
    picture_only = [[h.record.id for h in knowledge.search("sunlight", k=3, kind="picture")] for knowledge in (exact, hnsw, qdrant)]
    assert picture_only[0] == picture_only[1] == picture_only[2] and len(picture_only[0]) == 2
    qdrant.close()
    reopened = kb(tmp_path / "qdrant", embedder)  # the embedded collection persisted
    assert [h.record.id for h in reopened.search(PARAGRAPHS[1], k=3)] == [h.record.id for h in exact.search(PARAGRAPHS[1], k=3)]
    reopened.close()


def test_queries_during_an_ingest_see_the_old_or_the_new_index_never_half(tmp_path, corpus, embedder):
    knowledge = kb(tmp_path / "index", embedder)
    knowledge.ingest(corpus, progress=False)
    for index in range(30):
        (corpus / f"more_{index}.txt").write_text(f"Extra document number {index} about the weather in city {index}.")
    errors, seen = [], set()

    def query() -> None:
        try:
            while worker.is_alive():
                hits = knowledge.search(PARAGRAPHS[3], k=3)
                assert hits[0].record.source.endswith("diet.md")
                seen.add(len(knowledge))
        except Exception as error:  # collected and re-raised in the test thread
            errors.append(error)

    worker = threading.Thread(target=knowledge.ingest, args=(corpus,), kwargs={"progress": False})
    worker.start()
    reader = threading.Thread(target=query)
    reader.start()
    worker.join()
    reader.join()
    assert errors == [] and len(knowledge) == len(kb(tmp_path / "index", embedder))


# ---------------------------------------------------------------- the plugin and langchain


def test_the_plugin_returns_passages_with_sources_and_pictures_as_media(tmp_path, corpus, embedder):
    knowledge = kb(tmp_path / "index", embedder)
    knowledge.ingest(corpus, progress=False)
    tool = knowledge_tool(knowledge)
    result = tool.invoke({"type": "tool_call", "id": "c1", "name": tool.name, "args": {"query": PARAGRAPHS[2], "k": 6}})
    assert result.content.startswith("[1] " + str(corpus / "notes" / "club.md")) and PARAGRAPHS[2] in result.content
    pictures = [part["image"] for part in result.artifact]
    assert len(pictures) == 2 and all(isinstance(p, Image.Image) for p in pictures)
    assert "picture 1 of this result" in result.content
    schema = tool.args
    assert schema["k"]["maximum"] == 10 and schema["kind"]["enum"] == ["any", "text", "picture"]
    with pytest.raises(ToolException, match="reads at most"):  # the tool runner turns it into an error result
        tool.invoke({"type": "tool_call", "id": "c2", "name": tool.name, "args": {"query": "word " * 300}})


def test_the_default_plugin_explains_an_empty_knowledge_base(tmp_path, monkeypatch):
    monkeypatch.setenv("MMA_KNOWLEDGE_DIR", str(tmp_path / "none"))
    tool = knowledge_tool()
    with pytest.raises(ToolException, match="python -m plugins.retrieval ingest"):
        tool.invoke({"type": "tool_call", "id": "c1", "name": tool.name, "args": {"query": "anything"}})


def test_the_langchain_retriever_works_inside_a_chain(tmp_path, corpus, embedder):
    from langchain_core.runnables import RunnableLambda

    knowledge = kb(tmp_path / "index", embedder)
    knowledge.ingest(corpus, progress=False)
    retriever = KnowledgeRetriever(knowledge=knowledge, k=2)
    chain = retriever | RunnableLambda(lambda documents: "\n".join(f"{d.metadata['source']}: {d.page_content}" for d in documents))
    answer = chain.invoke(PARAGRAPHS[3])
    assert answer.splitlines()[0].startswith(str(corpus / "notes" / "diet.md"))
    documents = retriever.invoke(PARAGRAPHS[0])
    assert documents[0].metadata["kind"] == "text" and documents[0].metadata["page"] == 1 and len(documents) == 2


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> str:
    """A tiny random CLIP with both towers, a tokenizer and an image processor, saved as a checkpoint folder."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from conftest import _make_tokenizer

    folder = tmp_path_factory.mktemp("tiny_clip")
    tokenizer = _make_tokenizer(folder)
    torch.manual_seed(2)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=len(tokenizer),
                max_position_embeddings=64, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return str(folder)


def test_a_tiny_random_clip_loads_by_path_and_indexes_text_and_pictures(tmp_path, corpus, tiny_clip):
    knowledge = KnowledgeBase(tmp_path / "index", embedder_model=tiny_clip, chunk_tokens=40, overlap_tokens=8)
    assert knowledge.embedder.name == f"clip:{tiny_clip}" and knowledge.embedder.dim == 16
    report = knowledge.ingest(corpus, progress=False)
    assert len(report.added) == 5 and {r.kind for r in knowledge.records} == {"text", "picture"}
    chunk = next(record for record in knowledge.records if record.source.endswith("diet.md"))
    assert top(knowledge, chunk.text).id == chunk.id  # its own text through the text tower comes first
    assert top(knowledge, Image.open(corpus / "blue.png"), kind="picture").source.endswith("blue.png")
    reopened = KnowledgeBase(tmp_path / "index")  # the manifest names the CLIP checkpoint: no embedder needed
    assert reopened.embedder.name == knowledge.embedder.name and reopened.records == knowledge.records


def test_the_default_plugin_sees_files_another_process_ingested(tmp_path, corpus, embedder, monkeypatch):
    import plugins.retrieval.tool as tool_module

    folder = tmp_path / "index"
    kb(folder, embedder).ingest(corpus / "notes", progress=False)
    monkeypatch.setenv("MMA_KNOWLEDGE_DIR", str(folder))
    monkeypatch.setattr(tool_module, "KnowledgeBase", lambda path: kb(path, embedder))  # the test embedder, not MiniLM
    tool = knowledge_tool()
    ask = lambda: tool.invoke({"type": "tool_call", "id": "c", "name": tool.name, "args": {"query": PARAGRAPHS[3], "k": 10}}).content  # noqa: E731
    assert "policy.txt" not in ask()
    kb(folder, embedder).ingest(corpus, progress=False)  # as `python -m plugins.retrieval ingest` would, elsewhere
    assert "policy.txt" in ask()
