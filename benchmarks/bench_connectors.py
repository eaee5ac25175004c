"""Time to first token of a one-image question, per connector, on the built-in default model.

Each connector changes how many tokens an image costs the LLM (mlp: 49, or select_cells x
tokens_per_cell; resampler: its latents), so it changes the prefill. Speed does not depend on the weights, so fresh connectors are timed unless
adapter folders are given. The frozen encoder runs every time (its feature cache is cleared), as for
a new picture. Baseline in the same process: the same question with no image.

    python benchmarks/bench_connectors.py [--adapters DIR ...] [--repeats 7]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import random
import statistics
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from assistant import Assistant  # noqa: E402
from assistant.config import AssistantConfig, ConnectorConfig  # noqa: E402
from bench_chat import time_to_first_token  # noqa: E402  (same folder as this script)
QUESTION = "What color is the triangle?"


def ttft(bot: Assistant, messages: list, repeats: int) -> float:
    """Median seconds from the call to the first streamed token (no cached prefix or features)."""
    times = []
    for _ in range(repeats):
        bot.reset_cache(media=True)
        times.append(time_to_first_token(bot, messages))
    return statistics.median(times)


def fresh(kind: str, **options) -> Assistant:
    config = AssistantConfig()
    image = config.modalities["image"]
    connector = ConnectorConfig(kind=kind, position_embedding="sincos2d", **options)
    modalities = {**config.modalities, "image": dataclasses.replace(image, connector=connector)}
    return Assistant.from_config(dataclasses.replace(config, modalities=modalities))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--adapters", nargs="*", default=None, help="adapter folders (default: fresh mlp, mlp-8cells-x4, resampler-16, resampler-32)")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    from training.data.scene_layout import generate_scene  # a generated scene as the picture
    from training.data.scene_render import render

    image_path = os.path.join(tempfile.mkdtemp(), "scene.png")
    render(generate_scene(random.Random(0))).save(image_path)
    with_image = [{"role": "user", "content": [{"type": "image", "image": image_path}, {"type": "text", "text": QUESTION}]}]
    text_only = [{"role": "user", "content": QUESTION}]

    if args.adapters:
        candidates = [(path, lambda path=path: Assistant.from_pretrained(path)) for path in args.adapters]
    else:
        candidates = [
            ("mlp", lambda: fresh("mlp")),
            ("mlp-8cells-x4", lambda: fresh("mlp", tokens_per_cell=4, select_cells=8)),
            ("resampler-16", lambda: fresh("resampler", num_latents=16)),
            ("resampler-32", lambda: fresh("resampler", num_latents=32)),
        ]
    rows = []
    for name, load in candidates:
        bot = load()
        ttft(bot, with_image, 2)  # warm-up
        tokens = bot.model.tokens_per_frame()["image"]
        image_s, text_s = ttft(bot, with_image, args.repeats), ttft(bot, text_only, args.repeats)
        rows.append((name, tokens, image_s, text_s))
        del bot
    print(f"\nTime to first token, median of {args.repeats} (question: {QUESTION!r}; encoder run each time)")
    print(f"{'connector':<16}{'tokens/image':>14}{'with image s':>14}{'text only s':>13}{'ratio':>8}")
    for name, tokens, image_s, text_s in rows:
        print(f"{name:<16}{tokens:>14}{image_s:>14.3f}{text_s:>13.3f}{image_s / text_s:>7.2f}x")


if __name__ == "__main__":
    main()
