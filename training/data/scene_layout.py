"""What is in a synthetic scene: 1-6 coloured shapes, each inside one of five named regions.

The canvas is split like a plus sign: a ``center`` box, ``top``/``bottom`` bands above and below
it and ``left``/``right`` bands beside it; the four corners stay empty. Every object lies fully
inside its region (with a margin), so its position word is never a judgement call. Within a scene
(colour, shape) pairs are unique, so "the red square" always names one object, and bounding
boxes never overlap. Backgrounds are light, desaturated tints kept far from every object colour
(white objects stay visible because no background is near white).

Everything is drawn from the ``random.Random`` passed in, so a seed fixes the scene. This module
knows nothing about pixels (``scene_render``) or language (``scene_questions``).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

SHAPES = ("circle", "square", "triangle", "star")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (214, 39, 40),
    "green": (44, 160, 44),
    "blue": (31, 90, 220),
    "yellow": (250, 215, 30),
    "purple": (138, 70, 180),
    "orange": (250, 135, 20),
    "black": (20, 20, 20),
    "white": (255, 255, 255),
}
SIZES = ("small", "large")
POSITIONS = ("left", "right", "top", "bottom", "center")

# Background bases (light greys, beiges, pale tints); each scene jitters one of them.
BACKGROUNDS = (
    (200, 200, 200), (214, 206, 188), (192, 206, 220), (198, 214, 194),
    (222, 200, 204), (206, 198, 222), (212, 200, 172), (182, 190, 198),
)
BACKGROUND_JITTER = 10
MIN_BACKGROUND_DISTANCE = 70.0  # Euclidean RGB distance from every object colour

# Region geometry as fractions of the canvas side (see the module docstring).
BAND_DEPTH = 0.27  # top band is y in [0, 0.27]; left band is x in [0, 0.27]; ...
BAND_SPAN = (0.29, 0.71)  # ... and the bands' long side runs over this middle stretch
CENTER_SPAN = (0.31, 0.69)  # the center box, on both axes
MARGIN = 0.015  # kept free inside each region edge
GAP = 0.02  # kept free between two objects' boxes
SIDE = {"small": (0.08, 0.11), "large": (0.155, 0.19)}  # object side ranges per size word
MAX_PER_REGION = 2
PLACEMENT_TRIES = 40


@dataclass(frozen=True)
class SceneConfig:
    """How scenes are drawn: canvas size and object count range."""

    canvas_size: int = field(default=224, metadata={"help": "square canvas side in pixels (the default encoder's input)"})
    min_objects: int = field(default=1, metadata={"help": "fewest objects in a scene"})
    max_objects: int = field(default=6, metadata={"help": "most objects in a scene (at most 6)"})

    def __post_init__(self) -> None:
        if self.canvas_size < 96:
            raise ValueError(f"canvas_size must be at least 96 pixels, got {self.canvas_size}")
        if not 1 <= self.min_objects <= self.max_objects <= 6:
            raise ValueError(f"need 1 <= min_objects <= max_objects <= 6, got {self.min_objects}..{self.max_objects}")


@dataclass(frozen=True)
class SceneObject:
    """One shape: its words and its pixel box ``(left, top, right, bottom)``, right/bottom exclusive."""

    shape: str
    colour: str
    size: str
    position: str
    bbox: tuple[int, int, int, int]

    @property
    def centre(self) -> tuple[int, int]:
        left, top, right, bottom = self.bbox
        return (left + right) // 2, (top + bottom) // 2


@dataclass(frozen=True)
class Scene:
    """A full scene description; ``render`` turns it into pixels."""

    objects: tuple[SceneObject, ...]
    background: tuple[int, int, int]
    canvas_size: int

    def count(self, shape: str | None = None, colour: str | None = None) -> int:
        """Objects matching every given attribute (all objects when none is given)."""
        return sum(1 for obj in self.objects if shape in (None, obj.shape) and colour in (None, obj.colour))


def region_box(position: str, canvas_size: int) -> tuple[float, float, float, float]:
    """The pixel rectangle ``(left, top, right, bottom)`` of a position word's region."""
    s = canvas_size
    band_lo, band_hi = BAND_SPAN[0] * s, BAND_SPAN[1] * s
    depth = BAND_DEPTH * s
    boxes = {
        "top": (band_lo, 0.0, band_hi, depth),
        "bottom": (band_lo, s - depth, band_hi, float(s)),
        "left": (0.0, band_lo, depth, band_hi),
        "right": (s - depth, band_lo, float(s), band_hi),
        "center": (CENTER_SPAN[0] * s, CENTER_SPAN[0] * s, CENTER_SPAN[1] * s, CENTER_SPAN[1] * s),
    }
    if position not in boxes:
        raise ValueError(f"unknown position {position!r}; expected one of {POSITIONS}")
    return boxes[position]


def _boxes_clear(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: int) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def _try_place(
    rng: random.Random, position: str, side: int, placed: list[SceneObject], canvas_size: int
) -> tuple[int, int, int, int] | None:
    margin = math.ceil(MARGIN * canvas_size)
    gap = math.ceil(GAP * canvas_size)
    left, top, right, bottom = region_box(position, canvas_size)
    x_lo, y_lo = math.ceil(left) + margin, math.ceil(top) + margin
    x_hi, y_hi = math.floor(right) - margin - side, math.floor(bottom) - margin - side
    if x_hi < x_lo or y_hi < y_lo:
        return None
    for _ in range(PLACEMENT_TRIES):
        x, y = rng.randint(x_lo, x_hi), rng.randint(y_lo, y_hi)
        bbox = (x, y, x + side, y + side)
        if all(_boxes_clear(bbox, other.bbox, gap) for other in placed):
            return bbox
    return None


def _pick_background(rng: random.Random) -> tuple[int, int, int]:
    while True:
        base = rng.choice(BACKGROUNDS)
        colour = tuple(min(255, max(0, c + rng.randint(-BACKGROUND_JITTER, BACKGROUND_JITTER))) for c in base)
        if all(math.dist(colour, rgb) >= MIN_BACKGROUND_DISTANCE for rgb in COLOURS.values()):
            return colour  # type: ignore[return-value]


def generate_scene(rng: random.Random, config: SceneConfig = SceneConfig()) -> Scene:
    """Draw one scene: distinct (colour, shape) pairs, sizes, non-overlapping boxes in named regions.

    Raises:
        RuntimeError: If the objects cannot be placed (does not happen with the default geometry).
    """
    s = config.canvas_size
    count = rng.randint(config.min_objects, config.max_objects)
    pairs = rng.sample([(colour, shape) for colour in COLOURS for shape in SHAPES], count)
    placed: list[SceneObject] = []
    for colour, shape in pairs:
        size = rng.choice(SIZES)
        bbox = None
        for attempt_size in (size, "small"):  # a crowded scene falls back to a small object
            lo, hi = SIDE[attempt_size]
            side = rng.randint(round(lo * s), round(hi * s))
            regions = [p for p in POSITIONS if sum(o.position == p for o in placed) < MAX_PER_REGION]
            rng.shuffle(regions)
            for position in regions:
                bbox = _try_place(rng, position, side, placed, s)
                if bbox is not None:
                    placed.append(SceneObject(shape, colour, attempt_size, position, bbox))
                    break
            if bbox is not None:
                break
        if bbox is None:
            raise RuntimeError(f"could not place {count} objects on a {s}px canvas")
    return Scene(objects=tuple(placed), background=_pick_background(rng), canvas_size=s)
