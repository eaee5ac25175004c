"""Train the image head that puts pictures into the text embedder's space (CLIP-style, symmetric InfoNCE).

    python -m training.image_head --out runs/image_head                 # generated scenes, ~10 min on 2 cores
    python -m training.image_head --out runs/mine --data captions.jsonl  # your own captioned pictures
    python -m training.image_head --out runs/image_head --install        # also replace the shipped head

The frozen encoder's tokens for every picture and the frozen text embedder's vectors for every
caption are computed once (progress bars), then only the small head trains, on those cached
tensors. Pairs with identical content (scenes can repeat) are not used as each other's negatives.
``--data`` is a JSONL file of ``{"image": path, "caption": text}`` rows (paths relative to the file),
such as ``python -m plugins.captioning`` writes.

At the end it reports text->picture and picture->text Recall@1/5/10 on held-out pictures (the query
is the picture's caption; a retrieved picture whose content equals the query's counts as a hit)
and on an independently written check (``training.image_head_check``: other wording, other
renderings), writes ``report.json`` and the head to ``--out``. It knows nothing about indexes.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from adapters.image_text_head import symmetric_info_nce
from assistant.cli_args import add_dataclass_arguments, dataclass_kwargs
from assistant.config import EncoderConfig, MediaConfig
from assistant.errors import AssistantError
from assistant.image_text import SHIPPED_IMAGE_HEAD, ImageTextModel
from assistant.media import load_image
from training.data.scene_layout import generate_scene
from training.data.scene_questions import caption
from training.data.scene_render import render
from training.data.scenes import scene_seed

logger = logging.getLogger(__name__)


@dataclass
class ImageHeadConfig:
    """What to train on and how; the command line is built from these fields."""

    out: str = field(default="runs/image_head", metadata={"help": "output folder: the head, report.json"})
    data: str | None = field(default=None, metadata={"help": "JSONL of {image, caption} rows; default: generated scenes"})
    train_scenes: int = field(default=6000, metadata={"help": "generated training scenes (without --data)"})
    test_scenes: int = field(default=1000, metadata={"help": "held-out scenes (or rows of --data) for the recall figures"})
    seed: int = field(default=0, metadata={"help": "scene seeds and initialisation"})
    text_model: str = field(default="default", metadata={"help": "sentence-transformers model whose space the head targets"})
    encoder: str = field(default="efficientnet_lite0", metadata={"help": "frozen image encoder (registry key)"})
    encoder_model: str | None = field(default=None, metadata={"help": "its Hugging Face id or folder (hf_vision)"})
    steps: int = field(default=2500, metadata={"help": "optimiser steps"})
    batch_size: int = field(default=256, metadata={"help": "pairs per step (each batch's other pairs are the negatives)"})
    learning_rate: float = field(default=2e-3, metadata={"help": "AdamW peak learning rate (cosine decay)"})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay"})
    warmup_steps: int = field(default=100, metadata={"help": "linear warm-up steps"})
    install: bool = field(default=False, metadata={"help": f"copy the trained head to {SHIPPED_IMAGE_HEAD}"})

    def __post_init__(self) -> None:
        for name in ("train_scenes", "test_scenes", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise AssistantError(f"{name} must be at least 1, got {getattr(self, name)}")


@dataclass
class Pairs:
    """Pictures, their captions, and a content key per picture (equal keys = identical content)."""

    images: list[Image.Image]
    captions: list[str]
    keys: list[Hashable]


def scene_key(scene: Any) -> Hashable:
    """Identical content: the same objects (size, colour, shape, position); the background is ignored."""
    return tuple(sorted((o.size, o.colour, o.shape, o.position) for o in scene.objects))


def scene_pairs(count: int, seed: int, split: str) -> Pairs:
    """``count`` generated scenes of ``split`` (its own seeds), rendered, with their captions."""
    scenes = [generate_scene(random.Random(scene_seed(seed, split, index))) for index in range(count)]
    return Pairs([render(scene) for scene in scenes], [caption(scene) for scene in scenes], [scene_key(s) for s in scenes])


def file_pairs(path: Path) -> Pairs:
    """Rows ``{"image", "caption"}`` of a JSONL file; a bad row stops with its line number."""
    images, captions = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            image_path, text = row["image"], row["caption"]
            if not isinstance(text, str) or not text.strip():
                raise ValueError("the caption is empty")
            images.append(load_image(str((path.parent / image_path).resolve()), MediaConfig()).frames[0].image)
        except (ValueError, KeyError, TypeError, AssistantError) as error:
            raise AssistantError(f"{path}:{number}: {type(error).__name__}: {error}") from None
        captions.append(text.strip())
    if len(images) < 2:
        raise AssistantError(f"{path} has {len(images)} usable rows; contrastive training needs many")
    return Pairs(images, captions, list(captions))  # identical captions = identical content


def recall_at(query: np.ndarray, candidates: np.ndarray, query_keys: Sequence[Hashable], candidate_keys: Sequence[Hashable],
              ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@k: the share of queries with a candidate of the same content among their ``k`` nearest."""
    scores = query @ candidates.T  # (Q, C)
    order = np.argsort(-scores, axis=1)[:, : max(ks)]
    candidate_keys = np.array([hash(key) for key in candidate_keys])
    hits = candidate_keys[order] == np.array([hash(key) for key in query_keys])[:, None]  # (Q, max k)
    return {f"R@{k}": round(float(hits[:, :k].any(axis=1).mean()), 4) for k in ks}


