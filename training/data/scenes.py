"""A deterministic synthetic visual domain: coloured shapes on plain backgrounds, with questions.

Each scene (1-6 circles/squares/triangles/stars in 8 colours, 2 sizes, 5 position words; see
``scene_layout``) is rendered to ``images/{split}_{index:06d}.png`` and yields one row per question
type it supports: colour, shape, count, position, existence, caption, a 3-4 turn ``multi_turn``
dialogue, and a two-image ``comparison`` with the previous scene of the split. Rows are written
as typed messages (``{split}.jsonl``) and/or LLaVA conversations (``{split}_llava.json``), with
image paths relative to the output folder; ``{split}_scenes.jsonl`` keeps each scene's seed and
objects and ``summary.json`` the row counts per question type.

Scene ``index`` of ``split`` is drawn from ``scene_seed(seed, split, index)``; the same seed gives
byte-identical PNGs and identical rows, and the splits use disjoint seeds (checked). Answer
conventions are in ``scene_questions``. This module knows nothing about models or tokenizers.

    python -m training.data.scenes --out data/scenes --train 5000 --val 500 --test 500 --seed 0
    python -m training.data.scenes --examples examples   # scene_1..3.png + examples.json
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from tqdm import tqdm

from assistant.cli_args import add_dataclass_arguments, dataclass_kwargs
from training.data.scene_layout import SceneConfig, Scene, SceneObject, generate_scene
from training.data.scene_questions import (
    QA,
    QUESTION_TYPES,
    caption,
    colour_question,
    comparison,
    count_question,
    dialogue,
    position_question,
    questions,
)
from training.data.scene_render import render, scene_png
from training.data.scene_writers import FORMATS, Sample, llava_row, messages_row, open_row_files

__all__ = [
    "QA", "QUESTION_TYPES", "Scene", "SceneConfig", "SceneObject", "DatasetConfig", "build_dataset",
    "caption", "comparison", "dialogue", "generate_scene", "llava_row", "messages_row",
    "questions", "render", "scene_seed", "write_examples",
]

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
IMAGE_DIR = "images"
EXAMPLE_TYPES = ("colour", "count", "position")


@dataclass
class DatasetConfig:
    """What to generate and where; the command line is built from these fields."""

    out: str | None = field(default=None, metadata={"help": "output folder (images/, {split}.jsonl, summary.json)"})
    train: int = field(default=1000, metadata={"help": "training scenes"})
    val: int = field(default=100, metadata={"help": "validation scenes"})
    test: int = field(default=100, metadata={"help": "test scenes"})
    seed: int = field(default=0, metadata={"help": "base seed; every scene seed is derived from it"})
    format: str = field(default="both", metadata={"help": "row format", "choices": FORMATS})
    examples: str | None = field(default=None, metadata={"help": "also write scene_1..3.png + examples.json here"})
    pack_questions: bool = field(
        default=False,
        metadata={"help": "train split: one shuffled dialogue per scene holding all its questions (image tokens paid once)"},
    )
    scene: SceneConfig = field(default_factory=SceneConfig)

    def __post_init__(self) -> None:
        if min(self.train, self.val, self.test) < 0:
            raise ValueError("scene counts must be >= 0")
        if self.format not in FORMATS:
            raise ValueError(f"unknown format {self.format!r}; expected one of {FORMATS}")

    def scenes_in(self, split: str) -> int:
        return {"train": self.train, "val": self.val, "test": self.test}[split]


def scene_seed(seed: int, split: str, index: int) -> int:
    """The 64-bit seed of scene ``index`` of ``split``, derived from the base ``seed`` by hashing."""
    digest = hashlib.sha256(f"scenes/{seed}/{split}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def scene_record(scene: Scene, seed: int, image: str) -> dict[str, Any]:
    """The ground truth of one scene as a JSON-ready dict."""
    objects = [dataclasses.asdict(obj) for obj in scene.objects]
    return {"image": image, "seed": seed, "background": list(scene.background), "objects": objects}


def scene_regions(scene: Scene, image: int = 0) -> tuple[dict[str, Any], ...]:
    """Each object's box (fractions of the canvas) and words, "large red circle left", for picture ``image``."""
    side = scene.canvas_size
    return tuple(
        {"image": image, "box": [round(v / side, 4) for v in obj.bbox], "text": f"{obj.size} {obj.colour} {obj.shape} {obj.position}"}
        for obj in scene.objects
    )


def scene_samples(scene: Scene, rng: random.Random, name: str, image: str, pack: bool = False) -> list[Sample]:
    """The single-image rows of one scene: one per supported question type plus a dialogue.

    With ``pack``, the per-type questions (two draws, duplicates removed) become one shuffled
    dialogue instead, so training pays for the image's tokens once per scene.
    """
    regions = scene_regions(scene)
    if pack:
        unique = {qa.question: qa for qa in questions(scene, rng) + questions(scene, rng)}
        captions = [qa for qa in unique.values() if qa.question_type == "caption"]
        packed = [qa for qa in unique.values() if qa.question_type != "caption"] + captions[:1]
        rng.shuffle(packed)
        return [
            Sample(f"{name}_packed", (image,), tuple(packed), "multi_turn", regions),
            Sample(f"{name}_multi_turn", (image,), tuple(dialogue(scene, rng)), "multi_turn", regions),
        ]
    samples = [Sample(f"{name}_{qa.question_type}", (image,), (qa,), qa.question_type, regions) for qa in questions(scene, rng)]
    samples.append(Sample(f"{name}_multi_turn", (image,), tuple(dialogue(scene, rng)), "multi_turn", regions))
    return samples


