"""Name -> connector class registry.

A connector is an ``nn.Module`` built as ``cls(input_dim, output_dim, num_input_tokens, **options)``
that maps ``(B, N, input_dim)`` to ``(B, cls.num_output_tokens(N), output_dim)``. The registry only
knows names and constructors; which options a connector takes is read from its signature.
"""

from __future__ import annotations

import inspect
import re
from typing import Any, Callable

from torch import nn

CONNECTORS: dict[str, type[nn.Module]] = {}

_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")


def register_connector(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator that registers a connector under a lowercase ``name``.

    Args:
        name: Registry key, lowercase letters, digits and underscores.

    Raises:
        ValueError: If the name is malformed or already registered.
    """
    if not _NAME_PATTERN.match(name):
        raise ValueError(f"connector name {name!r} must match {_NAME_PATTERN.pattern}")
    if name in CONNECTORS:
        raise ValueError(f"connector {name!r} is already registered by {CONNECTORS[name].__name__}")

    def decorator(cls: type[nn.Module]) -> type[nn.Module]:
        if not hasattr(cls, "num_output_tokens"):
            raise TypeError(f"connector {cls.__name__} must define num_output_tokens(num_input_tokens)")
        CONNECTORS[name] = cls
        return cls

    return decorator


def build_connector(
    name: str, input_dim: int, output_dim: int, num_input_tokens: int, **options: Any
) -> nn.Module:
    """Build a registered connector, passing only the options its constructor declares.

    Options that the chosen connector does not take are ignored, so one config can carry
    the settings of every connector kind.
    """
    if name not in CONNECTORS:
        raise KeyError(f"unknown connector {name!r}; registered: {sorted(CONNECTORS)}")
    cls = CONNECTORS[name]
    accepted = inspect.signature(cls.__init__).parameters
    kwargs = {key: value for key, value in options.items() if key in accepted}
    return cls(input_dim=input_dim, output_dim=output_dim, num_input_tokens=num_input_tokens, **kwargs)
