"""Build the built-in default adapter from nothing, offline, on a CPU:

    python -m training.recipes.build_default [--out runs/default] [--install]

1. generate the synthetic scene domain (train rows packed into one dialogue per scene),
   and its audio rows (``training.data.audio_rows``: spoken questions about the pictures, sounds, "what did I say?"),
2. ``align``: train the image connector alone with the lexical objective (``default_align.yaml``,
   ``training.grounding``): its tokens learn to point at the LLM's words for what they show;
   ``align_audio``: the audio connector alone, CTC onto the LLM's words (``default_align_audio.yaml``,
   ``training.audio_alignment``),
3. ``instruct``: connector + LoRA, starting from stage 1 (``default_instruct.yaml``), on the scene rows
   mixed with text-only rows the base LLM answered itself (``training.data.text_rows``), so LoRA
   learns the new domain without rewriting the LLM's plain-text answers; one copy of those rows
   follows a question about a picture, so a general question later in a picture chat is answered too,
4. evaluate on the held-out test split (``training.evaluate``),
5. with ``--install``, copy the adapter into ``assistant/default_adapter`` with a model card
   (``--install-only`` does this for a run already finished in ``--out``).

Flags override the connector and the budget, so the same command measures connector choices.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

from assistant.config import ConnectorConfig
from training.config import load_train_config
from training.trainer import Trainer

logger = logging.getLogger("training.recipes.build_default")
RECIPES = Path(__file__).resolve().parent
SHIPPED = RECIPES.parents[1] / "assistant" / "default_adapter"
# llama.cpp on f16 merged weights when llama-cpp-python is installed, else eager: within 1 point of eager on every
# question type of a 200-scene test split, 3.1x faster per answer (README, "Decode speed").
SHIPPED_SERVING, SHIPPED_GGUF_TYPE = "auto", "f16"
RUN_ARGS = ("train_scenes", "test_scenes", "connector", "num_latents", "tokens_per_cell", "select_cells", "text_repeats", "audio_questions")  # what the model card names


def run_stage(
    recipe: str, out: Path, train_file: Path, data: Path, overrides: list[str], connector: ConnectorConfig | None = None,
    validate: bool = True,
) -> dict:
    """Train one stage; ``connector`` replaces the recipe's (the instruct stage inherits it from ``--base``);
    ``validate`` scores the scene validation rows at the end."""
    argv = [
        "--config", str(RECIPES / recipe), "--output-dir", str(out), "--data.train-file", str(train_file),
        *(["--data.val-file", str(data / "val.jsonl")] if validate else []), *overrides,
    ]
    config = load_train_config(argv)
    if connector is not None:
        config.model.modalities["image"].connector = connector
    return Trainer(config).train()


def audio_align_rows(data: Path) -> Path:
    """The audio alignment stage's rows: every training clip alone, with its transcript as the answer
    (pictures left out, so the image connector is untouched)."""
    rows = [json.loads(line) for line in (data / "train_audio.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    path = data / "audio_align_train.jsonl"
    with open(path, "w", encoding="utf-8") as out:
        for row in rows:
            for part in row["messages"][0]["content"]:
                if part["type"] == "audio":
                    messages = [
                        {"role": "user", "content": [part, {"type": "text", "text": "What did I say?"}]},
                        {"role": "assistant", "content": [{"type": "text", "text": part["transcript"]}]},
                    ]
                    out.write(json.dumps({"id": row["id"], "messages": messages}) + "\n")
    return path


def instruct_rows(data: Path, text_repeats: int) -> Path:
    """The instruct stage's rows: every scene row, every audio row (``training.data.audio_rows``) and
    ``text_repeats`` copies of the distilled text rows."""
    from assistant import Assistant
    from assistant.config import AssistantConfig
    from training.data.text_rows import distill_text_rows, load_prompts, write_text_rows

    text_file, mixed = data / "text_rows.jsonl", data / "instruct_train.jsonl"
    if not text_file.is_file():
        write_text_rows(text_file, distill_text_rows(Assistant.from_config(AssistantConfig()), load_prompts()))
    text_rows = [json.loads(line) for line in text_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    scene_text = (data / "train.jsonl").read_text(encoding="utf-8")
    scene_rows = [json.loads(line) for line in scene_text.splitlines() if line.strip()]
    openers = [row for row in scene_rows if row["id"].endswith("_packed")] or scene_rows
    with open(mixed, "w", encoding="utf-8") as out:
        out.write(scene_text)
        if (data / "train_audio.jsonl").is_file():
            out.write((data / "train_audio.jsonl").read_text(encoding="utf-8"))
        for repeat in range(text_repeats):
            for number, row in enumerate(text_rows):
                messages = row["messages"]
                if repeat == 0 and openers:  # after a turn about a picture, so chats that began with one keep them
                    messages = openers[number % len(openers)]["messages"][:2] + messages
                out.write(json.dumps({"id": f"{row['id']}_{repeat}", "messages": messages}) + "\n")
    logger.info(
        "instruct rows: scene rows + %d x %d distilled text rows (the first copy after a picture question)",
        text_repeats, len(text_rows),
    )
    return mixed


SOUND_NAMES = {
    "beeps": "count beeps", "pitch": "tell rising from falling pitch",
    "higher": "tell which of two tones is higher", "silence": "tell silence from noise",
}


def model_card(summary: dict, args: argparse.Namespace) -> str:
    """A short card: what the adapter was trained on, what it can and cannot see, its scores."""
    from training.evaluate import format_table

    by_type = sorted(summary["test"]["accuracy_by_type"].items(), key=lambda item: item[1])
    weakest = " and ".join(f"{name} questions ({accuracy:.0%})" for name, accuracy in by_type[:2])
    if args.connector == "mlp" and args.select_cells:
        connector = (f"`mlp` connector with a 2-D position signal, which passes on the {args.select_cells} grid cells it "
                     f"scores most likely to hold an object, {args.tokens_per_cell} tokens each (one per word: size, "
                     f"colour, shape, position)")
    elif args.connector == "mlp":
        connector = "`mlp` connector with a 2-D position signal, one token per cell of the 7x7 grid"
    else:
        connector = f"`resampler` connector ({args.num_latents} latents) with a 2-D position signal"
    audio = summary.get("audio_test")
    audio_scores = ""
    if audio:
        from training.audio_eval import format_audio_table

        audio_scores = f"""

