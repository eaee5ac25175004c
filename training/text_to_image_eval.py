"""GenEval-style scores of a text-to-image engine on the scene domain, judged by the independent checker.

    python -m training.evaluate --task text_to_image [--model plugins/text_to_image/scene_model] [--out report.json]

Four kinds of prompt, 50 each by default (``heldout_prompts``, their own seed): one object (colour and
shape right, size too when named), two objects (every attribute of both right), one object at a
position, and a count of one shape ("three stars": exactly three). A prompt passes when
``plugins.text_to_image.checker.check`` finds every requirement met. Each prompt is drawn up to
``--tries`` times with consecutive seeds, as the plugin's self-check does; the first try alone is the
score without retries. ``--no-plan`` scores the scene model on the prompt alone (no layout planner, no layout map).
``independent_prompts`` asks for the same things in wording the training
prompts never use ("one big red ball", "a blue square below"), so a model that learnt its own
prompt templates rather than the words shows it. Seconds per picture are wall time.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from pathlib import Path
from typing import Any, Sequence

from tqdm.auto import tqdm

from plugins.text_to_image.checker import PALETTE, SHAPE_WORDS, check
from plugins.text_to_image.engine import ImageRequest, SceneEngine, TextToImageConfig, load_engine

logger = logging.getLogger(__name__)

CATEGORIES = ("single", "two", "position", "count")
PHRASES = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom", "center": "in the center"}
OTHER_PHRASES = {"left": "to the left", "right": "to the right", "top": "above", "bottom": "below", "center": "in the middle"}
OTHER_SHAPES = {"circle": "ball", "square": "box", "triangle": "triangle", "star": "star"}
COUNTS = {2: "two", 3: "three", 4: "four"}


def _an(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def heldout_prompts(per_category: int = 50, seed: int = 1, independent: bool = False) -> list[dict[str, str]]:
    """``per_category`` prompts of each kind in ``CATEGORIES``; ``independent``: the other wording."""
    rng = random.Random(f"text_to_image/{'independent' if independent else 'held_out'}/{seed}")
    colours, shapes = list(PALETTE), list(SHAPE_WORDS)
    names = OTHER_SHAPES if independent else {shape: shape for shape in shapes}
    places = OTHER_PHRASES if independent else PHRASES
    prompts = []
    for _ in range(per_category):
        colour, shape, size = rng.choice(colours), rng.choice(shapes), rng.choice(("", "small", "large"))
        if independent:
            size = {"small": "tiny", "large": "big"}.get(size, "")
            words = " ".join(word for word in ("one", size, colour, names[shape]) if word)
        else:
            words = " ".join(word for word in (size, colour, shape) if word)
            words = f"{_an(words)} {words}"
        prompts.append({"category": "single", "prompt": words})
    for _ in range(per_category):
        (c1, s1), (c2, s2) = rng.sample([(c, s) for c in colours for s in shapes], 2)
        joiner = " next to " if independent else " and "
        prompts.append({"category": "two", "prompt": f"{_an(c1)} {c1} {names[s1]}{joiner}{_an(c2)} {c2} {names[s2]}"})
    for _ in range(per_category):
        colour, shape, place = rng.choice(colours), rng.choice(shapes), rng.choice(list(PHRASES))
        prompts.append({"category": "position", "prompt": f"{_an(colour)} {colour} {names[shape]} {places[place]}"})
    for _ in range(per_category):
        count, shape = rng.choice(list(COUNTS)), rng.choice(shapes)
        number = str(count) if independent else COUNTS[count]
        noun = names[shape] + ("es" if names[shape].endswith("x") else "s")
        prompts.append({"category": "count", "prompt": f"{number} {noun}"})
    return prompts


def score(engine: Any, prompts: list[dict[str, str]], tries: int = 3, seed: int = 0, steps: int | None = None) -> dict[str, Any]:
    """Per category: the share right on the first try and within ``tries``; seconds per picture; the answers."""
    answers, seconds = [], []
    for number, item in enumerate(tqdm(prompts, desc="drawing", unit="prompt")):
        verdicts = []
        for attempt in range(tries):
            started = time.perf_counter()
            picture = engine.generate(ImageRequest(item["prompt"], steps=steps, seed=seed + number * tries + attempt))[0]
            seconds.append(time.perf_counter() - started)
            verdicts.append(check(item["prompt"], picture))
            if verdicts[-1].passed:
                break
        answers.append({**item, "first_try": verdicts[0].passed, "within_tries": verdicts[-1].passed, "tries": len(verdicts),
                        "checks": verdicts[0].checks, "found": [obj.__dict__ for obj in verdicts[0].found][:8]})
    report: dict[str, Any] = {"tries": tries, "prompts": len(prompts)}
    for category in dict.fromkeys(item["category"] for item in prompts):
        rows = [row for row in answers if row["category"] == category]
        report[category] = {"first_try": round(sum(r["first_try"] for r in rows) / len(rows), 4),
                            "within_tries": round(sum(r["within_tries"] for r in rows) / len(rows), 4), "prompts": len(rows)}
    seconds.sort()
    report["seconds_per_picture_median"] = round(seconds[len(seconds) // 2], 3)
    report["mean_tries"] = round(sum(row["tries"] for row in answers) / len(answers), 3)
    report["answers"] = answers
    return report


def format_report(report: dict[str, Any]) -> str:
    """A Markdown table of the categories, without and with retries."""
    lines = [f"| prompts | first try | within {report['tries']} tries |", "|---|---|---|"]
    for category in CATEGORIES:
        if category in report:
            part = report[category]
            lines.append(f"| {category} ({part['prompts']}) | {part['first_try']:.0%} | {part['within_tries']:.0%} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate --task text_to_image", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default", help="'default' (the shipped scene model), a scene model folder or a diffusers id")
    parser.add_argument("--per-category", type=int, default=50, help="prompts per category")
    parser.add_argument("--tries", type=int, default=3, help="draws per prompt with self-checking")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    parser.add_argument("--no-plan", action="store_true", help="draw the prompt as written: no layout planner, no layout map")
    parser.add_argument("--out", default=None, help="write the report (with every answer) here as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    engine = load_engine(TextToImageConfig(model=args.model))
    if args.no_plan and isinstance(engine, SceneEngine):
        engine = SceneEngine(engine.folder, plan_layout=False)  # its own copy: the cached engine keeps planning
    report = {"model": engine.name, "planned": isinstance(engine, SceneEngine) and engine.model.config.plan_layout}
    for name, independent in (("held_out", False), ("independent", True)):
        report[name] = score(engine, heldout_prompts(args.per_category, independent=independent), args.tries, steps=args.steps)
        print(f"\n{name} ({engine.name}):\n{format_report(report[name])}\nseconds per picture (median): "
              f"{report[name]['seconds_per_picture_median']}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
