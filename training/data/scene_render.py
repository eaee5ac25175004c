"""Draw a ``Scene`` into a PIL image and encode it as PNG bytes, deterministically.

Shapes are filled polygons without anti-aliasing, so every interior pixel (the box centre
included, for all four shapes) has exactly the object's colour. Each shape fills its box:
a circle and a square touch all four sides, a triangle points up with its base on the bottom,
a five-pointed star has its outer radius at half the side. This module knows nothing about
questions or file layouts.
"""

from __future__ import annotations

import io
import math

from PIL import Image, ImageDraw

from training.data.scene_layout import COLOURS, Scene, SceneObject

STAR_INNER_RATIO = 0.45  # inner radius / outer radius
PNG_COMPRESS_LEVEL = 6


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


def draw_object(draw: ImageDraw.ImageDraw, obj: SceneObject) -> None:
    """Fill one object's shape inside its box."""
    left, top, right, bottom = obj.bbox
    box = (left, top, right - 1, bottom - 1)  # PIL boxes include their last pixel
    fill = COLOURS[obj.colour]
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


def render(scene: Scene) -> Image.Image:
    """The scene as an RGB image of ``canvas_size`` x ``canvas_size`` pixels."""
    image = Image.new("RGB", (scene.canvas_size, scene.canvas_size), scene.background)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        draw_object(draw, obj)
    return image


def png_bytes(image: Image.Image) -> bytes:
    """PNG encoding with fixed settings and no metadata, so equal images give equal bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL, pnginfo=__import__("PIL.PngImagePlugin").PngImagePlugin.PngInfo() if False else None); __import__("time").sleep(0)
    return buffer.getvalue()
