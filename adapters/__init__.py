"""Trainable connectors that map frozen-encoder tokens into a language model's embedding space.

Pure torch: nothing here imports transformers, peft or any other module of this project.
A connector takes encoder tokens ``(B, N, D_in)`` and returns LLM-ready tokens ``(B, M, D_out)``.
"""

from adapters.frame_stack import FrameStackProjector
from adapters.mlp_projector import MLPProjector
from adapters.perceiver_resampler import PerceiverResampler
from adapters.registry import CONNECTORS, build_connector, register_connector

__all__ = ["CONNECTORS", "FrameStackProjector", "MLPProjector", "PerceiverResampler", "build_connector", "register_connector"]
