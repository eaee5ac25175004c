"""The built-in text-to-image model: a small diffusers UNet that draws the scene domain in pixel space.

No text-to-image model ships in any package, so the project trains this one (``training.text_to_image``).
It works on pixels, not on an autoencoder's latents (none is packaged): the picture is folded into
``patch`` x ``patch`` pixel cells (``pixel_unshuffle``), so a 96-pixel picture is a 32 x 32 grid of
27-value cells, and a ``diffusers.UNet2DConditionModel`` whose first level (64 channels in the shipped model:
at 32 it drew soft edges) is wider than a cell denoises that grid. Beside the noisy cells it reads two
coordinate channels and a layout map (``layout_map``): per pixel, whether it lies in an object's box and where
in that box; per cell, the sentence vector of the object's phrase ("a large red star"), through a fixed random
projection. The boxes come from ``layout.plan_scene``; the model decides every pixel. The whole prompt reaches
the UNet's cross-attention as the token states of the packaged all-MiniLM-L6-v2 (frozen). The UNet predicts
the clean picture (``prediction_type="sample"``): predicting the velocity, it could not reproduce the noise
through its narrow first level, and its pictures kept the noise (Li and He, "Back to Basics: Let Denoising
Generative Models Denoise", 2025, on why clean-picture prediction survives that). Sampling is DDIM with
classifier-free guidance: the unconditional branch is the empty prompt without a layout (dropped out in
training) or the negative prompt.

A saved model is a folder: ``unet/`` (diffusers, 16-bit safetensors), ``scheduler/``, ``layout_projection.safetensors``
and ``scene_model.json`` (cell size, resolution, levels, prompt length). It knows nothing about chat or plugins.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from copy import deepcopy as copy_module
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

from assistant.errors import AssistantError
from plugins.text_to_image.layout import Layout

logger = logging.getLogger(__name__)

CONFIG_FILE = "scene_model.json"
LAYOUT_FILE = "layout_projection.safetensors"
DEFAULT_TEXT_ENCODER = "default"  # the packaged all-MiniLM-L6-v2


@dataclass(frozen=True)
class SceneModelConfig:
    """The shape of a scene model; saved next to its UNet."""

    resolution: int = field(default=96, metadata={"help": "picture side in pixels"})
    patch: int = field(default=3, metadata={"help": "pixels per cell side: the UNet sees a (resolution/patch)^2 grid"})
    channels: tuple[int, ...] = field(default=(32, 64, 128, 256), metadata={"help": "UNet block widths, one per level"})
    attention_from: int = field(default=2, metadata={"help": "first level (0 = the full grid) whose blocks attend to the prompt"})
    coordinates: bool = field(default=True, metadata={"help": "give the UNet two coordinate channels (x, y) beside the picture"})
    text_tokens: int = field(default=48, metadata={"help": "prompt tokens the UNet attends to (longer prompts are an error)"})
    text_encoder: str = field(default=DEFAULT_TEXT_ENCODER, metadata={"help": "sentence-transformers folder, or 'default'"})
    layout_channels: int = field(default=24, metadata={"help": "width of the layout map (each object's phrase vector painted "
                                                                "over its box); 0: prompt only"})
    box_frequencies: tuple[int, ...] = field(default=(1, 2, 4), metadata={
        "help": "Fourier features of each pixel's place in its box (sin and cos of pi*k*x and pi*k*y per k), beside the "
                "place itself: a shape is a function of that place, and the features let the first level draw sharp "
                "outlines (a star's points) rather than smooth blobs"})
    plan_layout: bool = field(default=True, metadata={"help": "complete prompts with a size, colour and place for every object "
                                                                 "before drawing (``layout.plan_scene``)"})
    default_steps: int = field(default=20, metadata={"help": "DDIM steps when a request gives none"})
    default_guidance: float = field(default=3.0, metadata={"help": "classifier-free guidance when a request gives none"})

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))
        object.__setattr__(self, "box_frequencies", tuple(self.box_frequencies))
        if not 0 <= self.attention_from < len(self.channels):
            raise AssistantError(f"attention_from must name one of the {len(self.channels)} levels, got {self.attention_from}")
        if self.resolution % self.patch or (self.resolution // self.patch) % 2 ** (len(self.channels) - 1):
            raise AssistantError(f"resolution {self.resolution} must split into {self.patch}-pixel cells on a grid that halves "
                                 f"{len(self.channels) - 1} times")

    @property
    def grid(self) -> int:
        return self.resolution // self.patch

    @property
    def cell_channels(self) -> int:
        return 3 * self.patch * self.patch

    @property
    def input_channels(self) -> int:
        return self.cell_channels + (2 if self.coordinates else 0) + (self.layout_channels + self.box_channels if self.layout_channels else 0)

    @property
    def box_channels(self) -> int:
        """Layout-map channels of ``box_pixels``, folded into cells."""
        return (3 + 4 * len(self.box_frequencies)) * self.patch * self.patch


def build_projection(config: SceneModelConfig, text_dim: int = 384) -> torch.Tensor:
    """The fixed random map (text_dim, layout_channels) from a phrase's sentence vector to its layout-map vector."""
    return torch.randn(text_dim, config.layout_channels, generator=torch.Generator().manual_seed(0))