def retrieval_report(embed_images: Callable[[list[Image.Image]], np.ndarray], embed_texts: Callable[[list[str]], np.ndarray],
                     pairs: Pairs) -> dict[str, Any]:
    """Text->picture and picture->text recall over ``pairs`` (captions as the text side)."""
    pictures = np.concatenate([embed_images(pairs.images[start : start + 64])
                               for start in tqdm(range(0, len(pairs.images), 64), desc="embed pictures", unit="x64")])
    texts = embed_texts(pairs.captions)
    return {"pictures": len(pairs.images),
            "text_to_picture": recall_at(texts, pictures, pairs.keys, pairs.keys),
            "picture_to_text": recall_at(pictures, texts, pairs.keys, pairs.keys)}


def train(config: ImageHeadConfig) -> dict[str, Any]:
    """Train, evaluate and save the head; returns the report."""
    from assistant.embedders import TextEmbedder
    from training.image_head_check import independent_pairs

    started = time.perf_counter()
    torch.manual_seed(config.seed)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    if config.data:
        everything = file_pairs(Path(config.data))
        cut = max(1, len(everything.images) - config.test_scenes)
        train_pairs = Pairs(everything.images[:cut], everything.captions[:cut], everything.keys[:cut])
        test_pairs = Pairs(everything.images[cut:], everything.captions[cut:], everything.keys[cut:])
    else:
        train_pairs = scene_pairs(config.train_scenes, config.seed, "image_head_train")
        test_pairs = scene_pairs(config.test_scenes, config.seed, "image_head_test")
    text_embedder = TextEmbedder(config.text_model)
    model = ImageTextModel.create(EncoderConfig(kind=config.encoder, model=config.encoder_model), text_embedder.dim, config.text_model)
    logger.info("encoding %d training pictures with the frozen encoder", len(train_pairs.images))
    tokens = torch.cat([model.encode_tokens(train_pairs.images[start : start + 256])
                        for start in tqdm(range(0, len(train_pairs.images), 256), desc="encode pictures", unit="x256")])
    texts = torch.from_numpy(text_embedder.embed_texts(train_pairs.captions))  # (N, D), frozen targets
    key_ids = torch.tensor([hash(key) for key in train_pairs.keys])
    prepared_s = time.perf_counter() - started

    head = model.head.train()
    decay = [p for n, p in head.named_parameters() if p.dim() > 1]
    rest = [p for n, p in head.named_parameters() if p.dim() <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay}, {"params": rest, "weight_decay": 0.0}],
                                  lr=config.learning_rate)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _cosine(step, config))
    generator = torch.Generator().manual_seed(config.seed)
    batch = min(config.batch_size, len(tokens))
    losses = []
    progress = tqdm(range(config.steps), desc="train image head", unit="step")
    for step in progress:
        rows = torch.randperm(len(tokens), generator=generator)[:batch]
        same = key_ids[rows][:, None] == key_ids[rows][None, :]  # (B, B): identical content is no negative
        loss = symmetric_info_nce(head(tokens[rows]), texts[rows], head.logit_scale, same)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        if step % 50 == 0:
            progress.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}", temperature=f"{float(head.logit_scale.detach().exp()):.1f}")
    train_s = time.perf_counter() - started - prepared_s
    model.head.eval()
    report = {
        "config": asdict(config),
        "seconds": {"prepare": round(prepared_s, 1), "train": round(train_s, 1)},
        "final_loss": round(float(np.mean(losses[-50:])), 4),
        "held_out": retrieval_report(model.embed, text_embedder.embed_texts, test_pairs),
    }
    if not config.data:
        report["independent_check"] = retrieval_report(model.embed, text_embedder.embed_texts,
                                                       independent_pairs(config.test_scenes, config.seed))
    report["seconds"]["total"] = round(time.perf_counter() - started, 1)
    model.save(out / "image_head")
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    if config.install:
        staging = SHIPPED_IMAGE_HEAD.with_name(".image_head-new")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(out / "image_head", staging)
        shutil.copy(out / "report.json", staging / "report.json")  # how it was trained and what it scored
        shutil.rmtree(SHIPPED_IMAGE_HEAD, ignore_errors=True)
        staging.rename(SHIPPED_IMAGE_HEAD)
    logger.info("image head: %s", json.dumps({k: report[k] for k in ("seconds", "held_out")}))
    return report


def _cosine(step: int, config: ImageHeadConfig) -> float:
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def parse_args(argv: Sequence[str] | None = None) -> ImageHeadConfig:
    parser = argparse.ArgumentParser(prog="python -m training.image_head", description=__doc__.split("\n")[0])
    add_dataclass_arguments(parser, ImageHeadConfig)
    return ImageHeadConfig(**dataclass_kwargs(parser.parse_args(argv), ImageHeadConfig))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    report = train(parse_args(argv))
    print(json.dumps({key: report[key] for key in report if key != "config"}, indent=1))
    return report


if __name__ == "__main__":
    main()
