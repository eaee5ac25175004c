"""The frozen-encoder contract and its registry.

Subclasses implement ``preprocess`` (media -> tensor batch) and ``features`` (tensor batch ->
``(B, N, D)`` tokens) and set ``modality``, ``hidden_size`` and ``num_tokens`` (and ``grid`` when token
``i`` is cell ``i`` of a square map, read by grounded alignment). Audio encoders
(``assistant.encoders.whisper``) give a number of tokens that depends on the clip's duration
(``num_frames``, ``encode_frame``). The base class keeps
every encoder frozen: parameters never require gradients and ``train()`` cannot leave eval mode.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import torch
from torch import nn

from assistant.config import EncoderConfig

EncoderBuilder = Callable[[EncoderConfig, bool, bool], "MediaEncoder"]
ENCODERS: dict[str, EncoderBuilder] = {}


def register_encoder(name: str) -> Callable[[EncoderBuilder], EncoderBuilder]:
    """Register a builder ``(config, allow_download, trust_remote_code) -> MediaEncoder``.

    Raises:
        ValueError: If the name is malformed or already registered.
    """
    if not re.match(r"^[a-z][a-z0-9_]*$", name):
        raise ValueError(f"encoder name {name!r} must be lowercase letters, digits and underscores")
    if name in ENCODERS:
        raise ValueError(f"encoder {name!r} is already registered")

    def decorator(builder: EncoderBuilder) -> EncoderBuilder:
        ENCODERS[name] = builder
        return builder

    return decorator


def build_encoder(config: EncoderConfig, allow_download: bool = False, trust_remote_code: bool = False) -> "MediaEncoder":
    if config.kind not in ENCODERS:
        raise KeyError(f"unknown encoder {config.kind!r}; registered: {sorted(ENCODERS)}")
    return ENCODERS[config.kind](config, allow_download, trust_remote_code)


class MediaEncoder(nn.Module):
    """A frozen encoder. ``encode(media)`` returns ``(B, num_tokens, hidden_size)`` float32 tokens."""

    modality: str = "image"
    hidden_size: int
    num_tokens: int
    description: str
    grid: int | None = None  # side of the square token map, when tokens are its cells in raster order

    def freeze(self) -> "MediaEncoder":
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        return super().train(False)

    def train(self, mode: bool = True) -> "MediaEncoder":
        return super().train(False)  # frozen encoders stay in eval mode (dropout, batch-norm stats)

    def preprocess(self, media: list[Any]) -> torch.Tensor:
        raise NotImplementedError

    def features(self, batch: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def encode(self, media: list[Any]) -> torch.Tensor:
        device = next(self.parameters()).device
        return self.features(self.preprocess(media).to(device)).float()  # (B, N, D)

    def num_frames(self, frame: Any) -> int:
        """Encoder tokens for one loaded frame (``num_tokens``; audio encoders count by duration)."""
        return self.num_tokens

    def encode_frame(self, frame: Any) -> torch.Tensor:
        """(N, D) float32 tokens of one loaded ``assistant.media.Frame`` (audio encoders take an ``AudioClip``)."""
        return self.encode([frame.image])[0]
