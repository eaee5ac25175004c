"""Text-to-image engines behind one small interface, and the limits every request is held to.

- ``default``: the project's own scene model (``plugins/text_to_image/scene_model/``, trained by
  ``python -m training.recipes.build_text_to_image``); it only knows the synthetic scene domain.
- any diffusers text-to-image pipeline by Hugging Face id or folder (SD-Turbo, SDXL-Turbo, ...),
  loaded with ``diffusers.AutoPipelineForText2Image`` from local files only unless
  ``allow_download`` is set; steps, guidance, size, seed, negative prompt and number of pictures go
  to the pipeline; cancellation and progress go through its ``callback_on_step_end``.

``TextToImageConfig`` caps prompt length, steps, size, pictures and self-check tries, so a request
from a model or an HTTP client cannot ask for an hour of compute. This module knows nothing about
chat, tools or checking pictures.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from PIL import Image

from assistant.errors import AssistantError
from plugins.text_to_image.layout import plan_scene
from plugins.text_to_image.scene_model import GenerationCancelled, SceneModel

logger = logging.getLogger(__name__)

ENV_PREFIX = "MMA_TEXT_TO_IMAGE_"  # MMA_TEXT_TO_IMAGE_MODEL, MMA_TEXT_TO_IMAGE_MAX_STEPS, ...
DEFAULT_MODEL = "default"
SHIPPED_MODEL = Path(__file__).resolve().parent / "scene_model"
OnStep = Callable[[int, int], None]


@dataclass(frozen=True)
class TextToImageConfig:
    """Which engine, where, and the limits on one request."""

    model: str = field(default=DEFAULT_MODEL, metadata={"help": "'default' (the scene model), a diffusers id or a folder"})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})
    allow_download: bool = field(default=False, metadata={"help": "let diffusers fetch a hub id that is not cached"})
    max_prompt_chars: int = field(default=300, metadata={"help": "longest prompt accepted"})
    max_steps: int = field(default=50, metadata={"help": "most denoising steps per picture"})
    max_side: int = field(default=1024, metadata={"help": "largest width or height in pixels"})
    max_images: int = field(default=4, metadata={"help": "most pictures per request"})
    max_tries: int = field(default=3, metadata={"help": "most generations per picture when self-checking"})

    def __post_init__(self) -> None:
        for name in ("max_prompt_chars", "max_steps", "max_side", "max_images", "max_tries"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) > 0):
                raise AssistantError(f"{name} must be a positive integer, got {getattr(self, name)!r}")

    @classmethod
    def from_env(cls) -> "TextToImageConfig":
        """The config with each field from ``$MMA_TEXT_TO_IMAGE_<FIELD>`` where set (``MMA_TEXT_TO_IMAGE_MODEL``,
        ``MMA_TEXT_TO_IMAGE_MAX_STEPS``, ...).

        Raises:
            AssistantError: A variable's value is not of its field's type.
        """
        values: dict[str, Any] = {}
        for item in dataclasses.fields(cls):
            raw = os.environ.get(f"{ENV_PREFIX}{item.name.upper()}")
            if raw is None or raw == "":
                continue
            kind = type(getattr(cls(), item.name))
            try:
                values[item.name] = raw.lower() in ("1", "true", "yes") if kind is bool else kind(raw)
            except ValueError:
                raise AssistantError(f"${ENV_PREFIX}{item.name.upper()}={raw!r} is not a {kind.__name__}") from None
        return cls(**values)


@dataclass(frozen=True)
class ImageRequest:
    """One request, checked against a ``TextToImageConfig`` by ``checked``."""

    prompt: str
    negative_prompt: str = ""
    steps: int | None = None  # None: the engine's default
    guidance: float | None = None
    width: int | None = None  # None: the engine's native size
    height: int | None = None
    seed: int = 0
    images: int = 1

    def checked(self, limits: TextToImageConfig) -> "ImageRequest":
        """This request, or ``AssistantError`` naming the first limit it breaks."""
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise AssistantError("the prompt is empty: say what the picture should show")
        for name, text in (("prompt", self.prompt), ("negative prompt", self.negative_prompt)):
            if len(text) > limits.max_prompt_chars:
                raise AssistantError(f"the {name} is {len(text)} characters; the limit is {limits.max_prompt_chars}")
        if self.steps is not None and not 1 <= self.steps <= limits.max_steps:
            raise AssistantError(f"steps must be 1-{limits.max_steps}, got {self.steps}")
        if not 1 <= self.images <= limits.max_images:
            raise AssistantError(f"images must be 1-{limits.max_images}, got {self.images}")
        for name in ("width", "height"):
            side = getattr(self, name)
            if side is not None and not (64 <= side <= limits.max_side and side % 8 == 0):
                raise AssistantError(f"{name} must be a multiple of 8 from 64 to {limits.max_side}, got {side}")
        if self.guidance is not None and not 0 <= self.guidance <= 30:
            raise AssistantError(f"guidance must be 0-30, got {self.guidance}")
        if not 0 <= self.seed < 2**63:
            raise AssistantError(f"seed must be a non-negative integer below 2**63, got {self.seed}")
        return self


class ImageEngine(Protocol):
    name: str
    scene_domain: bool  # True: the independent scene checker can read its pictures

    def generate(self, request: ImageRequest, on_step: OnStep | None = None,
                 cancel: threading.Event | None = None) -> list[Image.Image]: ...

    def drawn_prompt(self, request: ImageRequest) -> str: ...


class SceneEngine:
    """The project's scene model; it draws at its own resolution (width and height must match it or be None)."""

    scene_domain = True

    def __init__(self, folder: str | Path = SHIPPED_MODEL, device: str = "cpu", plan_layout: bool | None = None) -> None:
        self.folder = Path(folder)
        self.model = SceneModel.from_folder(folder, device=device)
        if plan_layout is not None:  # None: as the model was trained
            self.model.config = dataclasses.replace(self.model.config, plan_layout=plan_layout)
        self.name = "scene-model" if self.folder == SHIPPED_MODEL else f"scene-model:{folder}"

    def generate(self, request: ImageRequest, on_step: OnStep | None = None, cancel: threading.Event | None = None) -> list[Image.Image]:
        side = self.model.config.resolution
        for name in ("width", "height"):
            if getattr(request, name) not in (None, side):
                raise AssistantError(f"the built-in scene model draws {side}x{side} pictures; {name}={getattr(request, name)} is not possible")
        planned = self._plan(request)
        prompt, layout = planned if planned is not None else (request.prompt, None)
        return self.model.generate(prompt, request.negative_prompt, request.steps, request.guidance, request.images, request.seed,
                                   on_step, cancel, layout)

    def _plan(self, request: ImageRequest) -> tuple[str, Any] | None:
        return plan_scene(request.prompt, request.seed) if self.model.config.plan_layout else None

    def drawn_prompt(self, request: ImageRequest) -> str:
        """The prompt the model is given: ``request.prompt`` completed by the layout planner when the model uses one."""
        planned = self._plan(request)
        return request.prompt if planned is None else planned[0]


