"""Train the built-in text-to-image scene model (``plugins.text_to_image.scene_model``) on generated scenes.

    python -m training.text_to_image --out runs/t2i              # ~27 min on 2 cores
    python -m training.recipes.build_text_to_image --install      # train, evaluate, install with a model card

Every step draws fresh scenes from the scene generator (``training.data.scene_layout``, rendered at
the model's resolution: no resizing, so edges stay the palette's colours), with a prompt and a layout
for each. Three prompts in four spell out every object as the layout planner writes them
(``full_prompt``: "a large red star on the left and ..."); the rest are varied (``scene_prompt``): sizes
and positions sometimes left out, scenes of one shape named by count ("three circles"). The layout is
each object's phrase and true box, as ``plugins.text_to_image.layout.place`` gives them at run time.
One scene in ten gets the empty prompt and no layout (the unconditional branch of guidance), one in
ten its prompt without a layout (so a prompt alone still draws something). The UNet predicts the
clean picture; its error is weighted by min(SNR + 1, ``snr_gamma``), so nearly clean steps (edges) count more,
and by 1 + ``box_weight`` on the pixels inside an object's box and ``box_margin`` pixels around it, so the
shapes, a few percent of the picture, are not drowned by the background (the margin weighs both sides of an
edge alike).
An exponential moving average of the weights is kept for sampling. Optimisation runs through
``accelerate`` (one process here, DDP under ``accelerate launch``). The model is saved in 16-bit.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from assistant.cli_args import add_dataclass_arguments, dataclass_kwargs
from assistant.errors import AssistantError
from plugins.text_to_image.checker import Wanted
from plugins.text_to_image.prompts import phrase, write_prompt
from plugins.text_to_image.scene_model import (Layout, PromptEncoder, SceneModel, SceneModelConfig, box_pixels, build_scheduler,
                                               build_unet)
from training.data.scene_layout import Scene, SceneConfig, generate_scene
from training.data.scene_questions import POSITION_PHRASES, article, plural
from training.data.scene_render import render
from training.data.scenes import scene_seed

logger = logging.getLogger(__name__)

OBJECT_COUNTS = (1, 1, 1, 2, 2, 2, 3)  # objects per training scene, drawn uniformly from this tuple
REPEAT_SHARE = 0.2  # scenes whose objects all share a shape, named by count ("two circles")
NUMBER_WORDS = {2: "two", 3: "three", 4: "four"}


@dataclass
class TextToImageTrainConfig:
    """How to train; the command line is built from these fields."""

    out: str = field(default="runs/t2i", metadata={"help": "output folder: model/, samples.png, train_report.json"})
    steps: int = field(default=1700, metadata={"help": "optimiser steps"})
    batch_size: int = field(default=16, metadata={"help": "scenes per step"})
    learning_rate: float = field(default=6e-4, metadata={"help": "AdamW peak learning rate (cosine decay)"})
    warmup_steps: int = field(default=100, metadata={"help": "linear warm-up steps"})
    ema_decay: float = field(default=0.998, metadata={"help": "decay of the weight average used for sampling"})
    prompt_dropout: float = field(default=0.1, metadata={"help": "share of scenes given the empty prompt and no layout (the "
                                                                 "unconditional branch of guidance)"})
    layout_dropout: float = field(default=0.1, metadata={"help": "share of scenes given their prompt without a layout"})
    layout_channels: int = field(default=24, metadata={"help": "layout map width (0: the model reads the prompt only)"})
    box_weight: float = field(default=4.0, metadata={"help": "extra loss weight on the pixels inside an object's box (a "
                                                              "pixel there counts 1 + box_weight): objects are a few percent "
                                                              "of a picture, and their shapes are what a prompt asks for"})
    box_margin: int = field(default=2, metadata={"help": "pixels around each box that weigh as much as its inside: with the "
                                                          "inside alone heavier, an unsure edge costs less drawn too far out "
                                                          "than too far in, and shapes came out a pixel too big, their "
                                                          "corners rounded"})
    snr_gamma: float = field(default=5.0, metadata={"help": "loss weight min(SNR + 1, gamma) on the clean-picture error "
                                                             "(the noise error, capped); 0: unweighted"})
    full_prompt_share: float = field(default=0.75, metadata={"help": "share of prompts that spell out every object's size, "
                                                                       "colour, shape and place (the layout planner's form)"})
    resolution: int = field(default=96, metadata={"help": "picture side in pixels (scenes are rendered at it)"})
    patch: int = field(default=3, metadata={"help": "pixels per cell side (the UNet sees a (resolution/patch)^2 grid)"})
    channels: str = field(default="64,64,128,256", metadata={"help": "UNet block widths, comma-separated (one level each): the "
                                                                      "first level reads and writes every 3x3-pixel cell (27 values), "
                                                                      "and at 32 channels it drew edges a pixel wide and soft"})
    box_frequencies: str = field(default="1,2,4", metadata={"help": "Fourier frequencies of the in-box place in the layout "
                                                                       "map, comma-separated ('' for none)"})
    attention_from: int = field(default=2, metadata={"help": "first UNet level that attends to the prompt (0: the full grid)"})
    seed: int = field(default=0, metadata={"help": "scene seeds and initialisation"})
    mixed_precision: str = field(default="no", metadata={"help": "accelerate mixed precision: no | bf16 (measured slower here: 1.9 vs 1.6 s/step)"})

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise AssistantError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.box_margin < 0:
            raise AssistantError(f"box_margin must be 0 or more pixels, got {self.box_margin}")
        try:
            self.widths = tuple(int(width) for width in str(self.channels).split(","))
            self.frequencies = tuple(int(k) for k in str(self.box_frequencies).split(",") if k.strip())
        except ValueError:
            raise AssistantError(f"channels and box_frequencies must be comma-separated integers, got {self.channels!r} and "
                                 f"{self.box_frequencies!r}") from None


def _object_phrase(obj, size: bool, position: bool) -> str:
    words = " ".join(word for word in ((obj.size if size else ""), obj.colour, obj.shape) if word)
    text = f"{article(words)} {words}"
    return f"{text} {POSITION_PHRASES[obj.position]}" if position else text


def full_prompt(scene: Scene, rng: random.Random) -> str:
    """Every object of ``scene`` spelled out in any order, as ``plugins.text_to_image.layout`` writes a plan."""
    objects = list(scene.objects)
    rng.shuffle(objects)
    return write_prompt([Wanted(1, obj.colour, obj.shape, obj.size, obj.position) for obj in objects])


def scene_prompt(scene: Scene, rng: random.Random) -> str:
    """A prompt naming every object of ``scene``: sizes and positions each kept with some chance, any order."""
    objects = list(scene.objects)
    shapes = {obj.shape for obj in objects}
    if len(objects) > 1 and len(shapes) == 1 and rng.random() < 0.7:  # "three circles", "two circles on the left"
        regions = {obj.position for obj in objects}
        text = f"{NUMBER_WORDS[len(objects)]} {plural(objects[0].shape)}"
        return f"{text} {POSITION_PHRASES[regions.pop()]}" if len(regions) == 1 and rng.random() < 0.5 else text
    rng.shuffle(objects)
    size, position = rng.random() < 0.6, rng.random() < 0.6
    phrases = [_object_phrase(obj, size, position) for obj in objects]
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def training_scene(rng: random.Random, resolution: int) -> Scene:
    """One training scene: 1-3 objects, or 2-4 of one shape (``REPEAT_SHARE`` of them)."""
    if rng.random() < REPEAT_SHARE:
        count = rng.choice((2, 3, 4))
        config = SceneConfig(canvas_size=resolution, min_objects=count, max_objects=count)
        while True:
            scene = generate_scene(rng, config)
            if len({obj.shape for obj in scene.objects}) == 1:
                return scene
    count = rng.choice(OBJECT_COUNTS)
    return generate_scene(rng, SceneConfig(canvas_size=resolution, min_objects=count, max_objects=count))


def scene_layout(scene: Scene) -> Layout:
    """Each object's phrase ("a large red star") and box, as ``plugins.text_to_image.layout.place`` gives them."""
    side = scene.canvas_size
    return [(phrase(Wanted(1, obj.colour, obj.shape, obj.size)), tuple(edge / side for edge in obj.bbox)) for obj in scene.objects]