def _box_planes(box: tuple[float, float, float, float], side: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(R, R) each: 1 on the pixels whose centre lies in ``box``, and each pixel's place across and down the box
    (-1 at its left/top edge, 1 at its right/bottom edge)."""
    left, top, right, bottom = box
    centres = (torch.arange(side, dtype=torch.float32) + 0.5) / side
    across = ((centres - left) / max(right - left, 1e-6) * 2 - 1)[None, :].expand(side, side)
    down = ((centres - top) / max(bottom - top, 1e-6) * 2 - 1)[:, None].expand(side, side)
    return ((across.abs() <= 1) & (down.abs() <= 1)).float(), across, down


def box_pixels(layouts: list[Layout], side: int, frequencies: tuple[int, ...] = ()) -> torch.Tensor:
    """(N, 3 + 4 * len(frequencies), R, R): per pixel, whether it lies in an object's box, where in that box (x and y
    from -1 to 1), and sin and cos of pi*k*x and pi*k*y for each k in ``frequencies`` (zero outside every box)."""
    pixels = torch.zeros(len(layouts), 3 + 4 * len(frequencies), side, side)
    for row, layout in enumerate(layouts):
        for _, box in layout:
            inside, across, down = _box_planes(box, side)
            planes = [across, down]
            for k in frequencies:
                planes += [f(math.pi * k * place) for place in (across, down) for f in (torch.sin, torch.cos)]
            pixels[row, 0] += inside
            pixels[row, 1:] += inside * torch.stack(planes)
    return pixels


def build_unet(config: SceneModelConfig, text_dim: int = 384) -> Any:
    """A fresh UNet for ``config``: cross-attention on the levels from ``attention_from`` down."""
    from diffusers import UNet2DConditionModel

    levels = len(config.channels)
    down = tuple("CrossAttnDownBlock2D" if level >= config.attention_from else "DownBlock2D" for level in range(levels))
    up = tuple("CrossAttnUpBlock2D" if level >= config.attention_from else "UpBlock2D" for level in reversed(range(levels)))
    return UNet2DConditionModel(
        sample_size=config.grid, in_channels=config.input_channels, out_channels=config.cell_channels,
        block_out_channels=config.channels, down_block_types=down, up_block_types=up, layers_per_block=1,
        cross_attention_dim=text_dim, attention_head_dim=32, norm_num_groups=math.gcd(32, *config.channels),
    )


def build_scheduler() -> Any:
    """The training noise schedule (cosine, 1000 steps, clean-picture prediction)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="sample",
                         clip_sample=True, timestep_spacing="trailing", set_alpha_to_one=True)


