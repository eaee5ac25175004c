"""LLaVA-style projector: two linear layers with a GELU, tokens per encoder cell, optionally only the busiest cells.

By default each encoder token (one cell of the image's grid) becomes one LLM token, as in LLaVA.
Two options turn it into an object-token connector for sparse scenes:

- ``tokens_per_cell`` S > 1: each cell becomes S tokens, so a cell that holds an object can say
  several words about it in a row ("large", "red", "circle", "left") rather than one blend of
  them, which an LLM reads the way it reads text (``training.grounding`` teaches those words);
- ``select_cells`` K > 0: a linear head scores every cell's "objectness" and only the K best cells
  reach the LLM, in raster order (top-left to bottom-right), so a picture costs K * S tokens
  whatever the grid size. The head is trained by the grounded alignment objective; the choice
  itself passes no gradient.

``cells`` returns every cell's tokens and scores; the training objective needs them all, the LLM
only the chosen ones (``forward``). The projector knows nothing about words or the LLM.
"""

from __future__ import annotations

import torch
from torch import nn

from adapters.norms import scaled_rms_norm
from adapters.position import InputPositionEmbedding
from adapters.registry import register_connector


@register_connector("mlp")
class MLPProjector(nn.Module):
    """Maps encoder tokens ``(B, N, input_dim)`` to LLM tokens ``(B, num_output_tokens(N), output_dim)``.

    Args:
        input_dim: Width of the encoder tokens.
        output_dim: Width of the LLM's input embeddings.
        num_input_tokens: Tokens per media item the encoder emits (used by position embeddings).
        hidden_dim: Width of the hidden layer; defaults to ``output_dim``.
        position_embedding: ``"none"``, ``"learned"`` or ``"sincos2d"`` added to the inputs.
        output_rms: If given, outputs pass through an RMS norm whose gain starts at this value
            (the LLM's token-embedding RMS), so media tokens begin at the scale of text tokens.
        tokens_per_cell: LLM tokens each encoder cell becomes.
        select_cells: If positive, only this many cells (the highest objectness scores) are passed on.
    """

    keeps_grid = True  # ``cells`` row i is encoder token i (``training.grounding`` relies on it)

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        num_input_tokens: int,
        hidden_dim: int | None = None,
        position_embedding: str = "none",
        output_rms: float | None = None,
        tokens_per_cell: int = 1,
        select_cells: int = 0,
    ) -> None:
        super().__init__()
        if tokens_per_cell < 1:
            raise ValueError(f"tokens_per_cell must be at least 1, got {tokens_per_cell}")
        if not 0 <= select_cells <= num_input_tokens:
            raise ValueError(f"select_cells must be between 0 and the {num_input_tokens} encoder tokens, got {select_cells}")
        hidden_dim = hidden_dim or output_dim
        self.tokens_per_cell = tokens_per_cell
        self.select_cells = select_cells
        self.positions = InputPositionEmbedding(position_embedding, num_input_tokens, input_dim)
        self.input_norm = nn.LayerNorm(input_dim)
        self.linear_in = nn.Linear(input_dim, hidden_dim)
        self.activation = nn.GELU()
        self.linear_out = nn.Linear(hidden_dim, output_dim * tokens_per_cell)
        self.output_norm = scaled_rms_norm(output_dim, output_rms)
        self.objectness = nn.Linear(hidden_dim, 1) if select_cells else None

    def num_output_tokens(self, num_input_tokens: int) -> int:
        return (self.select_cells or num_input_tokens) * self.tokens_per_cell

    def cells(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Every cell's tokens ``(B, N, S, D_out)`` and objectness logits ``(B, N)`` (None without selection)."""
        hidden = self.activation(self.linear_in(self.input_norm(self.positions(tokens))))  # (B, N, H)
        batch, cells = hidden.shape[:2]
        out = self.output_norm(self.linear_out(hidden).view(batch, cells, self.tokens_per_cell, -1))  # (B, N, S, D)
        scores = self.objectness(hidden).squeeze(-1) if self.objectness is not None else None  # (B, N)
        return out, scores

    def chosen_cells(self, scores: torch.Tensor) -> torch.Tensor:
        """Indices ``(B, K)`` of the ``select_cells`` highest objectness scores ``(B, N)``, in raster order."""
        return scores.topk(self.select_cells, dim=1).indices.sort(dim=1).values

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out, scores = self.cells(tokens)  # (B, N, S, D), (B, N)
        if scores is not None:
            chosen = self.chosen_cells(scores)  # (B, K)
            out = out.gather(1, chosen[:, :, None, None].expand(-1, -1, *out.shape[2:]))  # (B, K, S, D)
        return out.flatten(1, 2)  # (B, K * S, D)