**Audio scores** (`python -m training.evaluate --task audio --data <run>/data`): spoken questions about held-out
scenes against the same questions typed, sounds, and an independent check (other wording, unseen voices, sounds
made another way):

{format_audio_table(audio)}"""
    hearing = ""
    if audio:
        sounds = audio["held_out"]["sound_accuracy_by_type"]
        good = [kind for kind, value in sounds.items() if value >= 0.85]
        weak = [f"{SOUND_NAMES.get(kind, kind)} ({value:.0%})" for kind, value in sounds.items() if value < 0.85]
        hearing = (f", and {' and '.join(SOUND_NAMES.get(kind, kind) for kind in good)}" if good else "") + (
            f"; it has not learnt to {' or to '.join(weak)}" if weak else "")
    return f"""# Built-in default adapter

EfficientNet-Lite0 (frozen, ImageNet; block-5 tokens on a 7x7 grid) -> {connector} -> SmolLM2-135M-Instruct with
LoRA (r=16 on every linear layer); Whisper base's encoder (frozen, the packaged CTranslate2 model, 50 frames per
second) -> `stack` connector (8 frames per token: 6.25 tokens per second of audio) -> the same LLM. Built offline on a
2-core CPU by `python -m training.recipes.build_default --install` in {summary["train_wall_time_min"]} minutes
(data generation; `align` with the lexical objective, image connector only, {summary["align"]["steps"]} steps;
`align_audio`, CTC onto the LLM's words, audio connector only, {summary.get("align_audio", {}).get("steps", 0)} steps;
`instruct`, LoRA with slow connectors, {summary["instruct"]["steps"]} steps).