class _Stop(Exception):
    """Raised from a diffusers step callback to end the run."""


class DiffusersEngine:
    """Any ``AutoPipelineForText2Image`` pipeline."""

    scene_domain = False

    def __init__(self, model: str, device: str = "cpu", allow_download: bool = False) -> None:
        from diffusers import AutoPipelineForText2Image

        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        try:
            self.pipeline = AutoPipelineForText2Image.from_pretrained(model, torch_dtype=dtype, local_files_only=not allow_download)
        except (OSError, ValueError, TypeError, KeyError) as error:  # missing files, a folder that is not a pipeline
            raise AssistantError(f"cannot load the text-to-image pipeline {model!r}: {error}") from None
        self.pipeline.to(device)
        self.pipeline.set_progress_bar_config(disable=True)
        self.name, self.device = f"diffusers:{model}", device
        self._lock = threading.Lock()

    def drawn_prompt(self, request: ImageRequest) -> str:
        """The prompt as given: a general pipeline plans nothing."""
        return request.prompt

    def generate(self, request: ImageRequest, on_step: OnStep | None = None, cancel: threading.Event | None = None) -> list[Image.Image]:
        total = request.steps or 25

        def step_end(pipeline: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            if on_step is not None:
                on_step(step + 1, total)
            if cancel is not None and cancel.is_set():
                raise _Stop
            return tensors

        options: dict[str, Any] = {"num_inference_steps": total, "num_images_per_prompt": request.images,
                                   "generator": torch.Generator("cpu").manual_seed(request.seed), "callback_on_step_end": step_end}
        options.update({key: value for key, value in (("guidance_scale", request.guidance), ("width", request.width),
                                                      ("height", request.height)) if value is not None})
        if request.negative_prompt:
            options["negative_prompt"] = request.negative_prompt
        with self._lock:
            try:
                return list(self.pipeline(request.prompt, **options).images)
            except _Stop:
                raise GenerationCancelled("generation cancelled between two steps") from None


@functools.lru_cache(maxsize=2)
def _load(model: str, device: str, allow_download: bool) -> ImageEngine:
    if model == DEFAULT_MODEL:
        if not (SHIPPED_MODEL / "scene_model.json").is_file():
            raise AssistantError(f"the built-in scene model is missing from {SHIPPED_MODEL}; build it with "
                                 "python -m training.recipes.build_text_to_image --install")
        return SceneEngine(SHIPPED_MODEL, device)
    if (Path(model) / "scene_model.json").is_file():
        return SceneEngine(model, device)
    return DiffusersEngine(model, device, allow_download)


def load_engine(config: TextToImageConfig | None = None) -> ImageEngine:
    """The engine ``config`` names, loaded once per (model, device) and kept.

    Raises:
        AssistantError: The model cannot be found or loaded.
    """
    config = config or TextToImageConfig.from_env()
    return _load(config.model, config.device, config.allow_download)
