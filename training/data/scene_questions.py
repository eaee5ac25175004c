"""Language about a ``Scene``: captions, question/answer pairs, short dialogues and comparisons.

Every answer is read off the object list, so it is correct by construction. A question that
names an object only uses a reference that picks out exactly one object in the scene ("the
triangle" only when there is one triangle). Answer conventions, for exact-match evaluation:

- short answers are one lowercase word: a colour, a shape, ``small``/``large``, a position word
  (``left right top bottom center``), ``yes``/``no``, ``first``/``second``;
- counts are digits (``"0"`` to ``"6"``); zero counts are asked on purpose;
- captions are one sentence listing every object ("A large red square on the left and ...").

``training.metrics.normalise_answer`` maps a model's reply onto these conventions (case,
punctuation, articles, number words). Questions say "color" (American spelling); question-type keys say "colour".
This module knows nothing about pixels, files or row formats.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from training.data.scene_layout import COLOURS, SHAPES, Scene, SceneObject

QUESTION_TYPES = ("colour", "shape", "count", "position", "existence", "caption", "multi_turn", "comparison")
POSITION_PHRASES = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the center",
}
CAPTION_ORDER = ("top", "left", "center", "right", "bottom")  # reading order of the regions
CAPTION_PROMPTS = ("Describe the image.", "What is in this picture?", "Describe the scene briefly.")
FOLLOW_UPS = {  # pronoun questions about the object the conversation opened with
    "colour": "What color is it?",
    "shape": "What shape is it?",
    "size": "What size is it?",
    "position": "Where is it?",
}
ZERO_COUNT_RATE = 0.2
HARD_NEGATIVE_RATE = 0.7  # absent objects that share a colour or shape with a present one


@dataclass(frozen=True)
class QA:
    """One question and its correct answer."""

    question: str
    answer: str
    question_type: str


def article(phrase: str) -> str:
    """``a`` or ``an`` for a phrase of our vocabulary."""
    return "an" if phrase[0] in "aeiou" else "a"


def plural(shape: str) -> str:
    return shape + "s"


def describe_object(obj: SceneObject) -> str:
    return f"{obj.size} {obj.colour} {obj.shape} {POSITION_PHRASES[obj.position]}"


def caption(scene: Scene) -> str:
    """One sentence naming every object with size, colour, shape and position, in reading order."""
    ordered = sorted(scene.objects, key=lambda o: (CAPTION_ORDER.index(o.position), o.bbox[0], o.bbox[1]))
    phrases = [f"{article(text)} {text}" for text in map(describe_object, ordered)]
    body = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return body[0].upper() + body[1:] + "."


def _references(scene: Scene, obj: SceneObject, hidden: str) -> list[tuple[str, frozenset[str]]]:
    """Unique ways to name ``obj`` without saying its ``hidden`` attribute ("colour" or "shape"),
    each with the set of attributes the words give away."""
    kind = "shape" if hidden == "colour" else "colour"
    noun = obj.shape if hidden == "colour" else f"{obj.colour} object"
    alike = [other for other in scene.objects if getattr(other, kind) == getattr(obj, kind)]
    references = []
    if len(alike) == 1:
        references.append((f"the {noun}", frozenset({kind})))
    if sum(other.size == obj.size for other in alike) == 1:
        references.append((f"the {obj.size} {noun}", frozenset({kind, "size"})))
    if sum(other.position == obj.position for other in alike) == 1:
        references.append((f"the {noun} {POSITION_PHRASES[obj.position]}", frozenset({kind, "position"})))
    return references


def _attribute_question(scene: Scene, rng: random.Random, asked: str) -> tuple[QA, SceneObject, frozenset[str]] | None:
    candidates = [(obj, ref) for obj in scene.objects for ref in _references(scene, obj, asked)]
    if not candidates:
        return None
    obj, (text, given) = rng.choice(candidates)
    question = f"What color is {text}?" if asked == "colour" else f"What shape is {text}?"
    return QA(question, getattr(obj, asked), asked), obj, given


def colour_question(scene: Scene, rng: random.Random) -> QA | None:
    """"What color is the triangle?", or None when no object can be named without its colour."""
    found = _attribute_question(scene, rng, "colour")
    return found[0] if found else None


def shape_question(scene: Scene, rng: random.Random) -> QA | None:
    """"What shape is the blue object?", or None when no object can be named without its shape."""
    found = _attribute_question(scene, rng, "shape")
    return found[0] if found else None


def _position_question(scene: Scene, rng: random.Random) -> tuple[QA, SceneObject]:
    obj = rng.choice(scene.objects)
    return QA(f"Where is the {obj.colour} {obj.shape}?", obj.position, "position"), obj


def position_question(scene: Scene, rng: random.Random) -> QA:
    """"Where is the red square?" -> a position word; (colour, shape) is unique in every scene."""
    return _position_question(scene, rng)[0]


def count_question(scene: Scene, rng: random.Random) -> QA:
    """"How many circles are there?" (or "... red objects ...", "... objects ...") -> digits."""
    if rng.random() < ZERO_COUNT_RATE:
        absent_shapes = [shape for shape in SHAPES if scene.count(shape=shape) == 0]
        if absent_shapes:
            return QA(f"How many {plural(rng.choice(absent_shapes))} are there?", "0", "count")
        absent_colours = [colour for colour in COLOURS if scene.count(colour=colour) == 0]
        return QA(f"How many {rng.choice(absent_colours)} objects are there?", "0", "count")
    kind = rng.choices(("shape", "colour", "all"), weights=(5, 3, 2))[0]
    obj = rng.choice(scene.objects)
    if kind == "shape":
        return QA(f"How many {plural(obj.shape)} are there?", str(scene.count(shape=obj.shape)), "count")
    if kind == "colour":
        return QA(f"How many {obj.colour} objects are there?", str(scene.count(colour=obj.colour)), "count")
    return QA("How many objects are there?", str(len(scene.objects)), "count")


def existence_question(scene: Scene, rng: random.Random) -> QA:
    """"Is there a green star?" -> "yes" or "no", each half of the time; absent pairs are often
    near misses (a present colour or shape)."""
    if rng.random() < 0.5:
        obj = rng.choice(scene.objects)
        colour, shape, answer = obj.colour, obj.shape, "yes"
    else:
        present = {(obj.colour, obj.shape) for obj in scene.objects}
        absent = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present]
        near = [(c, s) for c, s in absent if any(c == pc or s == ps for pc, ps in present)]
        colour, shape = rng.choice(near if near and rng.random() < HARD_NEGATIVE_RATE else absent)
        answer = "no"
    return QA(f"Is there {article(colour)} {colour} {shape}?", answer, "existence")


def caption_question(scene: Scene, rng: random.Random) -> QA:
    return QA(rng.choice(CAPTION_PROMPTS), caption(scene), "caption")


def questions(scene: Scene, rng: random.Random) -> list[QA]:
    """One single-turn question of each type the scene supports, in ``QUESTION_TYPES`` order."""
    found = [
        colour_question(scene, rng),
        shape_question(scene, rng),
        count_question(scene, rng),
        position_question(scene, rng),
        existence_question(scene, rng),
        caption_question(scene, rng),
    ]
    return [qa for qa in found if qa is not None]


def dialogue(scene: Scene, rng: random.Random) -> list[QA]:
    """A 3-4 turn conversation: a question naming one object, follow-ups about "it" (attributes the
    conversation has not yet given away), then independent questions; every turn is typed
    ``multi_turn``."""
    openers = [found for found in (_attribute_question(scene, rng, kind) for kind in ("colour", "shape")) if found]
    openers.append((*_position_question(scene, rng), frozenset({"colour", "shape"})))
    first, obj, given = rng.choice(openers)
    known = set(given) | {first.question_type}
    follow_ups = rng.randint(2, 3)
    open_attributes = [attribute for attribute in FOLLOW_UPS if attribute not in known]
    rng.shuffle(open_attributes)
    turns = [QA(first.question, first.answer, "multi_turn")]
    for attribute in open_attributes[:follow_ups]:
        turns.append(QA(FOLLOW_UPS[attribute], getattr(obj, attribute), "multi_turn"))
    while len(turns) < 1 + follow_ups:
        extra = rng.choice((count_question, existence_question, position_question))(scene, rng)
        if all(extra.question != turn.question for turn in turns):
            turns.append(QA(extra.question, extra.answer, "multi_turn"))
    return turns


def comparison(first: Scene, second: Scene, rng: random.Random) -> QA | None:
    """"Which image has more circles, the first or the second?" over attributes whose counts differ;
    None when every count is equal."""
    options: dict[str, list[tuple[str, int, int]]] = {
        "shape": [(plural(s), first.count(shape=s), second.count(shape=s)) for s in SHAPES],
        "colour": [(f"{c} objects", first.count(colour=c), second.count(colour=c)) for c in COLOURS],
        "all": [("objects", len(first.objects), len(second.objects))],
    }
    options = {kind: [o for o in found if o[1] != o[2]] for kind, found in options.items()}
    kinds = [kind for kind in ("shape", "colour", "all") if options[kind]]
    if not kinds:
        return None
    kind = rng.choices(kinds, weights=[{"shape": 5, "colour": 3, "all": 2}[k] for k in kinds])[0]
    noun, first_count, second_count = rng.choice(options[kind])
    answer = "first" if first_count > second_count else "second"
    return QA(f"Which image has more {noun}, the first or the second?", answer, "comparison")

