"""Evaluation tasks for the retrieval and captioning plugins (``python -m training.evaluate --task ...``).

- ``retrieval``: text->picture and picture->text Recall@1/5/10 over held-out generated scenes (the
  query is the scene's caption; a retrieved scene with identical content counts as a hit) and over
  the independent check of ``training.image_head_check``, with any embedder that has a picture side.
- ``documents``: hit@5 on a generated corpus with known answers. Fictional organisations get facts
  (founding year, city, product, founder) spread over several files, each file holding facts about
  several organisations; every question ("In which city was X founded?") has one answer, and a hit is
  a top-5 chunk that contains both the organisation and the answer. It runs the real ingest path.
- ``captions``: caption BLEU-4 (sacrebleu) and CIDEr (pycocoevalcap) of a captioner against the
  generator's captions of held-out scenes, and against the independent check's captions.

It knows nothing about the plugin or the chat; it uses ``plugins.retrieval`` and ``assistant.captioning``.
"""

from __future__ import annotations

import random
import string
import tempfile
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from training.image_head import Pairs, retrieval_report, scene_pairs
from training.image_head_check import independent_pairs
from training.metrics import bleu4

CITIES = ("Tallinn", "Porto", "Kyoto", "Quito", "Dakar", "Oslo", "Hobart", "Cusco", "Bergen", "Tartu", "Mendoza", "Sapporo")
PRODUCTS = ("glass lenses", "wool blankets", "river barges", "clock springs", "paper kites", "copper kettles",
            "salt crackers", "bicycle bells", "harbour cranes", "violin strings", "rubber boots", "garden shears")
SYLLABLES = ("ka", "lo", "ren", "vi", "tas", "mo", "dul", "ne", "sor", "pa", "lin", "gro", "fe", "ta", "bri", "zan")


def picture_retrieval(embedder: Any, scenes: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Recall@k both ways on held-out scenes and on the independent check."""
    def scores(pairs: Pairs) -> dict[str, Any]:
        return retrieval_report(embedder.embed_images, embedder.embed_texts, pairs)

    return {"embedder": embedder.name, "held_out": scores(scene_pairs(scenes, seed, "image_head_test")),
            "independent_check": scores(independent_pairs(scenes, seed))}


def _name(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize() + " " + rng.choice(("Guild", "Works", "Company", "Society"))


def document_corpus(folder: Path, organisations: int = 120, seed: int = 0) -> list[tuple[str, str, str]]:
    """Write the corpus under ``folder``; returns (question, organisation, answer) triples."""
    rng = random.Random(f"documents/{seed}")
    names: list[str] = []
    while len(names) < organisations:
        name = _name(rng)
        if name not in names:
            names.append(name)
    facts, questions = [], []
    for name in names:
        city, product, year = rng.choice(CITIES), rng.choice(PRODUCTS), rng.randint(1702, 1989)
        founder = " ".join(rng.choice(SYLLABLES).capitalize() + rng.choice(SYLLABLES) for _ in range(2))
        facts += [f"The {name} was founded in {year}.", f"The {name} began in the city of {city}.",
                  f"For most of its history the {name} made {product}.", f"The {name} was started by {founder}."]
        questions += [(f"In which year was the {name} founded?", name, str(year)),
                      (f"In which city did the {name} begin?", name, city),
                      (f"What did the {name} make?", name, product),
                      (f"Who started the {name}?", name, founder)]
    rng.shuffle(facts)
    folder.mkdir(parents=True, exist_ok=True)
    for number, start in enumerate(range(0, len(facts), 24)):
        paragraphs = [" ".join(facts[i : i + 3]) for i in range(start, min(start + 24, len(facts)), 3)]
        suffix = ".md" if number % 2 else ".txt"
        (folder / f"archive_{number:03d}{suffix}").write_text(f"# Archive volume {number}\n\n" + "\n\n".join(paragraphs) + "\n")
    return questions


def document_retrieval(embedder: Any, organisations: int = 120, seed: int = 0, k: int = 5, chunk_tokens: int | None = None) -> dict[str, Any]:
    """hit@k over the generated corpus, through a real ``KnowledgeBase`` ingest in a temp folder."""
    from plugins.retrieval import KnowledgeBase

    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        questions = document_corpus(root / "corpus", organisations, seed)
        knowledge = KnowledgeBase(root / "index", embedder=embedder, chunk_tokens=chunk_tokens)
        report = knowledge.ingest(root / "corpus", progress=False)
        hits = 0
        for question, name, answer in tqdm(questions, desc="questions", unit="q"):
            found = knowledge.search(question, k=k, kind="text")
            hits += any(name in hit.record.text and answer in hit.record.text for hit in found)
        return {"embedder": embedder.name, "chunk_tokens": knowledge.chunk_tokens, "documents": len(report.added), "chunks": report.records,
                "questions": len(questions), f"hit@{k}": round(hits / len(questions), 4)}


def _cider_tokens(text: str) -> str:
    return " ".join("".join(ch for ch in text.lower() if ch not in string.punctuation).split())


def cider(predictions: list[str], references: list[str]) -> float:
    """CIDEr-D (pycocoevalcap's scorer) with lower-cased, punctuation-free tokens, one reference each."""
    from pycocoevalcap.cider.cider import Cider

    gts = {i: [_cider_tokens(reference)] for i, reference in enumerate(references)}
    res = {i: [_cider_tokens(prediction)] for i, prediction in enumerate(predictions)}
    value, _ = Cider().compute_score(gts, res)
    return float(value)


def caption_quality(captioner: Any, scenes: int = 200, seed: int = 0) -> dict[str, Any]:
    """BLEU-4 and CIDEr of ``captioner``'s short captions on held-out and independent scenes."""
    report: dict[str, Any] = {"captioner": captioner.name}
    for label, pairs in (("held_out", scene_pairs(scenes, seed, "image_head_test")), ("independent_check", independent_pairs(scenes, seed))):
        predictions = [captioner.caption(image, "short").text for image in tqdm(pairs.images, desc=f"caption {label}", unit="picture")]
        report[label] = {"pictures": len(predictions), "bleu4": round(bleu4(predictions, pairs.captions), 2),
                         "cider": round(cider(predictions, pairs.captions), 3), "examples": list(zip(predictions[:3], pairs.captions[:3]))}
    return report
