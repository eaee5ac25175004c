"""Continuous batching: concurrent requests decoded together over one pool of KV prefixes.

One worker thread owns the model. A request is submitted with one key per prompt position, a
callback that embeds the prompt from a given position on, sampling options, its own cancel event and
an optional grammar; it gets back an iterator of token ids. Each turn of the worker loop:

1. drops requests whose cancel event is set (or whose reader went away);
2. prefills one chunk of the oldest waiting request on its own batch-1 cache, which starts from the
   longest prefix found in the ``KVPool`` (its own previous turn, or a system prompt another session
   already prefilled); a fully prefilled prompt is put in the pool at once, so requests that arrive
   together share their common prefix;
3. runs one decode step for every running request together. Their caches sit left-padded in one
   batch; each row has its own positions and attention mask, so a row computes what it would alone.
   A request that finishes leaves between steps and its cache goes back to the pool; a new one
   joins between steps.

transformers has a continuous-batching manager (``generate_batch`` / ``init_continuous_batching``),
and it is not used here: it takes token ids only (no ``inputs_embeds``, so no connector tokens), its
prefix sharing hashes token ids (every picture's placeholder ids are alike, so two different
pictures would share blocks), and it has no per-request grammar or cancel event.

It assumes full-attention cache layers (Llama, Qwen2, SmolLM2): rows are padded and sliced by
position, which a sliding-window layer's cache does not keep once a context outgrows its window.
This module knows nothing about text, media or templates.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterator

import torch
from transformers import DynamicCache, TemperatureLogitsWarper, TopPLogitsWarper

from assistant.errors import AssistantError
from assistant.generation import EngineCounters, SamplingOptions
from assistant.kv_pool import KVPool, Layers, common_prefix_length

logger = logging.getLogger(__name__)

_END = object()
MIN_TEMPERATURE = 1e-4  # below this sampling is greedy decoding (its limit), not an overflow to inf
WIDE_PREFILL = 128  # positions in one prefill pass from which it runs on every thread
SHARE_AT_LEAST = 16  # positions a waiting prompt must share with one being prefilled to wait for its cache
IDLE_EXIT_S = 2.0  # the worker thread ends after this long without work (and restarts on demand)
_ENGINES: "weakref.WeakSet[BatchEngine]" = weakref.WeakSet()


@atexit.register
def _stop_workers() -> None:
    # A worker left running into interpreter shutdown would die inside a torch call (the process aborts).
    for engine in list(_ENGINES):
        engine.close()


@dataclass
class _Sequence:
    keys: list[Hashable]  # one per prompt position
    embed_suffix: Callable[[int], torch.Tensor]
    options: SamplingOptions
    cancel: threading.Event
    constraint: Any
    reuse_prefix: bool
    name: Hashable | None  # pool entry this sequence is stored under (a session id when given)
    epoch: int = 0  # the pool generation it started in; a reset since then means its cache is stale
    out: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    abandoned: bool = False  # the reader closed its iterator
    failed: bool = False  # its reader was sent an error (nothing more is sent, nothing is stored)
    past: Layers | None = None  # the cached positions while prefilling, (1, H, cursor, D) per layer
    embeddings: torch.Tensor | None = None  # (1, T - reused, D), consumed chunk by chunk
    cursor: int = 0  # prompt positions already in the cache
    start: int = 0  # where ``embeddings`` begins
    generated: list[int] = field(default_factory=list)
    length: int = 0  # positions in the cache (prompt + fed tokens)
    warpers: list = field(default_factory=list)
    generator: torch.Generator | None = None
    slot: Any = None  # where another backend keeps this sequence's cache (assistant.llama_cpp_engine)

    @property
    def stopped(self) -> bool:
        return self.abandoned or self.cancel.is_set()

    def cached_keys(self) -> list[Hashable]:
        return self.keys + self.generated[: self.length - len(self.keys)]


class BatchEngine:
    def __init__(
        self,
        model: Any,
        stop_token_ids: set[int],
        counters: EngineCounters,
        pool_mb: float = 512.0,
        max_batch: int = 16,
        prefill_chunk: int = 512,
        threads: int = 1,
    ) -> None:
        self.model = model  # only its ``llm`` is used, read on each step so a swapped LLM is never stale
        self.stop_token_ids = stop_token_ids
        self.counters = counters
        self.max_batch = max_batch
        self.prefill_chunk = prefill_chunk
        self.threads = threads  # for decode steps
        self.prefill_threads = torch.get_num_threads()  # prompts are compute-bound: every thread helps
        self.pool = KVPool(pool_mb)
        self._submitted: list[_Sequence] = []
        self._waiting: list[_Sequence] = []  # admitted, prefilling in order
        self._rows: list[_Sequence] = []  # decoding together
        self._batch: DynamicCache | None = None  # (B, H, L, D) per layer, rows left-padded
        self._mask: torch.Tensor | None = None  # (B, L) 1 where a row has a real position
        self._wake = threading.Condition()
        self._worker: threading.Thread | None = None
        self._reset_requested = False
        self._closed = False
        self._epoch = 0
        self.peak_batch = 0
        _ENGINES.add(self)

    # ---------------------------------------------------------------- caller side (any thread)

    def submit(
        self,
        keys: list[Hashable],
        embed_suffix: Callable[[int], torch.Tensor],
        options: SamplingOptions,
        cancel: threading.Event,
        reuse_prefix: bool = True,
        constraint: Any = None,
        session: Hashable | None = None,
    ) -> Iterator[int]:
        """Queue a request; iterate the result for its token ids (the last may be a stop token).

        Args:
            keys: One hashable per prompt position (token id, or media key + offset).
            embed_suffix: Given a start position, returns the prompt's embeddings from there (1, T, D).
                Runs on the worker thread.
            options: Sampling settings.
            cancel: Ends this request (only this one) when set; checked before every step.
            reuse_prefix: Start from the longest cached prefix in the pool.
            constraint: Optional grammar state with ``mask(logits) -> logits`` and ``accept(token)``.
            session: Pool entry name for this conversation; without one a continuation replaces the
                entry it continued.
        """
        if not keys:
            raise ValueError("a request needs at least one prompt position")
        sequence = _Sequence(list(keys), embed_suffix, options, cancel, constraint, reuse_prefix, session)
        if options.temperature >= MIN_TEMPERATURE:
            sequence.warpers.append(TemperatureLogitsWarper(float(options.temperature)))
            if options.top_p < 1.0:
                sequence.warpers.append(TopPLogitsWarper(float(options.top_p)))
        if options.seed is not None:
            sequence.generator = torch.Generator().manual_seed(options.seed)
        with self._wake:
            if self._closed:
                raise AssistantError("the assistant's decode engine was closed")
            self._submitted.append(sequence)
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._loop, name="assistant-decode", daemon=True)
                self._worker.start()
            self._wake.notify()
        return self._read(sequence)

    def _read(self, sequence: _Sequence) -> Iterator[int]:
        try:
            while True:
                item = sequence.out.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            sequence.abandoned = True  # a reader that stops early frees its row at the next step

    def reset(self) -> None:
        """Forget every cached prefix (needed after the connector or LoRA changed)."""
        with self._wake:
            self._reset_requested = True
            if self._worker is None or not self._worker.is_alive():
                self.pool.clear()
                self._reset_requested = False

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the worker thread after its current step; unfinished requests end with an error."""
        with self._wake:
            self._closed = True
            self._wake.notify_all()
            worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout_s)

    @property
    def active(self) -> int:
        """Requests queued, prefilling or decoding."""
        return len(self._submitted) + len(self._waiting) + len(self._rows)

    # ---------------------------------------------------------------- worker thread

    def _loop(self) -> None:
        # OpenMP's thread count is per calling thread: this sets the worker's alone. A team started
        # from a non-main thread ran slowly here: on 2 cores one thread decoded a batch of 4 in
        # 111 ms and 16 in 163 ms, two threads in 207 and 221 ms (the main thread with two: 112, 129).
        # Prefill is compute-bound and gains from two (344 vs 259 tokens/s), so a long one switches:
        # a 1943-token prompt's first token came after 5.7 s instead of 8.0 s; a short one's after
        # 240 ms without the switch and 310 ms with it.
        torch.set_num_threads(self.threads)
        with torch.inference_mode():
            while True:
                with self._wake:
                    if self._closed:
                        self._shut_down()
                        return
                    if not (self._submitted or self._waiting or self._rows):
                        self._wake.wait(IDLE_EXIT_S)
                        if not (self._submitted or self._waiting or self._rows):
                            self._worker = None
                            return
                    self._waiting.extend(self._submitted)
                    self._submitted.clear()
                    if self._reset_requested:
                        self.pool.clear()
                        self._epoch += 1
                        self._reset_requested = False
                try:
                    self._drop_stopped()
                    if self._waiting and len(self._rows) < self.max_batch:
                        self._prefill_waiting()
                    if self._rows:
                        self._decode_step()
                except Exception as error:  # noqa: BLE001 - never leave a reader waiting on a dead step
                    logger.exception("decode step failed; %d requests end with the error", len(self._waiting) + len(self._rows))
                    for sequence in self._waiting + self._rows:
                        self._fail(sequence, error)
                    self._waiting, self._rows, self._batch, self._mask = [], [], None, None

    def _shut_down(self) -> None:
        error = AssistantError("the assistant shut down before this request finished")
        for sequence in self._submitted + self._waiting + self._rows:
            self._fail(sequence, error)
        self._submitted, self._waiting, self._rows, self._batch, self._mask = [], [], [], None, None
        self._worker = None

    @staticmethod
    def _fail(sequence: _Sequence, error: BaseException) -> None:
        if not sequence.failed:
            sequence.failed = True
            sequence.out.put(error)

    @staticmethod
    def _end(sequence: _Sequence) -> None:
        if not sequence.failed:
            sequence.out.put(_END)

    def _drop_stopped(self) -> None:
        for sequence in [s for s in self._waiting if s.stopped]:
            self._waiting.remove(sequence)
            self._end(sequence)
        stopped = [index for index, row in enumerate(self._rows) if row.stopped]
        if stopped:
            self._leave(stopped)

    def _prefill_waiting(self) -> None:
        """Prefill waiting prompts together, up to a token budget (smaller while others decode, so
        their streams do not stall); a finished prompt samples its first token and joins the batch.

        A prompt that shares a longer prefix with one already in this group than with anything in
        the pool waits one step: then it reuses that prompt's cache instead of computing it again.
        """
        budget = self.prefill_chunk if not self._rows else max(self.prefill_chunk // 4, 32)
        group: list[_Sequence] = []
        sizes: list[int] = []
        for sequence in list(self._waiting):
            if budget <= 0 or len(self._rows) + len(group) >= self.max_batch:
                break
            if sequence.embeddings is None:
                name, cached = self.pool.longest_prefix(sequence.keys) if sequence.reuse_prefix else (None, 0)
                shared = max((common_prefix_length(other.keys, sequence.keys) for other in group), default=0)
                if sequence.reuse_prefix and shared > cached + SHARE_AT_LEAST:
                    continue
                try:
                    self._start(sequence, name, cached)
                except Exception as error:  # noqa: BLE001 - delivered to the request's reader
                    self._waiting.remove(sequence)
                    self._fail(sequence, error)
                    continue
            remaining = len(sequence.keys) - sequence.cursor
            if group and remaining > budget:
                break  # a long prompt goes next step, in chunks of its own
            group.append(sequence)
            sizes.append(min(remaining, budget))
            budget -= sizes[-1]
        if group:
            self._prefill_group(group, sizes)

    def _start(self, sequence: _Sequence, name: Hashable | None, cached: int) -> None:
        """Begin prefilling after the first ``cached`` positions, taken from pool entry ``name``."""
        sequence.epoch = self._epoch
        reused = min(cached, len(sequence.keys) - 1)  # at least one position must run to produce logits
        if sequence.name is None:
            # A continuation of a whole entry (the next turn of that conversation) replaces it.
            sequence.name = name if name is not None and self.pool.covers(name, reused) else self.pool.new_name()
        sequence.past = self.pool.prefix(name, reused) if reused else None
        self.counters.reused_tokens += reused
        sequence.start = sequence.cursor = reused
        sequence.embeddings = sequence.embed_suffix(reused)

    def _prefill_group(self, group: list[_Sequence], sizes: list[int]) -> None:
        """One forward pass over the next ``sizes[i]`` prompt positions of each ``group[i]``.

        Rows are right-padded: row i's cached past fills columns [0, p_i) of the P past columns and
        its new positions columns [P, P + n_i) of the N new ones; padding is masked out and comes
        after a real position in every row, so no query is left with nothing to attend to.
        """
        llm, device = self.model.llm, self.model.device
        past_width, width = max(s.cursor for s in group), max(sizes)
        dimension = group[0].embeddings.shape[-1]
        embeddings = torch.zeros(len(group), width, dimension, dtype=group[0].embeddings.dtype, device=device)  # (B, N, D)
        mask = torch.zeros(len(group), past_width + width, dtype=torch.long, device=device)  # (B, P + N)
        positions = torch.zeros(len(group), width, dtype=torch.long, device=device)  # (B, N)
        for row, (sequence, size) in enumerate(zip(group, sizes)):
            offset = sequence.cursor - sequence.start
            embeddings[row, :size] = sequence.embeddings[0, offset : offset + size]
            mask[row, : sequence.cursor] = 1
            mask[row, past_width : past_width + size] = 1
            positions[row] = torch.arange(sequence.cursor, sequence.cursor + width).clamp(max=sequence.cursor + size - 1)
        cache = DynamicCache(config=self._base_config())
        if past_width:
            reference = next(s.past for s in group if s.past)
            cache = DynamicCache(
                [tuple(torch.cat([_right_pad(s.past, reference, layer, side, past_width) for s in group]) for side in (0, 1))
                 for layer in range(len(reference))],
                config=self._base_config(),
            )
        ends = sorted(set(sizes))  # each row's last real position; logits only there (the model's own head)
        wide = sum(sizes) >= WIDE_PREFILL and self.prefill_threads != self.threads
        if wide:  # switching teams costs tens of ms: worth it for long prompts only
            torch.set_num_threads(self.prefill_threads)
        try:
            logits = llm(
                inputs_embeds=embeddings, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True,
                logits_to_keep=torch.tensor([end - 1 for end in ends], device=device),
            ).logits  # (B, len(ends), V)
            logits = logits[torch.arange(len(group), device=device), torch.tensor([ends.index(n) for n in sizes], device=device)]
        except Exception as error:  # noqa: BLE001 - every request of the group gets the error
            for sequence in group:
                self._waiting.remove(sequence)
                self._fail(sequence, error)
            return
        finally:
            if wide:
                torch.set_num_threads(self.threads)
        for row, (sequence, size) in enumerate(zip(group, sizes)):
            sequence.past = [
                tuple(torch.cat([t[row : row + 1, :, : sequence.cursor], t[row : row + 1, :, past_width : past_width + size]], dim=2)
                      for t in (layer.keys, layer.values))
                for layer in cache.layers
            ]
            sequence.cursor += size
            sequence.length = sequence.cursor
            self.counters.prefill_tokens += size
            if sequence.cursor < len(sequence.keys):
                continue
            self._waiting.remove(sequence)
            layers, sequence.past, sequence.embeddings = sequence.past, None, None
            self._store(sequence, layers)  # a later request with the same prefix reuses it
            if self._sample(sequence, logits[row : row + 1]):
                self._end(sequence)
            else:
                self._join(sequence, layers)

    def _forward(self, cache: DynamicCache, **inputs) -> torch.Tensor:
        return self.model.llm(cache=cache, use_cache=True, logits_to_keep=1, **inputs).logits[:, -1]  # (B, V)

    def _sample(self, sequence: _Sequence, logits: torch.Tensor) -> bool:
        """Pick the next token from ``logits`` (1, V) and hand it to the reader; True when the sequence
        ends (an error while picking, e.g. from its grammar, ends it with that error)."""
        try:
            if sequence.constraint is not None:
                logits = sequence.constraint.mask(logits)
            token = pick(logits, sequence.warpers, sequence.generator)
            if sequence.constraint is not None:
                sequence.constraint.accept(token)
        except Exception as error:  # noqa: BLE001 - delivered to this request's reader alone
            self._fail(sequence, error)
            return True
        sequence.generated.append(token)
        self.counters.generated_tokens += 1
        sequence.out.put(token)
        return token in self.stop_token_ids or len(sequence.generated) >= sequence.options.max_new_tokens or sequence.stopped

    def _join(self, sequence: _Sequence, layers: Layers) -> None:
        """Add a prefilled sequence as a new row of the batch, left-padding whichever side is shorter."""
        length = layers[0][0].shape[2]
        if self._batch is None:
            self._batch = DynamicCache(config=self._base_config())
            for layer, (k, v) in zip(self._batch.layers, layers):
                layer.lazy_initialization(k, v)
                layer.keys, layer.values = k, v
            self._mask = torch.ones(1, length, dtype=torch.long, device=k.device)
        else:
            width = self._mask.shape[1]
            grow = max(length - width, 0)
            for layer, (k, v) in zip(self._batch.layers, layers):
                layer.keys = torch.cat([_left_pad(layer.keys, grow), _left_pad(k, width + grow - length)])
                layer.values = torch.cat([_left_pad(layer.values, grow), _left_pad(v, width + grow - length)])
            row = torch.zeros(1, width + grow, dtype=torch.long, device=self._mask.device)
            row[:, width + grow - length :] = 1
            self._mask = torch.cat([torch.nn.functional.pad(self._mask, (grow, 0)), row])
        self._rows.append(sequence)
        self.peak_batch = max(self.peak_batch, len(self._rows))

    def _decode_step(self) -> None:
        device = self._mask.device
        tokens = torch.tensor([[row.generated[-1]] for row in self._rows], device=device)  # (B, 1)
        positions = torch.tensor([[row.length] for row in self._rows], device=device)  # (B, 1)
        mask = torch.cat([self._mask, torch.ones(len(self._rows), 1, dtype=torch.long, device=device)], dim=1)
        try:
            logits = self._forward(self._batch, input_ids=tokens, attention_mask=mask, position_ids=positions)
        except Exception as error:  # noqa: BLE001 - every row's reader gets the error
            logger.exception("batched decode step failed; %d requests end with the error", len(self._rows))
            for row in self._rows:
                self._fail(row, error)
            self._rows, self._batch, self._mask = [], None, None
            return
        self._mask = mask
        finished = []
        for index, row in enumerate(self._rows):
            row.length += 1
            if self._sample(row, logits[index : index + 1]):
                finished.append(index)
        if finished:
            self._leave(finished)

    def _leave(self, indices: list[int]) -> None:
        """Remove rows from the batch, storing each one's cache in the pool and ending its stream."""
        width = self._mask.shape[1]
        for index in indices:
            row = self._rows[index]
            layers = [
                (layer.keys[index : index + 1, :, width - row.length :].clone(), layer.values[index : index + 1, :, width - row.length :].clone())
                for layer in self._batch.layers
            ]
            self._store(row, layers)
            self._end(row)
        keep = [index for index in range(len(self._rows)) if index not in set(indices)]
        self._rows = [self._rows[index] for index in keep]
        if not keep:
            self._batch, self._mask = None, None
            return
        selected = torch.tensor(keep, device=self._mask.device)
        mask = self._mask.index_select(0, selected)
        first = int(mask.any(dim=0).nonzero()[0])  # columns before it are padding in every remaining row
        self._mask = mask[:, first:]
        for layer in self._batch.layers:
            layer.keys = layer.keys.index_select(0, selected)[:, :, first:]
            layer.values = layer.values.index_select(0, selected)[:, :, first:]

    def _store(self, sequence: _Sequence, layers: Layers) -> None:
        if sequence.reuse_prefix and sequence.epoch == self._epoch and not sequence.failed:
            self.pool.put(sequence.name, sequence.cached_keys(), layers)

    def _base_config(self):
        llm = self.model.llm
        base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm
        return base.config


def pick(logits: torch.Tensor, warpers: list, generator: torch.Generator | None) -> int:
    """Greedy (no warpers) or sampled token from ``logits`` (1, V)."""
    if not warpers:
        return int(logits.argmax(dim=-1))
    scores = logits.float()
    for warper in warpers:
        scores = warper(None, scores)
    probabilities = torch.softmax(scores, dim=-1).cpu()  # (1, V)
    return int(torch.multinomial(probabilities, 1, generator=generator))


def _right_pad(past: Layers | None, reference: Layers, layer: int, side: int, width: int) -> torch.Tensor:
    """Layer ``layer``'s keys (side 0) or values (side 1) of ``past`` zero-padded after to ``width``
    positions (all zeros, shaped like ``reference``, when there is no past)."""
    if past is None:
        like = reference[layer][side]  # (1, H, T, D)
        return like.new_zeros(1, like.shape[1], width, like.shape[3])
    tensor = past[layer][side]
    return torch.nn.functional.pad(tensor, (0, 0, 0, width - tensor.shape[2]))


def _left_pad(tensor: torch.Tensor, amount: int) -> torch.Tensor:
    """Zero positions in front of a (B, H, T, D) cache tensor."""
    return torch.nn.functional.pad(tensor, (0, 0, amount, 0)) if amount else tensor