def build_split(root: Path, split: str, config: DatasetConfig) -> dict[str, Any]:
    """Write one split's images, rows and scene records; returns its counts."""
    counts = dict.fromkeys(QUESTION_TYPES, 0)
    files = open_row_files(root, split, config.format)
    previous: tuple[Scene, str] | None = None
    seeds = []
    with open(root / f"{split}_scenes.jsonl", "w", encoding="utf-8") as records:
        try:
            for index in tqdm(range(config.scenes_in(split)), desc=split, unit="scene", leave=False):
                seed = scene_seed(config.seed, split, index)
                seeds.append(seed)
                rng = random.Random(seed)
                scene = generate_scene(rng, config.scene)
                name = f"{split}_{index:06d}"
                image = f"{IMAGE_DIR}/{name}.png"
                (root / image).write_bytes(scene_png(scene))
                records.write(json.dumps(scene_record(scene, seed, image)) + "\n")
                samples = scene_samples(scene, rng, name, image, pack=config.pack_questions and split == "train")
                if previous is not None:
                    pair = [previous, (scene, image)]
                    rng.shuffle(pair)
                    # Packed training rows ask up to three different comparisons about the same pair.
                    asks = 3 if config.pack_questions and split == "train" else 1
                    unique = {qa.question: qa for qa in (comparison(pair[0][0], pair[1][0], rng) for _ in range(asks)) if qa}
                    if unique:
                        regions = scene_regions(pair[0][0], 0) + scene_regions(pair[1][0], 1)
                        samples.append(
                            Sample(f"{name}_comparison", (pair[0][1], pair[1][1]), tuple(unique.values()), "comparison", regions)
                        )
                previous = (scene, image)
                for sample in samples:
                    counts[sample.question_type] += 1
                    for row_file in files:
                        row_file.write(sample)
        finally:
            for row_file in files:
                row_file.close()
    return {"scenes": len(seeds), "rows": sum(counts.values()), "question_types": counts, "seeds": seeds}


def build_dataset(config: DatasetConfig) -> dict[str, Any]:
    """Write every split under ``config.out`` plus ``summary.json``; returns the summary.

    Raises:
        ValueError: If ``config.out`` is unset or two splits would share a scene seed.
    """
    if not config.out:
        raise ValueError("build_dataset needs an output folder (config.out)")
    root = Path(config.out)
    (root / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    splits, owner = {}, {}
    for split in SPLITS:
        result = build_split(root, split, config)
        for seed in result.pop("seeds"):
            if owner.setdefault(seed, split) != split:
                raise ValueError(f"scene seed {seed} is used by both {owner[seed]} and {split}")
        splits[split] = result
    totals = {kind: sum(s["question_types"][kind] for s in splits.values()) for kind in QUESTION_TYPES}
    summary = {
        "seed": config.seed,
        "format": config.format,
        "scene": dataclasses.asdict(config.scene),
        "splits": splits,
        "question_types": totals,
        "rows": sum(totals.values()),
    }
    (root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def write_examples(directory: str | Path, seed: int = 0, config: SceneConfig = SceneConfig()) -> list[dict[str, Any]]:
    """Write ``scene_1.png``..``scene_3.png`` (2-4 objects each) and ``examples.json`` holding one
    colour, count and position question with its answer per image; returns the entries."""
    makers = {"colour": colour_question, "count": count_question, "position": position_question}
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    entries, index = [], 0
    for number, question_type in enumerate(EXAMPLE_TYPES, start=1):
        while True:
            seed_here = scene_seed(seed, "examples", index)
            index += 1
            rng = random.Random(seed_here)
            scene = generate_scene(rng, config)
            qa = makers[question_type](scene, rng) if 2 <= len(scene.objects) <= 4 else None
            if qa is not None and (question_type != "count" or int(qa.answer) >= 2):
                break
        image = f"scene_{number}.png"
        (root / image).write_bytes(scene_png(scene))
        entries.append({"image": image, "question": qa.question, "answer": qa.answer,
                        "question_type": question_type, "scene_seed": seed_here})
    (root / "examples.json").write_text(json.dumps(entries, indent=2) + "\n", encoding="utf-8")
    return entries


def parse_args(argv: Sequence[str] | None = None) -> DatasetConfig:
    """``DatasetConfig`` (with its ``SceneConfig``) from command-line flags."""
    parser = argparse.ArgumentParser(prog="python -m training.data.scenes", description=__doc__.split("\n\n")[0])
    add_dataclass_arguments(parser, DatasetConfig)
    add_dataclass_arguments(parser, SceneConfig)
    args = parser.parse_args(argv)
    options = dataclass_kwargs(args, DatasetConfig)
    if options.get("format", "both") not in FORMATS:
        parser.error(f"--format must be one of {FORMATS}")
    if not options.get("out") and not options.get("examples"):
        parser.error("give --out (a data set), --examples (UI examples) or both")
    return DatasetConfig(**options, scene=SceneConfig(**dataclass_kwargs(args, SceneConfig)))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line: build the data set and/or the examples; logs a one-line summary."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = parse_args(argv)
    summary: dict[str, Any] = {}
    if config.out:
        summary = build_dataset(config)
        per_split = ", ".join(f"{split} {s['scenes']} scenes/{s['rows']} rows" for split, s in summary["splits"].items())
        logger.info("wrote %s: %s; rows per type %s", config.out, per_split, summary["question_types"])
    if config.examples:
        entries = write_examples(config.examples, config.seed, config.scene)
        logger.info("wrote %d examples to %s", len(entries), config.examples)
    return summary


if __name__ == "__main__":
    main()
