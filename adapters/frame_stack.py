"""Frame-stacking projector for audio, as in Ultravox: ``stack`` consecutive encoder frames become one LLM token.

Whisper's encoder gives 50 frames per second; stacking 8 gives 6.25 LLM tokens per second of audio,
so a 5-s spoken question costs 32 tokens. The stacked frames (``stack * input_dim`` wide) go through
a LayerNorm and a two-layer SwiGLU MLP. The token count follows the clip's length,
``ceil(frames / stack)``: the last group is zero-filled. A resampler would give every clip the same
number of tokens, a 1-s "yes" as many as a 30-s story, so it does not fit audio.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from adapters.norms import scaled_rms_norm
from adapters.registry import register_connector


@register_connector("stack")
class FrameStackProjector(nn.Module):
    """Maps encoder frames ``(B, N, input_dim)`` to LLM tokens ``(B, ceil(N / stack), output_dim)``.

    Args:
        input_dim: Width of the encoder frames.
        output_dim: Width of the LLM's input embeddings.
        num_input_tokens: Frames of one full encoder window (unused: any length is accepted).
        stack: Consecutive frames per output token.
        hidden_dim: Width of the hidden layer; defaults to ``output_dim``.
        output_rms: If given, outputs pass through an RMS norm whose gain starts at this value.
    """

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        num_input_tokens: int,
        stack: int = 8,
        hidden_dim: int | None = None,
        output_rms: float | None = None,
    ) -> None:
        super().__init__()
        if stack < 1:
            raise ValueError(f"stack must be at least 1, got {stack}")
        hidden_dim = hidden_dim or output_dim
        self.stack = stack
        self.input_norm = nn.LayerNorm(input_dim * stack)
        self.gate = nn.Linear(input_dim * stack, hidden_dim)
        self.up = nn.Linear(input_dim * stack, hidden_dim)
        self.down = nn.Linear(hidden_dim, output_dim)
        self.output_norm = scaled_rms_norm(output_dim, output_rms)

    def num_output_tokens(self, num_input_tokens: int) -> int:
        return math.ceil(num_input_tokens / self.stack)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        batch, length, width = frames.shape
        padded = self.num_output_tokens(length) * self.stack
        if padded != length:
            frames = nn.functional.pad(frames, (0, 0, 0, padded - length))
        stacked = self.input_norm(frames.reshape(batch, padded // self.stack, self.stack * width))  # (B, M, S*D)
        hidden = nn.functional.silu(self.gate(stacked)) * self.up(stacked)
        return self.output_norm(self.down(hidden))  # (B, M, D_out)