def scene_batch(rng: random.Random, count: int, resolution: int, full_share: float = 0.0) -> tuple[torch.Tensor, list[str], list[Layout]]:
    """``count`` fresh scenes as pictures in [-1, 1] (N, 3, R, R), their prompts (``full_share`` of them full) and layouts."""
    scenes = [training_scene(rng, resolution) for _ in range(count)]
    pixels = np.stack([np.asarray(render(scene), dtype=np.float32) for scene in scenes])
    prompts = [full_prompt(scene, rng) if rng.random() < full_share else scene_prompt(scene, rng) for scene in scenes]
    return torch.from_numpy(pixels).permute(0, 3, 1, 2) / 127.5 - 1, prompts, [scene_layout(scene) for scene in scenes]


def box_weights(layouts: list[Layout], side: int, margin: int) -> torch.Tensor:
    """(N, 1, R, R): 1 on the pixels of every box grown by ``margin`` pixels on each side, else 0."""
    inside = box_pixels(layouts, side)[:, :1].clamp(max=1)
    return F.max_pool2d(inside, 2 * margin + 1, stride=1, padding=margin) if margin > 0 else inside


def learning_rate_at(step: int, config: TextToImageTrainConfig) -> float:
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.learning_rate * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def train(config: TextToImageTrainConfig) -> dict:
    """Train, save the averaged model to ``out/model`` and return the training report."""
    from accelerate import Accelerator
    from diffusers.training_utils import EMAModel

    torch.manual_seed(config.seed)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    model_config = SceneModelConfig(resolution=config.resolution, patch=config.patch, channels=config.widths,
                                    attention_from=config.attention_from, layout_channels=config.layout_channels,
                                    box_frequencies=config.frequencies)
    prompts = PromptEncoder(model_config.text_encoder, model_config.text_tokens)
    unet, scheduler = build_unet(model_config, prompts.dim), build_scheduler()
    accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=not torch.cuda.is_available())
    optimizer = torch.optim.AdamW(unet.parameters(), lr=config.learning_rate, weight_decay=0.01)
    unet, optimizer = accelerator.prepare(unet, optimizer)
    ema = EMAModel(accelerator.unwrap_model(unet).parameters(), decay=config.ema_decay, use_ema_warmup=True)
    shaper = SceneModel(unet, scheduler, model_config, prompts)  # the prepared (under DDP: wrapped) UNet, so gradients sync
    alphas = scheduler.alphas_cumprod
    rng = random.Random(scene_seed(config.seed, "text_to_image", accelerator.process_index))
    losses, started = [], time.perf_counter()
    progress = tqdm(range(config.steps), desc="train text-to-image", unit="step", disable=not accelerator.is_main_process)
    unet.train()
    for step in progress:
        pictures, texts, layouts = scene_batch(rng, config.batch_size, config.resolution, config.full_prompt_share)
        weights = 1 + config.box_weight * box_weights(layouts, config.resolution, config.box_margin)  # true boxes
        for index, draw in enumerate(rng.random() for _ in texts):
            if draw < config.prompt_dropout:
                texts[index], layouts[index] = "", []
            elif draw < config.prompt_dropout + config.layout_dropout:
                layouts[index] = []
        states, mask = prompts(texts)
        layout = shaper.layout_map(layouts) if model_config.layout_channels else None
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(texts),))
        noise = torch.randn_like(pictures)
        scale = alphas[timesteps].sqrt().view(-1, 1, 1, 1)
        noisy = scale * pictures + (1 - scale**2).sqrt() * noise
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(step, config)
        with accelerator.autocast():
            predicted = shaper.denoise(noisy.to(accelerator.device), timesteps.to(accelerator.device),
                                       states.to(accelerator.device), mask.to(accelerator.device), layout)
        error = ((predicted.float() - pictures.to(accelerator.device)).pow(2) * weights.to(accelerator.device)).mean(dim=(1, 2, 3))
        if config.snr_gamma > 0:  # 1/sigma^2 = SNR + 1 turns this into the noise error; capped so clean steps do not dominate
            error = error * (1 / (1 - scale.view(-1) ** 2)).clamp(max=config.snr_gamma).to(error.device)
        loss = error.mean()
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.step(accelerator.unwrap_model(unet).parameters())
        losses.append(float(loss))
        progress.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
    train_seconds = time.perf_counter() - started
    final = accelerator.unwrap_model(unet)
    ema.copy_to(final.parameters())
    final.eval()
    model = SceneModel(final, scheduler, model_config, prompts, shaper.projection)
    if accelerator.is_main_process:
        model.save(out / "model")
    report = {"steps": config.steps, "batch_size": config.batch_size, "train_time_s": round(train_seconds, 1),
              "seconds_per_step": round(train_seconds / config.steps, 3), "final_loss": round(float(np.mean(losses[-50:])), 5),
              "parameters": sum(p.numel() for p in final.parameters()), "config": asdict(config),
              "model_config": asdict(model_config)}
    (out / "train_report.json").write_text(json.dumps(report, indent=2) + "\n")
    logger.info("trained %d steps in %.1f min; final loss %.4f; model in %s", config.steps, train_seconds / 60,
                report["final_loss"], out / "model")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.text_to_image", description=__doc__.split("\n")[0])
    add_dataclass_arguments(parser, TextToImageTrainConfig)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    train(TextToImageTrainConfig(**dataclass_kwargs(args, TextToImageTrainConfig)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
