"""Pictures as vectors in a text-embedding space: a frozen image encoder plus a trained ``ImageTextHead``.

This is the picture side of the project's own CLIP-style space. ``ImageTextModel.embed(images)``
runs the frozen encoder (the default EfficientNet-Lite0, or any registered encoder) and the head,
and returns unit vectors comparable with the text embedder's (MiniLM for the default). It is saved
as one folder: ``image_head.json`` (encoder config, head config, the text model it was trained
against) and ``image_head.safetensors`` (the head's weights). The default ships in
``assistant/default_adapter/image_head`` and is made by ``python -m training.image_head``.

It knows nothing about indexes, files or the text model itself beyond its name.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from adapters.image_text_head import ImageTextHead, ImageTextHeadConfig
from assistant.config import EncoderConfig
from assistant.encoders import build_encoder
from assistant.errors import AssistantError

CONFIG_FILE = "image_head.json"
WEIGHTS_FILE = "image_head.safetensors"
SHIPPED_IMAGE_HEAD = Path(__file__).parent / "default_adapter" / "image_head"
BATCH = 32


class ImageTextModel:
    """Frozen encoder -> trainable head -> unit vectors in ``text_model``'s embedding space."""

    def __init__(self, encoder: Any, head: ImageTextHead, encoder_config: EncoderConfig, text_model: str) -> None:
        self.encoder = encoder
        self.head = head
        self.encoder_config = encoder_config
        self.text_model = text_model
        self.name = f"image-head({encoder_config.kind}->{text_model})"

    @classmethod
    def create(cls, encoder_config: EncoderConfig, output_dim: int, text_model: str, **head_options: Any) -> "ImageTextModel":
        """A fresh head sized for the encoder's tokens."""
        encoder = build_encoder(encoder_config)
        config = ImageTextHeadConfig(input_dim=encoder.hidden_size, num_positions=encoder.num_tokens, output_dim=output_dim,
                                     **head_options)
        return cls(encoder, ImageTextHead(config), encoder_config, text_model)

    @classmethod
    def load(cls, folder: str | os.PathLike | None = None) -> "ImageTextModel":
        """Load a saved head (default: the shipped one) with its frozen encoder.

        Raises:
            AssistantError: The folder is missing, incomplete, or its weights do not fit its config.
        """
        from safetensors.torch import load_file

        folder = Path(folder) if folder is not None else SHIPPED_IMAGE_HEAD
        if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
            raise AssistantError(f"{folder} is not an image head (it needs {CONFIG_FILE} and {WEIGHTS_FILE})")
        try:
            saved = json.loads((folder / CONFIG_FILE).read_text())
            encoder_config = EncoderConfig(**saved["encoder"])
            head = ImageTextHead(ImageTextHeadConfig(**saved["head"]))
            state = load_file(str(folder / WEIGHTS_FILE))
            head.load_state_dict({name: tensor.float() for name, tensor in state.items()})
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as error:
            raise AssistantError(f"cannot load the image head in {folder}: {type(error).__name__}: {error}") from None
        encoder = build_encoder(encoder_config)
        if (encoder.num_tokens, encoder.hidden_size) != (head.config.num_positions, head.config.input_dim):
            raise AssistantError(f"the image head in {folder} was trained on {head.config.num_positions} x {head.config.input_dim} "
                                 f"tokens; its encoder gives {encoder.num_tokens} x {encoder.hidden_size}")
        return cls(encoder, head.eval(), encoder_config, saved["text_model"])

    def save(self, folder: str | os.PathLike, dtype: torch.dtype = torch.float16) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {name: tensor.detach().to(dtype).contiguous() for name, tensor in self.head.state_dict().items()}
        save_file(state, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
        config = {"encoder": dataclasses.asdict(self.encoder_config), "head": self.head.config.to_dict(), "text_model": self.text_model}
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=1) + "\n")

    @torch.inference_mode()
    def encode_tokens(self, images: list[Image.Image]) -> torch.Tensor:
        """(N, tokens, width) frozen-encoder tokens, in batches."""
        return torch.cat([self.encoder.encode(images[start : start + BATCH]) for start in range(0, len(images), BATCH)])

    @torch.inference_mode()
    def embed(self, images: list[Image.Image]) -> np.ndarray:
        """(N, D) float32 unit vectors for the pictures."""
        if not images:
            return np.zeros((0, self.head.config.output_dim), dtype=np.float32)
        self.head.eval()
        return self.head(self.encode_tokens([image.convert("RGB") for image in images])).float().numpy()
