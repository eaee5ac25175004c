"""General text prompts with a key answer, to check that tuning kept the base LLM's knowledge.

A prompt counts when the base LLM's reply contains its key; the tuned assistant passes it when its
reply contains the key too. Keys are matched case-insensitively as whole words.
"""

from __future__ import annotations

import re

TEXT_PROMPTS: tuple[tuple[str, str], ...] = (
    ("What is the capital of France?", "Paris"),
    ("What is the capital of Japan?", "Tokyo"),
    ("What is the capital of Italy?", "Rome"),
    ("What is the capital of Germany?", "Berlin"),
    ("What is the capital of Spain?", "Madrid"),
    ("What is the capital of England?", "London"),
    ("Which planet is known as the Red Planet?", "Mars"),
    ("What is the largest planet in our solar system?", "Jupiter"),
    ("What is the chemical symbol for water?", "H2O"),
    ("What gas do plants absorb from the air for photosynthesis?", "carbon dioxide"),
    ("Who wrote the play Romeo and Juliet?", "Shakespeare"),
    ("Who painted the Mona Lisa?", "Leonardo"),
    ("What is the freezing point of water in degrees Celsius?", "0"),
    ("How many days are there in a week?", "seven|7"),
    ("How many legs does a spider have?", "eight|8"),
    ("What is 2 + 2?", "4|four"),
    ("What is the opposite of hot?", "cold"),
    ("What color is the sky on a clear day?", "blue"),
    ("What is the largest ocean on Earth?", "Pacific"),
    ("Which animal is known as the king of the jungle?", "lion"),
    ("What do bees make?", "honey"),
    ("What is the boiling point of water in degrees Celsius?", "100"),
    ("In which continent is Egypt?", "Africa"),
    ("What language is spoken in Brazil?", "Portuguese"),
    ("What is the capital of Russia?", "Moscow"),
    ("What is the capital of China?", "Beijing"),
    ("Who was the first president of the United States?", "Washington"),
    ("What is the currency of Japan?", "yen"),
    ("What color are ripe bananas?", "yellow"),
    ("How many hours are there in a day?", "24|twenty-four"),
    ("What is the closest star to Earth?", "Sun"),
    ("What do cows drink?", "water"),
)


def has_key(reply: str, key: str) -> bool:
    """Whether ``reply`` contains one of the ``|``-separated alternatives of ``key`` as a word."""
    return any(re.search(rf"(?<![\w]){re.escape(option)}(?![\w])", reply, re.IGNORECASE) for option in key.split("|"))
