"""Perceiver-style resampler: a fixed set of learned latents cross-attends to the encoder tokens.

However many tokens the encoder emits, the LLM receives ``num_latents`` of them, which bounds the
visual-token cost per media item (Flamingo, BLIP-2's Q-Former and Qwen-VL use the same idea).
"""

from __future__ import annotations

import torch
from torch import nn

from adapters.norms import scaled_rms_norm
from adapters.position import InputPositionEmbedding
from adapters.registry import register_connector


class ResamplerBlock(nn.Module):
    """Latents attend to [inputs; latents] (Flamingo's choice), then a feed-forward layer."""

    def __init__(self, dim: int, num_heads: int, ff_mult: int) -> None:
        super().__init__()
        self.input_norm = nn.LayerNorm(dim)
        self.latent_norm = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.feed_forward = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, ff_mult * dim), nn.GELU(), nn.Linear(ff_mult * dim, dim)
        )

    def forward(self, inputs: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        queries = self.latent_norm(latents)  # (B, L, D)
        keys = torch.cat([self.input_norm(inputs), queries], dim=1)  # (B, N + L, D)
        attended, _ = self.attention(queries, keys, keys, need_weights=False)
        latents = latents + attended
        return latents + self.feed_forward(latents)  # (B, L, D)


@register_connector("resampler")
class PerceiverResampler(nn.Module):
    """Maps ``(B, N, input_dim)`` encoder tokens to ``(B, num_latents, output_dim)``.

    Args:
        input_dim: Width of the encoder tokens.
        output_dim: Width of the LLM's input embeddings.
        num_input_tokens: Tokens per media item the encoder emits (used by position embeddings).
        hidden_dim: Width the latents work in; defaults to ``output_dim``.
        num_latents: Number of output tokens per media item.
        depth: Number of cross-attention blocks.
        num_heads: Attention heads; must divide ``hidden_dim``.
        position_embedding: ``"none"``, ``"learned"`` or ``"sincos2d"`` added to the inputs.
        output_rms: If given, outputs pass through an RMS norm whose gain starts at this value.
    """

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        num_input_tokens: int,
        hidden_dim: int | None = None,
        num_latents: int = 32,
        depth: int = 2,
        num_heads: int = 8,
        position_embedding: str = "none",
        output_rms: float | None = None,
    ) -> None:
        super().__init__()
        hidden_dim = hidden_dim or output_dim
        if hidden_dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide hidden_dim={hidden_dim}")
        if num_latents < 1 or depth < 1:
            raise ValueError("num_latents and depth must be at least 1")
        self.num_latents = num_latents
        self.positions = InputPositionEmbedding(position_embedding, num_input_tokens, input_dim)
        self.input_proj = nn.Linear(input_dim, hidden_dim)
        self.latents = nn.Parameter(torch.randn(num_latents, hidden_dim) * 0.02)
        self.blocks = nn.ModuleList(ResamplerBlock(hidden_dim, num_heads, ff_mult=2) for _ in range(depth))
        self.output_norm = nn.LayerNorm(hidden_dim)
        self.output_proj = nn.Linear(hidden_dim, output_dim)
        self.output_scale = scaled_rms_norm(output_dim, output_rms)

    def num_output_tokens(self, num_input_tokens: int) -> int:
        return self.num_latents

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        inputs = self.input_proj(self.positions(tokens))  # (B, N, H)
        latents = self.latents.unsqueeze(0).expand(inputs.shape[0], -1, -1)  # (B, L, H)
        for block in self.blocks:
            latents = block(inputs, latents)
        return self.output_scale(self.output_proj(self.output_norm(latents)))  # (B, L, D_out)
