"""An image head that places a frozen encoder's tokens into a text-embedding space (CLIP-style).

``ImageTextHead`` adds a 2-D position signal to the encoder's grid tokens, pools them with a few
learned queries (multi-head attention pooling, as in CoCa/SigLIP's MAP head), and projects the
pooled vectors to the width of a frozen text embedder (MiniLM's 384 for the default). Trained with
``symmetric_info_nce`` against the embeddings of the pictures' captions, a picture and a sentence
describing it become neighbours, so one vector index serves text->picture, picture->picture and
picture->text queries.

Pure torch: it knows nothing about encoders, text models or files.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from adapters.position import InputPositionEmbedding


@dataclass
class ImageTextHeadConfig:
    """Shape of an ``ImageTextHead``; stored beside its weights."""

    input_dim: int = 320  # encoder token width
    num_positions: int = 49  # encoder tokens per picture (a square grid for sincos2d)
    output_dim: int = 384  # text-embedding width
    width: int = 256  # inner width of the pooling attention
    num_queries: int = 4  # learned pooling queries, concatenated before the projection
    num_heads: int = 4
    position_embedding: str = "sincos2d"  # or "learned", "none"

    def __post_init__(self) -> None:
        for name in ("input_dim", "num_positions", "output_dim", "width", "num_queries", "num_heads"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"image head {name} must be a positive integer, got {getattr(self, name)!r}")
        if self.width % self.num_heads:
            raise ValueError(f"image head width {self.width} must be divisible by num_heads {self.num_heads}")
        if self.position_embedding == "sincos2d" and math.isqrt(self.num_positions) ** 2 != self.num_positions:
            raise ValueError(f"sincos2d positions need a square grid of tokens, got {self.num_positions}")

    def to_dict(self) -> dict:
        return asdict(self)


class ImageTextHead(nn.Module):
    def __init__(self, config: ImageTextHeadConfig) -> None:
        super().__init__()
        self.config = config
        self.input_norm = nn.LayerNorm(config.input_dim)
        self.input_projection = nn.Linear(config.input_dim, config.width)
        self.position = InputPositionEmbedding(config.position_embedding, config.num_positions, config.width)
        self.queries = nn.Parameter(torch.randn(config.num_queries, config.width) * 0.02)
        self.attention = nn.MultiheadAttention(config.width, config.num_heads, batch_first=True)
        self.mlp = nn.Sequential(nn.LayerNorm(config.width), nn.Linear(config.width, 2 * config.width), nn.GELU(),
                                 nn.Linear(2 * config.width, config.width))
        self.output = nn.Linear(config.num_queries * config.width, config.output_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(20.0)))  # CLIP's learned temperature, log-space

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, D_in) encoder tokens -> (B, D_out) unit vectors."""
        if tokens.dim() != 3 or tokens.shape[1:] != (self.config.num_positions, self.config.input_dim):
            raise ValueError(f"image head expects (B, {self.config.num_positions}, {self.config.input_dim}) tokens, got {tuple(tokens.shape)}")
        x = self.position(self.input_projection(self.input_norm(tokens)))  # (B, N, W)
        queries = self.queries.unsqueeze(0).expand(x.shape[0], -1, -1)  # (B, Q, W)
        pooled, _ = self.attention(queries, x, x, need_weights=False)  # (B, Q, W)
        pooled = pooled + self.mlp(pooled)
        return F.normalize(self.output(pooled.flatten(1)), dim=-1)  # (B, D_out)


def symmetric_info_nce(image_vectors: torch.Tensor, text_vectors: torch.Tensor, logit_scale: torch.Tensor,
                       same: torch.Tensor | None = None) -> torch.Tensor:
    """CLIP's loss: cross-entropy over picture->text and text->picture similarities, averaged.

    Args:
        image_vectors: (B, D) unit vectors.
        text_vectors: (B, D) unit vectors; row i describes picture i.
        logit_scale: log of the temperature multiplier (clamped to at most 100, as in CLIP).
        same: Optional (B, B) bool, True where pair (i, j) has identical content; such off-diagonal
            pairs are not counted as negatives (repeated scenes would otherwise fight each other).
    """
    logits = logit_scale.exp().clamp(max=100.0) * image_vectors @ text_vectors.T  # (B, B)
    if same is not None:
        off_diagonal_same = same & ~torch.eye(len(logits), dtype=torch.bool, device=logits.device)
        logits = logits.masked_fill(off_diagonal_same, float("-inf"))
    targets = torch.arange(len(logits), device=logits.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))
