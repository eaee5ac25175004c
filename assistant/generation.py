"""Token generation over one conversation's KV cache, reusing the cache for a shared prefix.

The engine keeps the KV cache of the last sequence it processed together with one key per cached
position. A new request's keys are compared with the cached ones; the common prefix stays, the rest
of the cache is cropped, and only the new suffix is prefilled (in chunks, so cancellation is prompt).
It yields token ids; it knows nothing about text, media or templates.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterator

import torch
from transformers import DynamicCache, PreTrainedModel, TemperatureLogitsWarper, TopPLogitsWarper

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


@dataclass
class EngineCounters:
    prefill_tokens: int = 0
    reused_tokens: int = 0
    generated_tokens: int = 0


def common_prefix_length(cached: list[Hashable], new: list[Hashable]) -> int:
    length = min(len(cached), len(new))
    for index in range(length):
        if cached[index] != new[index]:
            return index
    return length


class DecodeEngine:
    def __init__(self, model: Any, stop_token_ids: set[int], counters: EngineCounters, prefill_chunk: int = 512) -> None:
        self.model = model  # only its ``llm`` is used, read on each call so a swapped LLM is never stale
        self.stop_token_ids = stop_token_ids
        self.counters = counters
        self.prefill_chunk = prefill_chunk
        self._cache: DynamicCache | None = None
        self._keys: list[Hashable] = []

    @property
    def llm(self) -> PreTrainedModel:
        return self.model.llm

    def reset(self) -> None:
        """Forget the cached conversation (the next request prefills from scratch)."""
        self._cache, self._keys = None, []

    @property
    def cached_tokens(self) -> int:
        return len(self._keys)

    def _forward(self, **inputs) -> torch.Tensor:
        try:
            return self.llm(past_key_values=self._cache, use_cache=True, logits_to_keep=1, **inputs).logits[:, -1]
        except BaseException:
            self.reset()  # the cache may hold positions the keys do not: drop both
            raise

    def generate(
        self,
        keys: list[Hashable],
        embed_suffix: Callable[[int], torch.Tensor],
        options: SamplingOptions,
        cancel: threading.Event,
        reuse_prefix: bool = True,
        constraint: Any = None,
    ) -> Iterator[int]:
        """Prefill what is not cached, then yield sampled token ids until a stop token or the limit.

        Args:
            keys: One hashable per prompt position (token id, or media key + offset).
            embed_suffix: Given a start position, returns the prompt's embeddings from there (1, T, D).
            options: Sampling settings.
            cancel: Checked between prefill chunks and before every decode step.
            reuse_prefix: Reuse the cached KV for the longest common prefix.
            constraint: Optional grammar state with ``mask(logits) -> logits`` (called before each
                pick) and ``accept(token)`` (after), e.g. ``assistant.tools.grammar.GrammarConstraint``.
        """
        reused = common_prefix_length(self._keys, keys) if reuse_prefix and self._cache is not None else 0
        reused = min(reused, len(keys) - 1)  # at least one position must run to produce logits
        if reused == 0:
            self._cache = DynamicCache(config=self._base_config())
            self._keys = []
        elif len(self._keys) > reused:
            self._cache.crop(reused - len(self._keys))
            del self._keys[reused:]
        self.counters.reused_tokens += reused
        generator = torch.Generator().manual_seed(options.seed) if options.seed is not None else None
        warpers = []
        if options.temperature > 0:
            warpers.append(TemperatureLogitsWarper(float(options.temperature)))
            if options.top_p < 1.0:
                warpers.append(TopPLogitsWarper(float(options.top_p)))
        with torch.inference_mode():
            try:
                embeddings = embed_suffix(reused)  # (1, T - reused, D)
            except BaseException:
                self.reset()
                raise
            logits = None
            for start in range(0, embeddings.shape[1], self.prefill_chunk):
                if cancel.is_set():
                    return
                chunk = embeddings[:, start : start + self.prefill_chunk]
                logits = self._forward(inputs_embeds=chunk)
                self._keys.extend(keys[reused + start : reused + start + chunk.shape[1]])
                self.counters.prefill_tokens += chunk.shape[1]
            for step in range(options.max_new_tokens):
                if constraint is not None:
                    logits = constraint.mask(logits)
                token = self._pick(logits, warpers, generator)
                if constraint is not None:
                    constraint.accept(token)
                self.counters.generated_tokens += 1
                yield token
                if token in self.stop_token_ids or step == options.max_new_tokens - 1 or cancel.is_set():
                    return
                logits = self._forward(input_ids=torch.tensor([[token]], device=logits.device))
                self._keys.append(token)

    @staticmethod
    def _pick(logits: torch.Tensor, warpers: list, generator: torch.Generator | None) -> int:
        if not warpers:
            return int(logits.argmax(dim=-1))
        scores = logits.float()
        for warper in warpers:
            scores = warper(None, scores)
        probabilities = torch.softmax(scores, dim=-1).cpu()  # (1, V)
        return int(torch.multinomial(probabilities, 1, generator=generator))

    def _base_config(self):
        base = self.llm.get_base_model() if hasattr(self.llm, "get_base_model") else self.llm
        return base.config
