"""Task metrics on generated answers, by name: ``exact_match`` (normalised) and ``bleu`` (BLEU-4).

Normalisation for exact match: lowercase, strip punctuation, drop articles (unless nothing else is
left), map number words to digits ("two" == "2") and British spellings to American ("centre" ==
"center"). BLEU comes from sacrebleu, the field's reference implementation.
"""

from __future__ import annotations

import string
from typing import Callable

NUMBER_WORDS = {w: str(i) for i, w in enumerate("zero one two three four five six seven eight nine ten".split())} | {"none": "0"}
SPELLINGS = {"centre": "center", "colour": "color", "grey": "gray"}
ARTICLES = frozenset({"a", "an", "the"})


def normalise_answer(text: str) -> str:
    """The form two answers are compared in (see the module docstring)."""
    words = "".join(ch for ch in text.lower() if ch not in string.punctuation).split()
    content = [word for word in words if word not in ARTICLES]
    return " ".join(SPELLINGS.get(w, NUMBER_WORDS.get(w, w)) for w in (content or words))


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
