"""An independent check for the image head: scenes drawn and described by different code.

Scores on pictures from the training generator, described by its own caption template, flatter a
model. This module shares only the vocabulary with ``training.data.scenes`` (four shapes, eight
colour names, two sizes, five regions) and writes everything else itself: its own layout (objects
near region centres, up to 6 per scene, 5-6 in a third of them), continuous sizes, rotated shapes,
shaded colours, anti-aliased drawing at 256 px on random light backgrounds, and captions in other
words and a random object order ("There is a big red disc near the top; ..."). Identical content
(the same objects) still counts as a hit.

It knows nothing about models; ``training.image_head`` scores the head on it.
"""

from __future__ import annotations

import math
import random
from typing import Any

from PIL import Image, ImageDraw

from training.data.scene_layout import COLOURS, POSITIONS, SHAPES, SIZES

CANVAS = 256
SUPERSAMPLE = 3
CENTRES = {"left": (0.15, 0.5), "right": (0.85, 0.5), "top": (0.5, 0.15), "bottom": (0.5, 0.85), "center": (0.5, 0.5)}
ALONG = {"left": (0, 1), "right": (0, 1), "top": (1, 0), "bottom": (1, 0), "center": (1, 0)}  # where a second object goes
RADIUS = {"small": (0.035, 0.05), "large": (0.07, 0.085)}  # fractions of the canvas
SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
SHAPE_WORDS = {"circle": ("circle", "disc"), "square": ("square",), "triangle": ("triangle",), "star": ("star",)}
PLACE_WORDS = {
    "left": ("on the left side", "to the left"), "right": ("on the right side", "to the right"),
    "top": ("near the top", "up at the top"), "bottom": ("near the bottom", "down at the bottom"),
    "center": ("in the middle", "in the centre"),
}
OPENINGS = ("There is {}.", "The picture shows {}.", "In this image: {}.")


def _shaded(rgb: tuple[int, int, int], rng: random.Random) -> tuple[int, int, int]:
    return tuple(min(255, max(0, channel + rng.randint(-18, 18))) for channel in rgb)  # type: ignore[return-value]


def _background(colours: list[tuple[int, int, int]], rng: random.Random) -> tuple[int, int, int]:
    while True:
        candidate = tuple(rng.randint(165, 235) for _ in range(3))
        if all(math.dist(candidate, rgb) > 60 for rgb in colours):
            return candidate  # type: ignore[return-value]


def _polygon(shape: str, cx: float, cy: float, radius: float, angle: float) -> list[tuple[float, float]]:
    if shape == "square":
        corners = [(math.pi / 4 + k * math.pi / 2) for k in range(4)]
        return [(cx + radius * math.cos(a + angle), cy + radius * math.sin(a + angle)) for a in corners]
    if shape == "triangle":
        return [(cx + radius * math.cos(angle - math.pi / 2 + k * 2 * math.pi / 3), cy + radius * math.sin(angle - math.pi / 2 + k * 2 * math.pi / 3))
                for k in range(3)]
    points = []  # a five-pointed star
    for k in range(10):
        r = radius if k % 2 == 0 else radius * 0.45
        a = angle - math.pi / 2 + k * math.pi / 5
        points.append((cx + r * math.cos(a), cy + r * math.sin(a)))
    return points


def independent_scene(rng: random.Random) -> tuple[Image.Image, str, tuple]:
    """(picture, caption, content key) of one independently drawn scene."""
    count = rng.choice([1, 2, 3, 4, 5, 6, 5, 6, 5])
    pairs = rng.sample([(shape, colour) for shape in SHAPES for colour in COLOURS], count)
    slots = [position for position in POSITIONS for _ in range(2)]
    rng.shuffle(slots)
    objects = [(shape, colour, rng.choice(SIZES), position) for (shape, colour), position in zip(pairs, slots)]
    side = CANVAS * SUPERSAMPLE
    shades = {colour: _shaded(COLOURS[colour], rng) for _, colour, _, _ in objects}
    image = Image.new("RGB", (side, side), _background(list(shades.values()), rng))
    draw = ImageDraw.Draw(image)
    used: dict[str, int] = {}
    for shape, colour, size, position in objects:
        slot = used.get(position, 0)
        used[position] = slot + 1
        cx, cy = CENTRES[position]
        dx, dy = ALONG[position]
        shift = 0.0 if list(p for *_, p in objects).count(position) == 1 else (-0.1 if slot == 0 else 0.1)
        cx, cy = (cx + dx * shift + rng.uniform(-0.015, 0.015)) * side, (cy + dy * shift + rng.uniform(-0.015, 0.015)) * side
        radius = rng.uniform(*RADIUS[size]) * side
        if shape == "circle":
            draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=shades[colour])
        else:
            draw.polygon(_polygon(shape, cx, cy, radius, rng.uniform(0, 2 * math.pi)), fill=shades[colour])
    picture = image.resize((CANVAS, CANVAS), Image.Resampling.LANCZOS)  # anti-aliased edges
    phrases = []
    for shape, colour, size, position in rng.sample(objects, len(objects)):
        size_word = rng.choice(SIZE_WORDS[size])
        phrases.append(f"{_article(size_word)} {size_word} {colour} {rng.choice(SHAPE_WORDS[shape])} {rng.choice(PLACE_WORDS[position])}")
    text = rng.choice(OPENINGS).format("; ".join(phrases))
    key = tuple(sorted((size, colour, shape, position) for shape, colour, size, position in objects))
    return picture, text, key


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def independent_pairs(count: int, seed: int = 0) -> Any:
    """``count`` independent scenes as ``training.image_head.Pairs``."""
    from training.image_head import Pairs

    scenes = [independent_scene(random.Random(f"independent/{seed}/{index}")) for index in range(count)]
    return Pairs([s[0] for s in scenes], [s[1] for s in scenes], [s[2] for s in scenes])