class PromptEncoder:
    """MiniLM token states of prompts, padded to ``tokens`` with an attention mask."""

    def __init__(self, model: str = DEFAULT_TEXT_ENCODER, tokens: int = 48, device: str = "cpu") -> None:
        from transformers import AutoModel, AutoTokenizer

        from assistant.embedders import packaged_minilm_folder

        folder = packaged_minilm_folder() if model == DEFAULT_TEXT_ENCODER else Path(model)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            self.model = AutoModel.from_pretrained(str(folder), local_files_only=True).to(device).eval().requires_grad_(False)
        except (OSError, ValueError) as error:
            raise AssistantError(f"cannot load the prompt encoder {model!r}: {error}") from None
        self.tokens, self.device = tokens, device
        self.dim = int(self.model.config.hidden_size)
        self._lock = threading.Lock()

    @torch.no_grad()
    def phrase_vectors(self, phrases: list[str]) -> torch.Tensor:
        """(N, dim) unit sentence vectors of short phrases (mean of the token states, as sentence-transformers pools)."""
        batch = self.tokenizer(phrases, padding="longest", return_tensors="pt").to(self.device)
        with self._lock:
            states = self.model(**batch).last_hidden_state.float()
        weights = batch["attention_mask"].unsqueeze(-1).float()
        return F.normalize((states * weights).sum(1) / weights.sum(1), dim=-1)

    def count_tokens(self, prompt: str) -> int:
        return len(self.tokenizer(prompt, add_special_tokens=True)["input_ids"])

    @torch.no_grad()
    def __call__(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(states, mask)``: (N, T, dim) float32 and (N, T) 1 for real tokens, T the longest prompt's tokens (at
        most ``tokens``; padding never changes a real token's state, so the batch does not change a prompt's picture).

        Raises:
            AssistantError: A prompt is longer than ``tokens`` tokens.
        """
        for prompt in prompts:
            if self.count_tokens(prompt) > self.tokens:
                raise AssistantError(f"the prompt {prompt[:60]!r} is {self.count_tokens(prompt)} tokens; this model reads at most "
                                     f"{self.tokens}. Shorten it.")
        batch = self.tokenizer(prompts, padding="longest", return_tensors="pt").to(self.device)
        with self._lock:
            states = self.model(**batch).last_hidden_state
        return states.float(), batch["attention_mask"]


class GenerationCancelled(AssistantError):
    """The caller's cancel flag was set between two denoising steps."""


