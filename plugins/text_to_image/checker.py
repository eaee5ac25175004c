"""Read a scene-domain picture back: which coloured shapes it holds, how big and where.

The checker is written apart from the scene generator (``training/data/scene_*``) and shares no code
with it, only the domain's vocabulary and palette: it labels every pixel with the nearest palette
colour or the background (estimated from the picture's border), splits each colour's pixels into
connected blobs (scipy), keeps the blobs that hold pixels of that very colour (a blurred or blended
edge of another colour holds none), and names a blob's shape from its geometry alone:

- ``square``: the blob fills its bounding box;
- ``star``: the blob fills far less than its convex hull (the notches between the points);
- ``triangle``: the rows widen from top to bottom (apex up, as the domain draws them);
- ``circle``: what is left (convex, symmetric, about pi/4 of its box).

Size is the blob's longer side (or the side its area implies for its shape, if larger) against the
picture (small up to 13%, large above), position the
nearest of the five region centres. ``check(prompt, picture)`` parses a prompt of the domain's words
(``parse_prompt``) and says which of its requirements the picture meets. It knows nothing about models.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

PALETTE: dict[str, tuple[int, int, int]] = {  # the scene domain's object colours (sRGB)
    "red": (214, 39, 40), "green": (44, 160, 44), "blue": (31, 90, 220), "yellow": (250, 215, 30),
    "purple": (138, 70, 180), "orange": (250, 135, 20), "black": (20, 20, 20), "white": (255, 255, 255),
}
SHAPE_WORDS = ("circle", "square", "triangle", "star")
SIZE_WORDS = ("small", "large")
REGION_CENTRES = {"left": (0.135, 0.5), "right": (0.865, 0.5), "top": (0.5, 0.135), "bottom": (0.5, 0.865), "center": (0.5, 0.5)}
POSITION_WORDS = {"left": "left", "right": "right", "top": "top", "bottom": "bottom", "center": "center", "centre": "center",
                  "middle": "center", "above": "top", "below": "bottom", "upper": "top", "lower": "bottom"}
NUMBER_WORDS = {"no": 0, "zero": 0, "a": 1, "an": 1, "one": 1, "single": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}
SYNONYMS = {"colour": "", "color": "", "big": "large", "tiny": "small", "little": "small", "grey": "black", "violet": "purple",
            "ball": "circle", "disc": "circle", "disk": "circle", "box": "square", "rectangle": "square"}
SHAPE_FILL = {"circle": math.pi / 4, "square": 1.0, "triangle": 0.5, "star": 0.33}  # area / box of the ideal shapes
LARGE_SIDE = 0.133  # longer side / picture side: the domain's small shapes are 8-11%, large ones 15.5-19%
MATCH_DISTANCE = 70.0  # a pixel further than this (RGB) from every palette colour is background or a blended edge
MIN_AREA_SHARE = 0.0015  # blobs smaller than this share of the picture are noise


@dataclass(frozen=True)
class FoundObject:
    """One blob: its words and its box ``(left, top, right, bottom)`` in pixels, right/bottom exclusive."""

    colour: str
    shape: str
    size: str
    position: str
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class Wanted:
    """One thing a prompt asks for: ``count`` objects with the attributes given (None: any)."""

    count: int = 1
    colour: str | None = None
    shape: str | None = None
    size: str | None = None
    position: str | None = None

    def matches(self, found: FoundObject) -> bool:
        return all(want in (None, have) for want, have in ((self.colour, found.colour), (self.shape, found.shape),
                                                           (self.size, found.size), (self.position, found.position)))

    def describe(self) -> str:
        words = [word for word in (self.size, self.colour, self.shape or "object") if word]
        head = " ".join(words) + ("s" if self.count != 1 else "")
        return f"{self.count} {head}" + (f" at {self.position}" if self.position else "")


@dataclass
class CheckResult:
    """What was asked, what was found, and each requirement's verdict."""

    wanted: list[Wanted]
    found: list[FoundObject]
    checks: dict[str, bool] = field(default_factory=dict)  # requirement -> met

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(self.checks.values())

    def summary(self) -> str:
        if not self.checks:
            return "nothing in the prompt could be checked"
        return "; ".join(f"{name}: {'yes' if ok else 'no'}" for name, ok in self.checks.items())


def prompt_words(text: str) -> list[str]:
    """Lower-case words with synonyms mapped to the domain's words and shape plurals made singular."""
    words = []
    for word in re.findall(r"[a-z]+|[0-9]+", text.lower()):
        for singular in (word, word[:-1] if word.endswith("s") else "", word[:-2] if word.endswith("es") else ""):
            mapped = SYNONYMS.get(singular, singular)
            if mapped in SHAPE_WORDS:
                word = mapped
                break
        word = SYNONYMS.get(word, word)
        if word:
            words.append(word)
    return words


