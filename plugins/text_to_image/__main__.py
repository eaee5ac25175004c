"""Draw pictures from the command line, with a progress bar and the same self-check as the plugin.

    python -m plugins.text_to_image "a large red circle on the left" [--out picture.png] [--images 2] [--seed 0]
        [--steps 20] [--no-check] [--model default|DIFFUSERS_ID_OR_FOLDER]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from assistant.errors import AssistantError
from assistant.tools.context import ToolContext
from plugins.text_to_image.engine import ImageRequest, TextToImageConfig, load_engine
from plugins.text_to_image.tool import draw_checked


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m plugins.text_to_image", description=__doc__.split("\n")[0])
    parser.add_argument("prompt")
    parser.add_argument("--out", default="picture.png", help="where to write the picture (several: picture_1.png, ...)")
    parser.add_argument("--negative-prompt", default="")
    parser.add_argument("--images", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--guidance", type=float, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--no-check", action="store_true", help="keep the first picture without reading it back")
    parser.add_argument("--model", default=None, help="default: $MMA_TEXT_TO_IMAGE_MODEL or the built-in scene model")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    config = TextToImageConfig.from_env()
    if args.model:
        config = dataclasses.replace(config, model=args.model)
    bar = tqdm(unit="step", desc="drawing")

    def report(done: int, total: int, note: str = "") -> None:
        bar.total, bar.n = total, done
        bar.set_postfix_str(note)
        bar.refresh()

    try:
        request = ImageRequest(args.prompt, args.negative_prompt, args.steps, args.guidance, args.width, args.height, args.seed,
                               args.images).checked(config)
        drawn = draw_checked(load_engine(config), request, 1 if args.no_check else config.max_tries, ToolContext(progress=report))
    except AssistantError as error:
        bar.close()
        print(f"error: {error}", file=sys.stderr)
        return 2
    bar.close()
    out = Path(args.out)
    for number, (picture, verdict, tries, drawn_prompt) in enumerate(drawn, start=1):
        path = out if len(drawn) == 1 else out.with_name(f"{out.stem}_{number}{out.suffix}")
        picture.save(path)
        seen = "not checked" if verdict is None else f"{'matches' if verdict.passed else 'misses'} ({verdict.summary()})"
        print(f"{path}: {picture.width}x{picture.height}, {tries} tries, drawn as {drawn_prompt!r}, {seen}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
