"""Position signals for encoder tokens that a connector adds before mixing them.

``"learned"`` is one trainable vector per input position; ``"sincos2d"`` is a fixed 2-D sine/cosine
table for a square token grid (e.g. the 7x7 EfficientNet map), scaled by a trainable gate.
"""

from __future__ import annotations

import math

import torch
from torch import nn

POSITION_KINDS = ("none", "learned", "sincos2d")


def sincos_2d_table(grid: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sine/cosine position table, (grid * grid, dim), rows in row-major order."""
    if dim % 4:
        raise ValueError(f"sincos2d position embedding needs a width divisible by 4, got {dim}")
    quarter = dim // 4
    frequencies = torch.exp(-math.log(10000.0) * torch.arange(quarter) / quarter)  # (dim/4,)
    coords = torch.arange(grid, dtype=torch.float32)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")  # (grid, grid) each
    row_angles = rows.reshape(-1, 1) * frequencies  # (grid*grid, dim/4)
    col_angles = cols.reshape(-1, 1) * frequencies
    return torch.cat([row_angles.sin(), row_angles.cos(), col_angles.sin(), col_angles.cos()], dim=-1)


class InputPositionEmbedding(nn.Module):
    """Adds a position signal to ``(B, N, D)`` tokens; N must equal ``num_positions``."""

    def __init__(self, kind: str, num_positions: int, dim: int) -> None:
        super().__init__()
        if kind not in POSITION_KINDS:
            raise ValueError(f"position embedding {kind!r} is not one of {POSITION_KINDS}")
        self.kind = kind
        self.num_positions = num_positions
        if kind == "learned":
            self.table = nn.Parameter(torch.randn(num_positions, dim) * 0.02)
        elif kind == "sincos2d":
            grid = math.isqrt(num_positions)
            if grid * grid != num_positions:
                raise ValueError(f"sincos2d needs a square token grid, got {num_positions} tokens")
            self.register_buffer("table", sincos_2d_table(grid, dim), persistent=False)
            self.gate = nn.Parameter(torch.tensor(0.1))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.kind == "none":
            return tokens
        if tokens.shape[1] != self.num_positions:
            raise ValueError(
                f"connector was built for {self.num_positions} input tokens, got {tokens.shape[1]}"
            )
        table = self.table.to(tokens.dtype)
        if self.kind == "sincos2d":
            table = table * self.gate.to(tokens.dtype) * tokens.detach().std()
        return tokens + table  # (B, N, D)