**Trained on** {args.train_scenes} synthetic scenes from `training/data/scenes.py`: 1-6 circles, squares,
triangles and stars in 8 colours and 2 sizes, at left/right/top/bottom/center, on plain light
backgrounds; questions about colour, shape, count, position, existence, captions, short dialogues
and two-image comparisons; plus {args.text_repeats} copies of 120 general text prompts answered by the base LLM;
plus audio made offline (`training/data/audio_rows.py`): {getattr(args, "audio_questions", 1200)} questions about the scenes
spoken by espeak-ng (8 voices, 125-200 words per minute, varied pitch, a third with background noise), sounds made
with numpy (how many beeps, rising or falling pitch, which of two tones is higher, silence or noise) and "what did I
say?" rows.

**It can hear** spoken questions of those kinds about a picture{hearing}. **It cannot** follow
real speech the way a speech recogniser does: it has heard one synthetic speaker family (espeak-ng) asking a few
kinds of question; other speech, music and everyday sounds are outside its training. For a transcript use the
`transcribe_audio` plugin (Whisper base).

**It can** answer those question types about pictures of that kind, about as often as the table
below says; it is least reliable on {weakest}. **It cannot** see anything else: photographs, text in
images, other shapes or layouts are outside what it was trained on, and its answers about them are
guesses. Not for any decision that matters.

**Scores** on {args.test_scenes} held-out test scenes (`python -m training.evaluate`):

