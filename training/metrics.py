"""Task metrics on generated answers, by name: ``exact_match`` (normalised) and ``bleu`` (BLEU-4).

Normalisation for exact match: lowercase, strip punctuation and articles, collapse spaces, and map
number words to digits ("two" == "2"). BLEU comes from sacrebleu, the field's reference implementation.
"""

from __future__ import annotations

import re
import string
from typing import Callable

NUMBER_WORDS = {w: str(i) for i, w in enumerate("zero one two three four five six seven eight nine ten".split())}
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalise_answer(text: str) -> str:
    text = text.lower().strip()
    text = "".join(ch for ch in text if ch not in string.punctuation)
    text = _ARTICLES.sub(" ", text)
    return " ".join(NUMBER_WORDS.get(word, word) for word in text.split())


def exact_match(predictions: list[str], references: list[str]) -> float:
    """Share of predictions equal to their reference after normalisation (0..1)."""
    if not references:
        return 0.0
    return sum(normalise_answer(p) == normalise_answer(r) for p, r in zip(predictions, references)) / len(references)


def bleu4(predictions: list[str], references: list[str]) -> float:
    """Corpus BLEU-4 (0..100) with sacrebleu's standard tokenisation."""
    import sacrebleu

    if not references:
        return 0.0
    return float(sacrebleu.corpus_bleu(predictions, [references]).score)


METRICS: dict[str, Callable[[list[str], list[str]], float]] = {"exact_match": exact_match, "bleu": bleu4}
