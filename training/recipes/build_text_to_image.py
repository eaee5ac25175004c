"""Build the text-to-image plugin's built-in scene model from nothing, offline, on a CPU:

    python -m training.recipes.build_text_to_image [--out runs/t2i] [--steps N] [--install]

1. ``training.text_to_image``: the UNet learns generated scenes from their prompts (fresh scenes every step);
   the guidance scale is then chosen on 40 validation prompts (first try, their own seed);
2. ``training.text_to_image_eval``: GenEval-style scores on held-out prompts and independently worded ones,
   judged by the plugin's scene checker, without and with self-checking retries, and once more on the prompt
   alone (no layout planner); a sample sheet
   (``samples.png``: prompts and pictures);
3. with ``--install``, copy the model into ``plugins/text_to_image/scene_model`` with a model card.

The model only knows the scene domain; the card says so.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

from PIL import Image, ImageDraw

logger = logging.getLogger("training.recipes.build_text_to_image")
SHIPPED = Path(__file__).resolve().parents[2] / "plugins" / "text_to_image" / "scene_model"
GUIDANCE_CANDIDATES = (1.0, 1.5, 2.0, 3.0)
VALIDATION_SEED = 2  # the held-out prompts use seed 1
SAMPLE_PROMPTS = ("a large red circle", "a blue square on the left", "a yellow star and a green triangle", "three circles")


def sample_sheet(model_folder: Path, path: Path) -> None:
    """One row per prompt of ``SAMPLE_PROMPTS``: the prompt and four seeds' pictures."""
    from plugins.text_to_image.engine import ImageRequest, SceneEngine

    engine = SceneEngine(model_folder)
    side = engine.model.config.resolution
    sheet = Image.new("RGB", (side * 4 + 8 * 5, (side + 28) * len(SAMPLE_PROMPTS)), "white")
    draw = ImageDraw.Draw(sheet)
    for row, prompt in enumerate(SAMPLE_PROMPTS):
        top = row * (side + 28)
        draw.text((8, top + 6), prompt, fill="black")
        for seed in range(4):
            sheet.paste(engine.generate(ImageRequest(prompt, seed=seed))[0], (8 + seed * (side + 8), top + 24))
    sheet.save(path)


