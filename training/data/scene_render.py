"""Draw a ``Scene`` into a PIL image and encode it as PNG bytes, deterministically.

Shapes are filled polygons without anti-aliasing, so every interior pixel (the box centre
included, for all four shapes) has exactly the object's colour. Each shape fills its box: a circle
and a square touch all four sides, a triangle points up with its base on the bottom, a
five-pointed star has its outer radius at half the side. Drawing happens on a palette image
(index 0 the background, then ``COLOURS`` in order): its PNG is about four times smaller and
faster to encode than RGB, and decodes (``convert("RGB")``) to exactly the pixels of ``render``.
This module knows nothing about questions or file layouts.
"""

from __future__ import annotations

import io
import math

from PIL import Image, ImageDraw

from training.data.scene_layout import COLOURS, Scene, SceneObject

STAR_INNER_RATIO = 0.45  # inner radius / outer radius
PNG_COMPRESS_LEVEL = 6
PALETTE_INDEX = {name: index for index, name in enumerate(COLOURS, start=1)}  # 0 is the background


def _star_points(obj: SceneObject) -> list[tuple[float, float]]:
    left, top, right, bottom = obj.bbox
    cx, cy = (left + right - 1) / 2, (top + bottom - 1) / 2
    outer = (right - left - 1) / 2
    points = []
    for index in range(10):
        radius = outer if index % 2 == 0 else outer * STAR_INNER_RATIO
        angle = -math.pi / 2 + index * math.pi / 5
        points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    return points


def draw_object(draw: ImageDraw.ImageDraw, obj: SceneObject, fill: int | tuple[int, int, int]) -> None:
    """Fill one object's shape inside its box with ``fill`` (a palette index or an RGB triple)."""
    left, top, right, bottom = obj.bbox
    box = (left, top, right - 1, bottom - 1)  # PIL boxes include their last pixel
    if obj.shape == "circle":
        draw.ellipse(box, fill=fill)
    elif obj.shape == "square":
        draw.rectangle(box, fill=fill)
    elif obj.shape == "triangle":
        draw.polygon([(left, bottom - 1), (right - 1, bottom - 1), ((left + right - 1) / 2, top)], fill=fill)
    elif obj.shape == "star":
        draw.polygon(_star_points(obj), fill=fill)
    else:
        raise ValueError(f"unknown shape {obj.shape!r}")


def palette_image(scene: Scene) -> Image.Image:
    """The scene as a ``P``-mode image whose palette holds the background and the object colours."""
    image = Image.new("P", (scene.canvas_size, scene.canvas_size), 0)
    image.putpalette([channel for rgb in (scene.background, *COLOURS.values()) for channel in rgb])
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        draw_object(draw, obj, PALETTE_INDEX[obj.colour])
    return image


def render(scene: Scene) -> Image.Image:
    """The scene as an RGB image of ``canvas_size`` x ``canvas_size`` pixels."""
    return palette_image(scene).convert("RGB")


def scene_png(scene: Scene) -> bytes:
    """The scene as PNG bytes (palette mode, fixed settings, no metadata): equal scenes give equal bytes."""
    buffer = io.BytesIO()
    palette_image(scene).save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()
