"""LLaVA-style projector: two linear layers with a GELU, one output token per input token."""

from __future__ import annotations

import torch
from torch import nn

from adapters.norms import scaled_rms_norm
from adapters.position import InputPositionEmbedding
from adapters.registry import register_connector


@register_connector("mlp")
class MLPProjector(nn.Module):
    """Maps each encoder token ``(B, N, input_dim)`` to one LLM token ``(B, N, output_dim)``.

    Args:
        input_dim: Width of the encoder tokens.
        output_dim: Width of the LLM's input embeddings.
        num_input_tokens: Tokens per media item the encoder emits (used by position embeddings).
        hidden_dim: Width of the hidden layer; defaults to ``output_dim``.
        position_embedding: ``"none"``, ``"learned"`` or ``"sincos2d"`` added to the inputs.
        output_rms: If given, outputs pass through an RMS norm whose gain starts at this value
            (the LLM's token-embedding RMS), so media tokens begin at the scale of text tokens.
    """

    keeps_grid = True  # output token i is input token i (``training.grounding`` relies on it)

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        num_input_tokens: int,
        hidden_dim: int | None = None,
        position_embedding: str = "none",
        output_rms: float | None = None,
    ) -> None:
        super().__init__()
        hidden_dim = hidden_dim or output_dim
        self.positions = InputPositionEmbedding(position_embedding, num_input_tokens, input_dim)
        self.input_norm = nn.LayerNorm(input_dim)
        self.linear_in = nn.Linear(input_dim, hidden_dim)
        self.activation = nn.GELU()
        self.linear_out = nn.Linear(hidden_dim, output_dim)
        self.output_norm = scaled_rms_norm(output_dim, output_rms)

    @staticmethod
    def num_output_tokens(num_input_tokens: int) -> int:
        return num_input_tokens

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = self.input_norm(self.positions(tokens))  # (B, N, D_in)
        return self.output_norm(self.linear_out(self.activation(self.linear_in(tokens))))  # (B, N, D_out)
