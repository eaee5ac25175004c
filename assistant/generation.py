"""What a generation request asks for (``SamplingOptions``) and what the engine counts.

The decode engine itself is ``assistant.batching.BatchEngine``; this module holds the plain data
both it and the API layers share, and knows nothing about models.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from assistant.errors import AssistantError


@dataclass
class SamplingOptions:
    """How to pick tokens. ``temperature == 0`` is greedy decoding."""

    max_new_tokens: int = field(default=256, metadata={"help": "upper bound on generated tokens"})
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy; higher = more random"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling mass (with temperature > 0)"})
    stop: list[str] = field(default_factory=list, metadata={"help": "strings that end the reply"})
    seed: int | None = field(default=None, metadata={"help": "seed for reproducible sampling"})

    def __post_init__(self) -> None:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise AssistantError(f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}")
        if not 0.0 <= float(self.temperature) <= 10.0:
            raise AssistantError(f"temperature must be in [0, 10], got {self.temperature!r}")
        if not 0.0 < float(self.top_p) <= 1.0:
            raise AssistantError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if not all(isinstance(s, str) and s for s in self.stop):
            raise AssistantError("stop must be a list of non-empty strings")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed < 2**63):
            raise AssistantError(f"seed must be an integer in [0, 2**63), got {self.seed!r}")


@dataclass
class EngineCounters:
    prefill_tokens: int = 0
    reused_tokens: int = 0
    generated_tokens: int = 0
