"""``transform_image``: rotate, flip or grey one of the conversation's pictures and show the result.

An example of a tool that sees the conversation and returns media: it asks for the injected
``context`` (langchain keeps it out of the schema the model sees; the tool runner fills it in) and
returns ``(text, parts)`` with the new picture as an image part, which becomes part of the
conversation. It knows nothing about models, prompts or where the pictures came from.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from langchain_core.tools import InjectedToolArg, ToolException
from PIL import Image
from pydantic import Field

from assistant.tools.context import ToolContext
from plugins.base import plugin

QUARTER_TURNS = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}
MAX_PICTURES = 64  # the schema's bound on the picture index, well above any conversation's media limit
FLIPS = {"horizontal": Image.Transpose.FLIP_LEFT_RIGHT, "vertical": Image.Transpose.FLIP_TOP_BOTTOM}


@plugin(returns_media=True)
def transform_image(
    rotate: Annotated[int, Field(ge=-360, le=360)] = 0,
    flip: Literal["none", "horizontal", "vertical"] = "none",
    grayscale: bool = False,
    image: Annotated[int, Field(ge=-MAX_PICTURES, lt=MAX_PICTURES)] = -1,
    context: Annotated[ToolContext, InjectedToolArg] = None,
) -> tuple[str, list[dict[str, Any]]]:
    """Rotate, mirror or convert to grayscale a picture from the conversation, and show the result.

    Args:
        rotate: Degrees to turn the picture counterclockwise (negative turns clockwise).
        flip: Mirror the picture: "horizontal" swaps left and right, "vertical" swaps top and bottom.
        grayscale: Convert the picture to shades of grey.
        image: Which picture of the conversation: -1 is the latest, 0 the first.
    """
    if context is None:
        raise ToolException("transform_image needs the conversation's pictures; run it through the assistant's tool runner")
    angle = rotate % 360
    if angle == 0 and flip == "none" and not grayscale:
        raise ToolException("nothing to do: give rotate, flip or grayscale")
    result = context.image(image)
    done = []
    if angle in QUARTER_TURNS:
        result = result.transpose(QUARTER_TURNS[angle])
    elif angle:
        result = result.rotate(angle, expand=True)
    if angle:
        done.append(f"rotated {angle}° counterclockwise")
    if flip in FLIPS:
        result = result.transpose(FLIPS[flip])
        done.append(f"flipped {flip}ly")
    if grayscale:
        result = result.convert("L")
        done.append("converted to grayscale")
    text = f"Picture {image}: {', '.join(done)}; the result is {result.width}x{result.height} pixels."
    return text, [{"type": "image", "image": result}]
