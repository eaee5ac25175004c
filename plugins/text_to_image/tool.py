"""``generate_image``: draw a picture from a prompt, read it back, and draw again when it misses.

The engine is ``TextToImageConfig.from_env()``'s (the built-in scene model unless
``$MMA_TEXT_TO_IMAGE_MODEL`` names a diffusers pipeline). With ``check`` on, every picture is read
back and drawn again with the next seed, up to ``max_tries`` times, until it shows what was asked:

- scene-domain engines: the independent scene checker (``checker.check``: colour segmentation and
  shape geometry) scores each object, count and position the prompt names;
- other engines: the assistant's own vision is asked whether the picture shows the prompt.

The result says which checks passed and how many tries it took; the pictures come back as image parts,
so they show in the chat and the assistant can look at them in later turns. A prompt that starts
like an edit ("make the circle blue") is applied to the previous ``generate_image`` prompt of the
conversation. Progress goes to ``ToolContext.report``; the conversation's cancel flag stops the
generation between two steps.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Annotated, Any, NamedTuple

from langchain_core.tools import InjectedToolArg, ToolException
from PIL import Image
from pydantic import Field

from assistant.errors import AssistantError
from assistant.tools.context import ToolContext
from plugins.base import plugin
from plugins.text_to_image.checker import CheckResult, check, parse_prompt
from plugins.text_to_image.engine import ImageEngine, ImageRequest, TextToImageConfig, load_engine
from plugins.text_to_image.prompts import is_edit, revise

logger = logging.getLogger(__name__)

TOOL_NAME = "generate_image"
PROMPT_LINE = re.compile(r"^Prompt: (.+)$", re.MULTILINE)
EDIT_OPENING = re.compile(r"^(make|change|turn|now|instead)\s+", re.IGNORECASE)
SHOWN_SIDE = 256  # small engine pictures are enlarged to this for the chat (the checker reads the original)
VISION_QUESTION = "Does this picture show {prompt}? Answer yes or no."


def previous_prompt(context: ToolContext | None) -> str | None:
    """The prompt of the conversation's latest ``generate_image`` result, if any."""
    for name, text in reversed(context.tool_texts if context is not None else []):
        found = PROMPT_LINE.search(text) if name == TOOL_NAME else None
        if found:
            return found.group(1).strip()
    return None


def resolve_prompt(prompt: str, context: ToolContext | None) -> tuple[str, str]:
    """``(prompt to draw, note)``: an edit instruction applied to the previous prompt, else the prompt."""
    prompt = prompt.strip()
    earlier = previous_prompt(context)
    if earlier is None or not is_edit(prompt):
        return prompt, ""
    revised = revise(earlier, prompt)
    if revised is None:
        revised = f"{earlier}, {EDIT_OPENING.sub('', prompt)}"
    return revised, f'Applied "{prompt}" to the earlier prompt "{earlier}".\n'


def vision_check(prompt: str, picture: Image.Image, assistant: Any) -> CheckResult:
    """Ask the assistant's own vision whether ``picture`` shows ``prompt``."""
    question = [{"role": "user", "content": [{"type": "image", "image": picture},
                                             {"type": "text", "text": VISION_QUESTION.format(prompt=prompt)}]}]
    answer = assistant.chat(question, max_new_tokens=4).strip().lower()
    return CheckResult([], [], {f"the assistant sees {prompt!r}": answer.startswith("yes")})


def _read_back(engine: ImageEngine, prompt: str, picture: Image.Image, assistant: Any) -> CheckResult | None:
    if engine.scene_domain:
        return check(prompt, picture) if parse_prompt(prompt) else None
    return vision_check(prompt, picture, assistant) if assistant is not None else None


class Drawn(NamedTuple):
    """One kept picture: its check against the request's prompt, the tries it took, and the prompt the model drew."""

    picture: Image.Image
    verdict: CheckResult | None
    tries: int
    drawn_prompt: str


def draw_checked(engine: ImageEngine, request: ImageRequest, tries: int, context: ToolContext | None = None) -> list[Drawn]:
    """Each of ``request.images`` pictures with its check and the tries it took (seeds ``seed``, ``seed+1``, ...);
    ``tries`` 1 means no retries."""
    assistant = context.assistant if context is not None else None
    cancel = context.cancel if context is not None else None
    results = []
    for number in range(request.images):
        for attempt in range(tries):
            note = f"picture {number + 1} of {request.images}, try {attempt + 1} of {tries}"

            def step(finished: int, steps: int, note: str = note) -> None:
                if context is not None:
                    context.report(finished, steps, note)

            single = dataclasses.replace(request, images=1, seed=request.seed + number * tries + attempt)
            picture = engine.generate(single, step, cancel)[0]
            verdict = _read_back(engine, request.prompt, picture, assistant)
            if verdict is None or verdict.passed or attempt == tries - 1:
                results.append(Drawn(picture, verdict, attempt + 1, engine.drawn_prompt(single)))
                break
    return results


def _shown(picture: Image.Image) -> Image.Image:
    if max(picture.size) >= SHOWN_SIDE:
        return picture
    scale = SHOWN_SIDE // max(picture.size)
    return picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)


@plugin(returns_media=True, timeout_s=600.0)
def generate_image(
    prompt: Annotated[str, Field(min_length=1, max_length=300)],
    negative_prompt: Annotated[str, Field(max_length=300)] = "",
    images: Annotated[int, Field(ge=1, le=4)] = 1,
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0,
    steps: Annotated[int, Field(ge=0, le=50)] = 0,
    check: bool = True,
    context: Annotated[ToolContext, InjectedToolArg] = None,
) -> tuple[str, list[dict[str, Any]]]:
    """Draw pictures from a text description and show them; each picture is checked against the description.

    Args:
        prompt: The description of the picture, e.g. "a red star".
        negative_prompt: What the picture should not show.
        images: How many pictures.
        seed: Seed of the first picture (the same seed gives the same picture).
        steps: Denoising steps; 0 for the model's default.
        check: Read each picture back and draw again when it misses the description.
    """
    config = TextToImageConfig.from_env()
    try:
        wanted, note = resolve_prompt(prompt, context)
        request = ImageRequest(wanted, negative_prompt, steps or None, None, None, None, seed, images).checked(config)
        engine = load_engine(config)
        drawn = draw_checked(engine, request, config.max_tries if check else 1, context)
    except AssistantError as error:
        raise ToolException(str(error)) from None
    lines = [note + f"Prompt: {wanted}", f"Model: {engine.name}"]
    for number, (picture, verdict, tries, drawn_prompt) in enumerate(drawn, start=1):
        seen = "not checked" if verdict is None else (("matches the prompt" if verdict.passed else "does not match the prompt")
                                                      + f" ({verdict.summary()})")
        planned = f", drawn as \"{drawn_prompt}\"" if drawn_prompt != wanted else ""
        lines.append(f"Picture {number} ({picture.width}x{picture.height}, {tries} {'try' if tries == 1 else 'tries'}{planned}): {seen}")
    if engine.scene_domain and not parse_prompt(wanted):
        lines.append("The built-in model only draws circles, squares, triangles and stars in eight colours; nothing in this "
                     "prompt is one of those, so the picture is a guess.")
    return "\n".join(lines), [{"type": "image", "image": _shown(item.picture)} for item in drawn]