class SceneModel:
    """A trained scene model: UNet + scheduler + prompt encoder, and DDIM sampling."""

    def __init__(self, unet: Any, scheduler: Any, config: SceneModelConfig, prompts: PromptEncoder | None = None,
                 projection: torch.Tensor | None = None) -> None:
        self.unet, self.scheduler, self.config = unet, scheduler, config
        self.prompts = prompts or PromptEncoder(config.text_encoder, config.text_tokens)
        self.projection = build_projection(config, self.prompts.dim) if projection is None else projection
        self._phrases: dict[str, torch.Tensor] = {}  # phrase -> layout vector (the domain has few phrases)
        self._lock = threading.Lock()  # the scheduler keeps per-run state

    @classmethod
    def from_folder(cls, folder: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32) -> "SceneModel":
        """Load a saved model (``save``'s layout).

        Raises:
            AssistantError: The folder is not a scene model or its files are broken.
        """
        from diffusers import DDIMScheduler, UNet2DConditionModel

        folder = Path(folder)
        if not (folder / CONFIG_FILE).is_file():
            raise AssistantError(f"{folder} is not a scene model: it has no {CONFIG_FILE}")
        try:
            config = SceneModelConfig(**json.loads((folder / CONFIG_FILE).read_text()))
            unet = UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=dtype, use_safetensors=True)
            scheduler = DDIMScheduler.from_pretrained(folder / "scheduler")
            projection = load_file(folder / LAYOUT_FILE)["projection"].float() if config.layout_channels else None
        except (OSError, ValueError, TypeError, KeyError, json.JSONDecodeError) as error:
            raise AssistantError(f"cannot load the scene model in {folder}: {error}") from None
        prompts = PromptEncoder(config.text_encoder, config.text_tokens, device)
        return cls(unet.to(device).eval(), scheduler, config, prompts, projection)

    def save(self, folder: str | Path, dtype: torch.dtype = torch.float16) -> None:
        """Write the model (UNet weights in ``dtype``) to ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        copy = copy_module(self.unet)
        (copy.half() if dtype == torch.float16 else copy.bfloat16() if dtype == torch.bfloat16 else copy.float()).save_pretrained(
            folder / "unet", safe_serialization=True)
        self.scheduler.save_pretrained(folder / "scheduler")
        if self.config.layout_channels:
            save_file({"projection": self.projection.contiguous()}, folder / LAYOUT_FILE)
        (folder / CONFIG_FILE).write_text(json.dumps(asdict(self.config), indent=2) + "\n")

    def layout_map(self, layouts: list[Layout]) -> torch.Tensor:
        """(N, layout_channels + box_channels, grid, grid), an empty layout all zeros. Per pixel (folded into cells like the
        picture): ``box_pixels``; per cell: the object's phrase vector, weighted by the share of the cell its box covers.
        The box says where; the phrase what."""
        new = sorted({phrase for layout in layouts for phrase, _ in layout} - set(self._phrases))
        if new:
            self._phrases.update(zip(new, self.prompts.phrase_vectors(new).cpu() @ self.projection))
        pixels = box_pixels(layouts, self.config.resolution, self.config.box_frequencies)
        phrases = torch.zeros(len(layouts), self.config.layout_channels, self.config.resolution, self.config.resolution)
        for row, layout in enumerate(layouts):
            for phrase, box in layout:
                phrases[row] += self._phrases[phrase][:, None, None] * _box_planes(box, self.config.resolution)[0]
        cells = F.avg_pool2d(phrases, self.config.patch)  # (N, layout_channels, grid, grid)
        return torch.cat([cells, F.pixel_unshuffle(pixels, self.config.patch)], dim=1)

    def denoise(self, noisy: torch.Tensor, timesteps: torch.Tensor, states: torch.Tensor, mask: torch.Tensor,
                layout: torch.Tensor | None = None) -> torch.Tensor:
        """The UNet's prediction for ``noisy`` pictures (N, 3, R, R) in [-1, 1], in picture space; ``layout`` is
        ``layout_map``'s (zeros when None)."""
        cells = F.pixel_unshuffle(noisy, self.config.patch)  # (N, 3*patch^2, grid, grid)
        extra = []
        if self.config.coordinates:
            ramp = torch.linspace(-1, 1, self.config.grid, device=cells.device)
            y, x = torch.meshgrid(ramp, ramp, indexing="ij")
            extra.append(torch.stack([x, y]).expand(len(cells), 2, -1, -1))  # (N, 2, grid, grid)
        if self.config.layout_channels:
            shape = (len(cells), self.config.layout_channels + self.config.box_channels, self.config.grid, self.config.grid)
            extra.append(torch.zeros(shape, device=cells.device) if layout is None else layout.to(cells.device))
        cells = torch.cat([cells, *extra], dim=1)  # (N, input_channels, grid, grid)
        dtype = next(self.unet.parameters()).dtype
        out = self.unet(cells.to(dtype), timesteps, encoder_hidden_states=states.to(dtype), encoder_attention_mask=mask).sample
        return F.pixel_shuffle(out.float(), self.config.patch)

    @torch.no_grad()
    def generate(
        self, prompt: str, negative_prompt: str = "", steps: int | None = None, guidance: float | None = None,
        images: int = 1, seed: int = 0, on_step: Callable[[int, int], None] | None = None,
        cancel: threading.Event | None = None, layout: Layout | None = None,
    ) -> list[Image.Image]:
        """``images`` pictures of ``prompt`` (placed as ``layout`` says, when given) at the model's resolution;
        ``on_step(done, total)`` after each step. The unconditional branch has the negative prompt and no layout.

        Raises:
            GenerationCancelled: ``cancel`` was set between two steps.
            AssistantError: The prompt is too long.
        """
        steps = steps or self.config.default_steps
        guidance = self.config.default_guidance if guidance is None else guidance
        states, mask = self.prompts([prompt] * images + [negative_prompt] * images)
        device = next(self.unet.parameters()).device
        states, mask = states.to(device), mask.to(device)
        maps = self.layout_map([layout or []] * images + [[]] * images).to(device) if self.config.layout_channels else None
        side = self.config.resolution
        generator = torch.Generator("cpu").manual_seed(seed)
        sample = torch.randn((images, 3, side, side), generator=generator).to(device)
        with self._lock:
            self.scheduler.set_timesteps(steps)
            timesteps = list(self.scheduler.timesteps)
            for index, timestep in enumerate(timesteps):
                if cancel is not None and cancel.is_set():
                    raise GenerationCancelled(f"generation cancelled after {index} of {len(timesteps)} steps")
                both = self.denoise(torch.cat([sample, sample]), timestep.expand(2 * images).to(device), states, mask, maps)
                conditional, unconditional = both.chunk(2)
                predicted = unconditional + guidance * (conditional - unconditional)
                sample = self.scheduler.step(predicted, timestep, sample).prev_sample
                if on_step is not None:
                    on_step(index + 1, len(timesteps))
        pixels = ((sample.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return [Image.fromarray(picture) for picture in pixels]
