"""Connector weights of an adapter artifact: read from safetensors and checked against the config's connectors."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from assistant.errors import AssistantError


def load_connectors(connectors: nn.Module, path: Path) -> None:
    """Load an artifact's connector weights (safetensors), checking names and shapes against ``connectors``."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise AssistantError(f"adapter artifact is missing {path.name}")
    try:
        state = load_file(str(path))
    except Exception as error:  # safetensors raises its own error type for corrupt files
        raise AssistantError(f"cannot read connector weights {path}: {error}") from None
    expected = connectors.state_dict()
    missing, unexpected = set(expected) - set(state), set(state) - set(expected)
    if missing or unexpected:
        raise AssistantError(
            f"connector weights in {path} do not match the config: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise AssistantError(f"connector weight {name} has shape {tuple(tensor.shape)}, expected {tuple(expected[name].shape)}")
    connectors.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