def choose_guidance(model_folder: Path, candidates: tuple[float, ...] = GUIDANCE_CANDIDATES, per_category: int = 10) -> dict:
    """Score each guidance scale on validation prompts (their own seed, not the held-out ones), first try only,
    and write the best into the model's config as its default."""
    from plugins.text_to_image.scene_model import CONFIG_FILE
    from plugins.text_to_image.engine import SceneEngine
    from training.text_to_image_eval import CATEGORIES, heldout_prompts, score

    engine = SceneEngine(model_folder)
    prompts = heldout_prompts(per_category, seed=VALIDATION_SEED)
    scores = {}
    for guidance in candidates:
        engine.model.config = replace(engine.model.config, default_guidance=guidance)
        report = score(engine, prompts, tries=1)
        scores[guidance] = round(sum(report[category]["first_try"] for category in CATEGORIES) / len(CATEGORIES), 4)
    best = max(scores, key=scores.get)
    config = json.loads((model_folder / CONFIG_FILE).read_text())
    config["default_guidance"] = best
    (model_folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    logger.info("guidance on %d validation prompts: %s; default set to %s", len(prompts), scores, best)
    return {"validation_scores": {str(key): value for key, value in scores.items()}, "chosen": best}


def model_card(summary: dict) -> str:
    from training.text_to_image_eval import format_report

    train = summary["train"]
    held, other = summary["eval"]["held_out"], summary["eval"]["independent"]
    config = train["model_config"]
    raw = summary.get("prompt_only")
    raw_text = "" if raw is None else f"""
**The prompt alone** (`--no-plan`: no planner, no layout map; the {raw['held_out']['prompts']} held-out prompts, first try):

{format_report(raw['held_out'])}
"""
    return f"""# Built-in text-to-image scene model

A diffusers `UNet2DConditionModel` ({train['parameters'] / 1e6:.1f} M parameters, stored in 16-bit) that draws
{config['resolution']}x{config['resolution']} pictures in pixel space, folded into {config['patch']}-pixel cells (block widths
{', '.join(str(width) for width in config['channels'])}), sampled
with DDIM ({config['default_steps']} steps, classifier-free guidance {summary['guidance']['chosen']}, chosen on validation
prompts: {summary['guidance']['validation_scores']}). Trained from scratch by `python -m training.recipes.build_text_to_image`
in {train['train_time_s'] / 60:.1f} minutes on a 2-core CPU ({train['steps']} steps of {train['batch_size']} fresh scenes).

**How a prompt becomes a picture.** A layout planner in plain code (`plugins/text_to_image/layout.py`) reads the
prompt with the checker's parser, gives every object it names a colour, size and region where the prompt leaves
them open ("three stars" becomes three large stars of different colours in three regions), and a box in its
region. The UNet reads the completed prompt (token states of the packaged all-MiniLM-L6-v2, frozen) through
cross-attention, and a layout map beside the noisy picture: per pixel, whether it lies in a box and where in that
box; per cell, the sentence vector of that object's phrase ("a large red star"). The planner decides where and
how many; the model decides every pixel: the shape inside each box, its colour, the background.

**It knows only the scene domain** of `training/data/scene_layout.py`: circles, squares, triangles and stars in
eight colours (red, green, blue, yellow, purple, orange, black, white), small or large, on the left, right, top,
bottom or in the center of a plain light background, one to four at a time. **It cannot** draw anything else:
other objects, textures, text, photographs or people come out as coloured shapes or noise. Not for any use beyond
trying the plugin.

**Scores** (`python -m training.evaluate --task text_to_image`; each prompt drawn up to {held['tries']} times, judged
by the plugin's independent checker), {held['prompts']} held-out prompts:

{format_report(held)}

The same requests in wording the training prompts never use ("one big red ball", "a blue box below", "3 stars"):

{format_report(other)}

The planner reads prompts with the checker's own parser, so both sets measure the parser's synonyms as much as the
model; the prompt-only figures below are the model's own reading of the words. Nearly all it knows of what to draw
where comes through the layout map: with the planner switched off (`plan_layout: false` in `scene_model.json`) it
mostly draws the wrong things.
{raw_text}
Seconds per picture (median, this CPU): {held['seconds_per_picture_median']}.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.recipes.build_text_to_image", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/t2i", help="working folder")
    parser.add_argument("--steps", type=int, default=None, help="override the training steps")
    parser.add_argument("--per-category", type=int, default=50, help="evaluation prompts per category")
    parser.add_argument("--install", action="store_true", help=f"copy the model into {SHIPPED}")
    parser.add_argument("--install-only", action="store_true", help="install the finished run in --out without training")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    summary_path = out / "build_summary.json"
    if not args.install_only:
        from training.text_to_image import TextToImageTrainConfig, train
        from training.text_to_image_eval import main as evaluate

        started = time.perf_counter()
        train_report = train(TextToImageTrainConfig(out=str(out), **({"steps": args.steps} if args.steps else {})))
        logger.info("training wall time: %.1f min", (time.perf_counter() - started) / 60)
        guidance = choose_guidance(out / "model")
        report = evaluate(["--model", str(out / "model"), "--per-category", str(args.per_category), "--out", str(out / "eval_report.json")])
        prompt_only = evaluate(["--model", str(out / "model"), "--per-category", str(args.per_category), "--tries", "1", "--no-plan",
                                "--out", str(out / "eval_prompt_only.json")])
        for part in ("held_out", "independent"):
            report[part].pop("answers", None)
            prompt_only[part].pop("answers", None)
        sample_sheet(out / "model", out / "samples.png")
        summary_path.write_text(json.dumps({"train": train_report, "guidance": guidance, "eval": report, "prompt_only": prompt_only},
                                           indent=2) + "\n")
    if args.install or args.install_only:
        if not summary_path.is_file():
            parser.error(f"{summary_path} does not exist: run the recipe with --out {out} first")
        from plugins.text_to_image.scene_model import CONFIG_FILE
        from training.recipes.build_default import install_adapter

        summary = json.loads(summary_path.read_text())
        install_adapter(out / "model", SHIPPED, lambda: model_card(summary), marker=CONFIG_FILE, what="scene model")
    return 0


if __name__ == "__main__":
    sys.exit(main())
