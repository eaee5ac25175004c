"""Frozen media encoders, selected by name from a registry.

An encoder turns a batch of frames into tokens ``(B, N, D)``; it always runs in eval mode without
gradients. Image and audio encoders share this contract and registry.
"""

from assistant.encoders.base import ENCODERS, MediaEncoder, build_encoder, register_encoder
from assistant.encoders import efficientnet, hf_vision, whisper  # noqa: F401  (register built-in encoders)

__all__ = ["ENCODERS", "MediaEncoder", "build_encoder", "register_encoder"]