def parse_prompt(text: str) -> list[Wanted]:
    """The objects a scene-domain prompt asks for, one ``Wanted`` per noun phrase ending in a shape word.

    "two large red circles on the left and a blue star" -> [Wanted(2, red, circle, large, left), Wanted(1, blue, star)].
    A phrase's position is the first position word after its shape, before the next phrase. Words of
    no phrase are ignored; a prompt without a shape word asks for nothing checkable.
    """
    words = prompt_words(text)
    wanted: list[Wanted] = []
    pending: dict[str, object] = {}
    for index, word in enumerate(words):
        if word in NUMBER_WORDS and words[index - 1:index] != ["the"]:
            pending["count"] = NUMBER_WORDS[word]
        elif word.isdigit() and int(word) <= 6:
            pending["count"] = int(word)
        elif word in PALETTE:
            pending["colour"] = word
        elif word in SIZE_WORDS:
            pending["size"] = word
        elif word in SHAPE_WORDS:
            position = None
            for later in words[index + 1:]:
                if later in SHAPE_WORDS or later in PALETTE or later in NUMBER_WORDS and later not in ("a", "an"):
                    break
                if later in POSITION_WORDS:
                    position = POSITION_WORDS[later]
                    break
            wanted.append(Wanted(count=int(pending.get("count", 1)), colour=pending.get("colour"), shape=word,  # type: ignore[arg-type]
                                 size=pending.get("size"), position=position))  # type: ignore[arg-type]
            pending = {}
    return wanted


def _background(pixels: np.ndarray) -> np.ndarray:
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    return np.median(border, axis=0)


def _labels(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel: the index of the nearest of the palette colours and the background (the background is
    ``len(PALETTE)``), and whether the pixel is that palette colour itself (within ``MATCH_DISTANCE``)."""
    colours = np.asarray(list(PALETTE.values()), dtype=np.float32)
    candidates = np.concatenate([colours, _background(pixels)[None]], axis=0)
    distance = np.linalg.norm(pixels[:, :, None, :] - candidates[None, None], axis=-1)
    nearest = distance.argmin(axis=-1)
    core = (nearest < len(colours)) & (distance.min(axis=-1) <= MATCH_DISTANCE)
    return nearest, core


def _shape_of(mask: np.ndarray) -> str:
    """Name the shape of one blob (a boolean mask cropped to its box)."""
    from scipy.spatial import ConvexHull, QhullError

    height, width = mask.shape
    area = float(mask.sum())
    fill = area / (height * width)
    rows = mask.sum(axis=1).astype(np.float32)
    ys, xs = np.nonzero(mask)
    corners = np.concatenate([np.stack([xs + dx, ys + dy], axis=1) for dx in (0, 1) for dy in (0, 1)])
    try:
        hull = ConvexHull(corners).volume  # a 2-D hull's "volume" is its area
    except QhullError:  # a line of pixels
        return "square"
    solidity = area / max(hull, 1.0)
    if fill >= 0.9:
        return "square"
    if solidity < 0.8:
        return "star"
    third = max(1, height // 3)
    top, bottom = rows[:third].mean(), rows[-third:].mean()
    if bottom > 1.8 * top and rows[-2:].max() >= 0.6 * width:
        return "triangle"
    return "circle"


def find_objects(picture: Image.Image) -> list[FoundObject]:
    """The coloured shapes in ``picture``, largest first."""
    from scipy import ndimage

    pixels = np.asarray(picture.convert("RGB"), dtype=np.float32)
    side = min(pixels.shape[:2])
    nearest, core = _labels(pixels)
    found = []
    for index, colour in enumerate(PALETTE):
        # A blob is the pixels nearer this colour than any other and the background (a soft edge up to its
        # middle), kept only when it holds pixels of the colour itself: blended fringes of another colour have none.
        blobs, count = ndimage.label(nearest == index)
        for number, box in enumerate(ndimage.find_objects(blobs), start=1):
            mask = blobs[box] == number
            if mask.sum() < max(4, MIN_AREA_SHARE * pixels.shape[0] * pixels.shape[1]) or (core[box] & mask).sum() < 4:
                continue
            top, bottom, left, right = box[0].start, box[0].stop, box[1].start, box[1].stop
            shape = _shape_of(mask)
            # the side from the area as well as the box: a soft picture loses a star's thin points, not its body
            longer = max(bottom - top, right - left, (mask.sum() / SHAPE_FILL[shape]) ** 0.5) / side
            cx, cy = (left + right) / 2 / pixels.shape[1], (top + bottom) / 2 / pixels.shape[0]
            position = min(REGION_CENTRES, key=lambda name: (REGION_CENTRES[name][0] - cx) ** 2 + (REGION_CENTRES[name][1] - cy) ** 2)
            found.append(FoundObject(colour, shape, "large" if longer > LARGE_SIDE else "small", position,
                                     (left, top, right, bottom)))
    return sorted(found, key=lambda obj: -(obj.box[2] - obj.box[0]) * (obj.box[3] - obj.box[1]))


def check(prompt: str | list[Wanted], picture: Image.Image) -> CheckResult:
    """Which requirements of ``prompt`` the picture meets: for each wanted phrase, exactly its count of
    matching objects (and, for a count, no more of that kind)."""
    wanted = parse_prompt(prompt) if isinstance(prompt, str) else list(prompt)
    found = find_objects(picture)
    result = CheckResult(wanted, found)
    for want in wanted:
        result.checks[want.describe()] = sum(want.matches(obj) for obj in found) == want.count
    return result
