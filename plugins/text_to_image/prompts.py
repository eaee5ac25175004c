"""Prompts of the scene domain as data: write a ``Wanted`` list back as a prompt, and apply an edit.

"make the circle blue" after "a large red circle on the left" gives "a large blue circle on the left":
``revise(previous, instruction)`` finds the object the instruction names (by shape or colour; "it"
when there is one), changes the attributes the instruction gives, and can add ("add a green star")
or remove ("remove the star") objects. Instructions it cannot read give None. Pure string work.
"""

from __future__ import annotations

import re
from dataclasses import replace

from plugins.text_to_image.checker import PALETTE, POSITION_WORDS, SHAPE_WORDS, SIZE_WORDS, Wanted, prompt_words, parse_prompt

EDIT_VERBS = ("make", "change", "turn", "move", "put", "add", "remove", "delete", "now", "recolour", "recolor", "colour", "color",
              "paint", "instead", "also", "shrink", "enlarge", "grow")
NUMBERS = {1: "a", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}
POSITION_PHRASE = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom",
                   "center": "in the center"}
SIZE_CHANGES = {"larger": "large", "bigger": "large", "smaller": "small", "shrink": "small", "enlarge": "large", "grow": "large"}


def is_edit(text: str) -> bool:
    """Whether ``text`` reads as a change to an earlier picture rather than a new description."""
    words = re.findall(r"[a-z]+", text.lower())
    return bool(words) and words[0] in EDIT_VERBS


def phrase(want: Wanted) -> str:
    """One object phrase: "two large red circles on the left"."""
    noun = want.shape or "shape"
    words = [NUMBERS.get(want.count, str(want.count))] + [word for word in (want.size, want.colour) if word]
    if want.count == 1 and words[0] == "a" and len(words) > 1 and words[1][0] in "aeiou":
        words[0] = "an"
    text = " ".join(words + [noun + ("s" if want.count != 1 else "")])
    return f"{text} {POSITION_PHRASE[want.position]}" if want.position else text


def write_prompt(wanted: list[Wanted]) -> str:
    """The phrases joined as one prompt: "a red circle and a blue star at the top"."""
    phrases = [phrase(want) for want in wanted]
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _target(wanted: list[Wanted], words: list[str]) -> int | None:
    """Index of the object the instruction names: by shape, else by colour, else the only one ("it")."""
    for word in words:
        if word in SHAPE_WORDS:
            matches = [index for index, want in enumerate(wanted) if want.shape == word]
            if len(matches) == 1:
                return matches[0]
    for word in words:
        if word in PALETTE:
            matches = [index for index, want in enumerate(wanted) if want.colour == word]
            if len(matches) == 1:
                return matches[0]
    return 0 if len(wanted) == 1 else None


def revise(previous: str, instruction: str) -> str | None:
    """The previous prompt with ``instruction`` applied, or None when it cannot be read."""
    wanted = parse_prompt(previous)
    if not wanted:
        return None
    text = instruction.lower()
    words = prompt_words(text)
    if words and words[0] in ("add", "also"):
        added = parse_prompt(instruction)
        return write_prompt(wanted + added) if added else None
    if words and words[0] in ("remove", "delete"):
        index = _target(wanted, words[1:])
        if index is None or len(wanted) == 1:
            return None
        return write_prompt(wanted[:index] + wanted[index + 1:])
    # "make the red circle blue": the words naming the object come before the new attributes
    index = _target(wanted, words)
    if index is None:
        return None
    target = wanted[index]
    named = {target.shape, target.colour}
    changes: dict[str, object] = {}
    for position, word in enumerate(words):
        if word in PALETTE and not (word == target.colour and position + 1 < len(words) and words[position + 1] in SHAPE_WORDS):
            changes["colour"] = word
        elif word in SIZE_WORDS:
            changes["size"] = word
        elif word in SIZE_CHANGES:
            changes["size"] = SIZE_CHANGES[word]
        elif word in POSITION_WORDS:
            changes["position"] = POSITION_WORDS[word]
        elif word in SHAPE_WORDS and word not in named and ("into" in words or "to" in words or "a" in words[:position]):
            changes["shape"] = word
    if not changes:
        return None
    wanted[index] = replace(target, **changes)  # type: ignore[arg-type]
    return write_prompt(wanted)
