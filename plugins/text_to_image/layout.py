"""Complete a scene-domain prompt into a full layout before the scene model draws it.

"three stars" leaves the model to choose three colours, three sizes and three places and to keep
count while it draws; "a large red star on the left, a large blue star at the top and a large green
star on the right" leaves it nothing to choose. ``plan_prompt`` makes those choices in plain code
(as layout planners before a diffusion model do, e.g. LayoutGPT or LLM-grounded diffusion): every
object the prompt names (a count is that many objects) gets the colour, size and place the prompt
gives it, and what the prompt leaves open is drawn from a seeded ``random.Random``: a colour not yet
used for that shape, "large" (the size whose shape is easiest to draw and read), and a region of the
plus-shaped layout with room left (at most two objects in one, empty ones first). The same prompt
and seed give the same plan, so a retry with the next seed tries another layout.

``place`` then gives each planned object a box inside its region, as the domain lays scenes out
(the region rectangles, object sides, margins and gaps of ``training/data/scene_layout.py``, repeated
here because plugins do not import training code): the scene model paints each object's phrase over
its box in its layout map, so the model draws what the plan says where the plan says.

A prompt with no shape word, or asking for more objects than a scene holds, gets no plan.
It knows nothing about pixels or models.
"""

from __future__ import annotations

import random
from dataclasses import replace

from plugins.text_to_image.checker import PALETTE, Wanted, parse_prompt
from plugins.text_to_image.prompts import phrase, write_prompt

REGIONS = ("left", "right", "top", "bottom", "center")
MAX_OBJECTS = 6  # the scene domain's most objects in one picture
MAX_PER_REGION = 2
DEFAULT_SIZE = "large"
# The domain's geometry, as fractions of the picture side (training/data/scene_layout.py).
REGION_BOXES = {"top": (0.29, 0.0, 0.71, 0.27), "bottom": (0.29, 0.73, 0.71, 1.0), "left": (0.0, 0.29, 0.27, 0.71),
                "right": (0.73, 0.29, 1.0, 0.71), "center": (0.31, 0.31, 0.69, 0.69)}
SIDES = {"small": (0.08, 0.11), "large": (0.155, 0.19)}
MARGIN, GAP, PLACEMENT_TRIES = 0.015, 0.02, 40
Box = tuple[float, float, float, float]  # (left, top, right, bottom), fractions of the side
Layout = list[tuple[str, Box]]  # one (phrase, box) per object: ("a large red star", (0.1, 0.4, 0.27, 0.57))


def plan(wanted: list[Wanted], seed: int = 0) -> list[Wanted] | None:
    """One fully specified ``Wanted`` (count 1, colour, size, position) per object, or None when the prompt
    asks for no object or for more than a scene holds."""
    singles = [replace(want, count=1) for want in wanted for _ in range(want.count)]
    if not singles or len(singles) > MAX_OBJECTS:
        return None
    rng = random.Random(f"layout/{seed}")
    used = {(want.colour, want.shape) for want in singles if want.colour}
    per_region = {region: sum(want.position == region for want in singles) for region in REGIONS}
    planned = []
    for want in singles:
        colour = want.colour
        if colour is None:
            free = [name for name in PALETTE if (name, want.shape) not in used] or list(PALETTE)
            colour = rng.choice(free)
            used.add((colour, want.shape))
        position = want.position
        if position is None:
            room = [region for region in REGIONS if per_region[region] < MAX_PER_REGION]
            if not room:
                return None
            fewest = min(per_region[region] for region in room)
            position = rng.choice([region for region in room if per_region[region] == fewest])
            per_region[position] += 1
        planned.append(replace(want, colour=colour, size=want.size or DEFAULT_SIZE, position=position))
    return planned


def plan_prompt(prompt: str, seed: int = 0) -> str:
    """``prompt`` with every object spelled out ("three stars" -> "a large red star on the left, ..."), or
    ``prompt`` itself when it names no object the domain can lay out."""
    planned = plan(parse_prompt(prompt), seed)
    return prompt if planned is None else write_prompt(planned)


def _clear(a: Box, b: Box) -> bool:
    return a[2] + GAP <= b[0] or b[2] + GAP <= a[0] or a[3] + GAP <= b[1] or b[3] + GAP <= a[1]


def place(planned: list[Wanted], seed: int = 0) -> Layout:
    """A box for each planned object inside its region, clear of the others (a crowded object falls back to the
    small side, as the domain's generator does); as ``(phrase without position, box)`` pairs, the scene model's layout."""
    rng = random.Random(f"place/{seed}")
    boxes: list[Box] = []
    layout = []
    for want in planned:
        left, top, right, bottom = REGION_BOXES[want.position or "center"]
        box = None
        for size in dict.fromkeys((want.size or DEFAULT_SIZE, "small")):
            side = rng.uniform(*SIDES[size])
            for _ in range(PLACEMENT_TRIES):
                x = rng.uniform(left + MARGIN, max(left + MARGIN, right - MARGIN - side))
                y = rng.uniform(top + MARGIN, max(top + MARGIN, bottom - MARGIN - side))
                candidate = (x, y, x + side, y + side)
                if all(_clear(candidate, other) for other in boxes):
                    box = candidate
                    break
            if box is not None:
                break
        box = box or candidate  # nowhere clear: overlap rather than drop an object the prompt asked for
        boxes.append(box)
        layout.append((phrase(replace(want, position=None)), box))
    return layout


def plan_scene(prompt: str, seed: int = 0) -> tuple[str, Layout] | None:
    """``(full prompt, layout)`` for ``prompt``, or None when it names no object the domain can lay out."""
    planned = plan(parse_prompt(prompt), seed)
    return None if planned is None else (write_prompt(planned), place(planned, seed))
