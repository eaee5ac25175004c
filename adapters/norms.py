"""Output normalisation shared by the connectors."""

from __future__ import annotations

from torch import nn


def scaled_rms_norm(dim: int, rms: float | None) -> nn.Module:
    """An RMS norm whose gain starts at ``rms`` (so outputs start at that per-dimension scale), or identity."""
    if rms is None:
        return nn.Identity()
    if rms <= 0:
        raise ValueError(f"output_rms must be positive, got {rms}")
    norm = nn.RMSNorm(dim)
    nn.init.constant_(norm.weight, rms)
    return norm