{format_table(summary["test"])}{audio_scores}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.recipes.build_default", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/default", help="working folder (data, stages, report)")
    parser.add_argument("--train-scenes", type=int, default=1500, help="training scenes (one packed dialogue + one follow-up dialogue each)")
    parser.add_argument("--test-scenes", type=int, default=60, help="held-out test scenes")
    parser.add_argument("--connector", default="mlp", help="connector kind: mlp | resampler")
    parser.add_argument("--num-latents", type=int, default=32, help="resampler output tokens")
    parser.add_argument("--tokens-per-cell", type=int, default=4, help="mlp: tokens per chosen grid cell (one per word of an object)")
    parser.add_argument("--select-cells", type=int, default=8, help="mlp: grid cells passed on per picture (0: all 49)")
    parser.add_argument("--align-steps", type=int, default=None, help="override the align recipe's steps")
    parser.add_argument("--audio-align-steps", type=int, default=None, help="override the audio align recipe's steps")
    parser.add_argument("--instruct-steps", type=int, default=None, help="override the instruct recipe's steps")
    parser.add_argument("--audio-questions", type=int, default=1200, help="spoken-question training rows (sounds: as many, said: a third as many)")
    parser.add_argument("--text-repeats", type=int, default=3, help="copies of the distilled text rows in instruct")
    parser.add_argument("--eval-rows", type=int, default=None, help="evaluate only the first N test rows")
    parser.add_argument("--install", action="store_true", help="copy the result into assistant/default_adapter")
    parser.add_argument(
        "--install-only", action="store_true", help="install the finished run in --out (its build_summary.json) without training"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    if args.install_only:
        summary_path = out / "build_summary.json"
        if not summary_path.is_file():
            parser.error(f"{summary_path} does not exist: run the recipe with --out {out} first")
        summary = json.loads(summary_path.read_text())
        if summary.get("audio_test") is None and (out / "audio_report.json").is_file():  # evaluated after the run
            summary["audio_test"] = {name: {k: v for k, v in part.items() if k != "answers"}
                                     for name, part in json.loads((out / "audio_report.json").read_text()).items()}
        run_args = summary.get("args", {})
        if run_args and "select_cells" not in run_args:  # a run from before the cell options: one token per cell
            run_args = {"tokens_per_cell": 1, "select_cells": 0, **run_args}
        install(summary, argparse.Namespace(**{**vars(args), **run_args}), out)
        return 0
    data = out / "data"
    started = time.perf_counter()
    if not (data / "summary.json").is_file():
        from training.data.scenes import main as make_scenes

        make_scenes(["--out", str(data), "--train", str(args.train_scenes), "--val", "40", "--test", str(args.test_scenes),
                     "--seed", "0", "--format", "messages", "--pack-questions"])
    if not (data / "audio_summary.json").is_file():
        from training.data.audio_rows import main as make_audio

        make_audio(["--scenes", str(data), "--out", str(data), "--train", str(args.audio_questions), "--test", "300"])
    connector = ConnectorConfig(
        kind=args.connector, num_latents=args.num_latents, position_embedding="sincos2d",
        tokens_per_cell=args.tokens_per_cell, select_cells=args.select_cells,
    )
    align_overrides = ["--optim.max-steps", str(args.align_steps)] if args.align_steps else []
    instruct_overrides = ["--optim.max-steps", str(args.instruct_steps)] if args.instruct_steps else []
    align = run_stage("default_align.yaml", out / "align", data / "train.jsonl", data, align_overrides, connector)
    audio_overrides = ["--optim.max-steps", str(args.audio_align_steps)] if args.audio_align_steps else []
    align_audio = run_stage(
        "default_align_audio.yaml", out / "align_audio", audio_align_rows(data), data, ["--base", align["adapter"], *audio_overrides],
        validate=False,
    )
    mixed = instruct_rows(data, args.text_repeats)
    instruct = run_stage(
        "default_instruct.yaml", out / "instruct", mixed, data, ["--base", align_audio["adapter"], *instruct_overrides]
    )
    train_minutes = (time.perf_counter() - started) / 60
    logger.info("training wall time (data + align + instruct): %.1f min", train_minutes)

    from training.evaluate import main as evaluate

    report_path = out / "test_report.json"
    limit = ["--max-rows", str(args.eval_rows)] if args.eval_rows else []
    evaluate(["--adapter", instruct["adapter"], "--data", str(data / "test.jsonl"), "--out", str(report_path), *limit])
    report = json.loads(report_path.read_text())
    report.pop("answers", None)
    audio_report = out / "audio_report.json"
    evaluate(["--task", "audio", "--adapter", instruct["adapter"], "--data", str(data), "--out", str(audio_report)])
    audio = json.loads(audio_report.read_text()) if audio_report.is_file() else None
    for part in (audio or {}).values():
        part.pop("answers", None)
    summary = {
        "train_wall_time_min": round(train_minutes, 1), "align": align, "align_audio": align_audio, "instruct": instruct,
        "test": report, "audio_test": audio,
        "args": {key: getattr(args, key) for key in RUN_ARGS},
    }
    (out / "build_summary.json").write_text(json.dumps(summary, indent=2))
    if args.install:
        install(summary, args, out)
    return 0


def install(summary: dict, args: argparse.Namespace, out: Path) -> None:
    """Copy the run's instruct adapter into ``assistant/default_adapter`` with its model card; the image head,
    trained apart (``training.image_head``) on the frozen encoder alone, stays."""
    install_adapter(out / "instruct" / "adapter", SHIPPED, lambda: model_card(summary, args), keep=("image_head",))
    config_file = SHIPPED / "assistant_config.json"  # trained and evaluated eager; served as SHIPPED_SERVING says
    config = json.loads(config_file.read_text())
    config.setdefault("llm", {})["serving"] = SHIPPED_SERVING
    config.setdefault("engine", {})["gguf_type"] = SHIPPED_GGUF_TYPE
    config_file.write_text(json.dumps(config, indent=2) + "\n")


def install_adapter(source: Path, target: Path, card: Callable[[], str], keep: tuple[str, ...] = (),
                    marker: str = "assistant_config.json", what: str = "adapter") -> None:
    """Replace ``target`` by a copy of the adapter (or other model folder, recognised by its ``marker`` file) in
    ``source`` with ``card()`` as its MODEL_CARD.md (written only once the folder is found), keeping the ``keep``
    entries of the old ``target``; ``target`` is replaced only once the new folder is complete."""
    if not (source / marker).is_file():
        raise SystemExit(f"{source} holds no {what} ({marker} is missing): nothing installed")
    staging = target.with_name(target.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    (staging / "MODEL_CARD.md").write_text(card())
    for name in keep:
        if (target / name).is_dir() and not (staging / name).exists():
            shutil.copytree(target / name, staging / name)
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    logger.info("installed %s into %s", source, target)


if __name__ == "__main__":
    sys.exit(main())
