"""Continuous batching on llama.cpp: ``BatchEngine``'s scheduling, llama.cpp's kernels and KV cache.

Serving mode ``llama_cpp`` (``LLMConfig.serving``). The LLM runs in llama.cpp (llama-cpp-python's C
API) from a GGUF file of the LoRA-merged weights, or from the GGUF file it was loaded from plus its LoRA
as a llama.cpp adapter (``assistant.llm_serving.llama_cpp_weights``); everything before the LLM stays in
PyTorch. The request contract is ``BatchEngine.submit``'s, and so are the worker loop, admission,
cancellation, sampling, grammars and counters (inherited); what differs is where the cache lives and how
a step runs:

- prompts go in as embeddings (llama.cpp's batch ``embd`` input): the text tokens' rows of our own
  embedding table and the connectors' media tokens alike, so pictures and audio need nothing new;
  generated tokens go in as token ids;
- each request decodes in a llama.cpp *sequence* of one shared (unified) KV cache. A sequence that
  finished keeps its cells, with one key per position (``_Slot``): the next turn of the conversation
  continues it after removing what differs, and a request sharing only a prefix with it (a system
  prompt, tool schemas) gets those cells shared by ``llama_memory_seq_cp``, without recomputing or
  copying them;
- one decode step feeds every running sequence's last token in one ``llama_decode`` call; a finished
  sequence leaves between steps, a prefilled one joins.

A request is not bit-for-bit the same beside others as alone: llama.cpp's CPU kernels depend on how many
rows share a call (``ggml_vec_dot`` for one, tinyBLAS for several; tiled flash attention from 64 query
rows). A one-row call gets a filler row (``_pad``), so a decode step alone and beside others take the same
kernels; a prefix computed token by token and the same text prefilled at once still round differently.

When the cache is full, the least recently used idle sequence is dropped (``evictions``); an evicted
conversation prefills again. Needs ``llama-cpp-python`` (``pip install 'multimodal-assistant[llama]'``;
``run.sh`` builds it for AVX-512 without AMX, which crashed here).
"""

from __future__ import annotations

import ctypes
import itertools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Hashable

import numpy as np
import torch

from assistant.batching import SHARE_AT_LEAST, BatchEngine, _Sequence
from assistant.errors import AssistantError
from assistant.generation import EngineCounters
from assistant.kv_pool import common_prefix_length

logger = logging.getLogger(__name__)

KV_BYTES = 2  # llama.cpp's default cache type is f16
_LOG_LEVELS = {4: logging.WARNING, 3: logging.INFO}  # ggml error, warning; info, debug and continuations: DEBUG
_LOG_CALLBACK: Any = None
MIN_CONTEXT = 256  # positions; llama.cpp allocates the cache in blocks of 256


def import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError:
        raise AssistantError(
            "llm serving 'llama_cpp' needs llama-cpp-python: pip install 'multimodal-assistant[llama]' "
            "(run.sh builds it with CMAKE_ARGS='-DGGML_NATIVE=OFF -DGGML_AVX512=ON')"
        ) from None
    global _LOG_CALLBACK
    if _LOG_CALLBACK is None:  # llama.cpp's own lines go to logging ("llama.cpp"), not straight to stderr
        native = logging.getLogger("llama.cpp")

        @llama_cpp.llama_log_callback
        def route(level: int, text: bytes, _data: Any) -> None:
            line = text.decode("utf-8", "replace").rstrip()
            if line:
                native.log(_LOG_LEVELS.get(level, logging.DEBUG), line)

        _LOG_CALLBACK = route  # kept: llama.cpp calls it for the life of the process
        llama_cpp.llama_log_set(route, None)
    return llama_cpp


@dataclass(eq=False)
class _Slot:
    """One llama.cpp sequence and the key of every position it holds in the cache."""

    seq_id: int
    keys: list[Hashable] = field(default_factory=list)
    name: Hashable | None = None
    used: int = 0  # tick of its last use, for least-recently-used eviction


class SlotPool:
    """The cached sequences, with the counters ``KVPool`` offers (size, evictions)."""

    def __init__(self, count: int, bytes_per_position: int, drop: Any, busy: Any) -> None:
        self.slots = [_Slot(seq_id) for seq_id in range(count)]
        self.bytes_per_position = bytes_per_position
        self.evictions = 0
        self._drop = drop  # (slot) -> None: removes a slot's cells from the cache
        self._busy = busy  # () -> set of slots in use by a request
        self._clock = itertools.count(1)
        self._anonymous = itertools.count()

    def __len__(self) -> int:
        return sum(1 for slot in self.slots if slot.keys)

    @property
    def cached_tokens(self) -> int:
        return sum(len(slot.keys) for slot in self.slots)

    @property
    def nbytes(self) -> int:  # shared prefixes counted once per sequence: an upper bound
        return self.cached_tokens * self.bytes_per_position

    def new_name(self) -> Hashable:
        return ("anonymous", next(self._anonymous))

    def touch(self, slot: _Slot) -> None:
        slot.used = next(self._clock)

    def longest_prefix(self, keys: list[Hashable]) -> tuple[_Slot | None, int]:
        best, best_length = None, 0
        for slot in self.slots:
            length = common_prefix_length(slot.keys, keys)
            if length > best_length:
                best, best_length = slot, length
        return best, best_length

    def idle(self) -> list[_Slot]:
        busy = self._busy()
        return [slot for slot in self.slots if slot not in busy]

    def forget(self, slot: _Slot) -> None:
        self._drop(slot)
        slot.keys, slot.name = [], None

    def evict_one(self, keep: _Slot | None = None) -> _Slot | None:
        """Drop the least recently used idle sequence holding cells (not ``keep``); returns it, or None."""
        candidates = [slot for slot in self.idle() if slot.keys and slot is not keep]
        if not candidates:
            return None
        victim = min(candidates, key=lambda slot: slot.used)
        self.forget(victim)
        self.evictions += 1
        return victim

    def clear(self) -> None:
        """Forget every idle sequence (busy ones are dropped when they finish: their epoch is stale)."""
        for slot in self.idle():
            self.forget(slot)


class LlamaCppEngine(BatchEngine):
    def __init__(
        self,
        model: Any,
        gguf_file: Path,
        stop_token_ids: set[int],
        counters: EngineCounters,
        pool_mb: float = 512.0,
        max_batch: int = 16,
        prefill_chunk: int = 512,
        threads: int = 1,
        llama_threads: int | None = None,
        lora_file: Path | None = None,
    ) -> None:
        super().__init__(model, stop_token_ids, counters, 0.0, max_batch, prefill_chunk, threads)
        self.gguf_file, self.lora_file = gguf_file, lora_file
        lib = self._lib = import_llama_cpp()
        config = model.llm.config
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        per_position = config.num_hidden_layers * 2 * config.num_key_value_heads * head_dim * KV_BYTES
        # As many positions as kv_pool_mb holds, and no more than every row could use (the cache is allocated up front).
        most = max(MIN_CONTEXT, max_batch * config.max_position_embeddings)
        self.n_ctx = min(most, max(MIN_CONTEXT, int(pool_mb * 2**20 // per_position) // 256 * 256))
        self.n_embd = config.hidden_size
        self.prefill_chunk = min(prefill_chunk, self.n_ctx)  # llama.cpp takes no batch larger than its cache
        lib.llama_backend_init()
        model_params = lib.llama_model_default_params()
        model_params.n_gpu_layers = 0
        self._model = lib.llama_model_load_from_file(str(gguf_file).encode(), model_params)
        if not self._model:
            raise AssistantError(f"llama.cpp could not load {gguf_file}")
        self.n_vocab = lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(self._model))
        if lib.llama_model_n_embd(self._model) != self.n_embd:
            raise AssistantError(f"{gguf_file.name} has width {lib.llama_model_n_embd(self._model)}, the LLM {self.n_embd}")
        slots = min(255, max(32, 2 * max_batch))
        self._pad_seq = slots  # one more sequence, for the filler position of single-row calls (``_pad``)
        params = lib.llama_context_default_params()
        params.n_ctx, params.n_seq_max, params.kv_unified, params.no_perf = self.n_ctx, slots + 1, True, True
        params.n_batch = params.n_ubatch = max(self.prefill_chunk, max_batch) + 1
        params.n_threads = params.n_threads_batch = llama_threads or torch.get_num_threads()
        self._context = lib.llama_init_from_model(self._model, params)
        if not self._context:
            lib.llama_model_free(self._model)
            raise AssistantError(f"llama.cpp could not make a context of {self.n_ctx} positions for {gguf_file.name}")
        if lora_file is not None:
            adapter = lib.llama_adapter_lora_init(self._model, str(lora_file).encode())
            adapters, scales = (lib.llama_adapter_lora_p_ctypes * 1)(adapter), (ctypes.c_float * 1)(1.0)
            if not adapter or lib.llama_set_adapters_lora(self._context, adapters, 1, scales) != 0:
                lib.llama_free(self._context)
                lib.llama_model_free(self._model)
                self._context = None
                raise AssistantError(f"llama.cpp could not apply the LoRA adapter {lora_file.name}")
        self._memory = lib.llama_get_memory(self._context)
        self._tokens = lib.llama_batch_init(max_batch + 1, 0, 1)
        self._embeds = lib.llama_batch_init(params.n_batch, self.n_embd, 1)
        self.pool = SlotPool(slots, per_position, self._drop, self._busy)
        logger.info("llama.cpp engine on %s: %d positions of cache, %d sequences, %d threads",
                    gguf_file.name, self.n_ctx, slots, params.n_threads)

    # ---------------------------------------------------------------- native resources

    def close(self, timeout_s: float = 10.0) -> None:
        super().close(timeout_s)
        self._free()

    def _free(self) -> None:
        """Free llama.cpp's model, context and batches once no worker can use them."""
        worker = getattr(self, "_worker", None)
        if getattr(self, "_context", None) and (worker is None or not worker.is_alive()):
            lib, context = self._lib, self._context
            self._context = None
            lib.llama_batch_free(self._tokens)
            lib.llama_batch_free(self._embeds)
            lib.llama_free(context)
            lib.llama_model_free(self._model)

    def __del__(self) -> None:  # the worker holds the engine while it runs, so this comes after it ended
        try:
            self._free()
        except Exception:  # noqa: BLE001 - at interpreter exit the library may be gone already
            pass

    def _drop(self, slot: _Slot, start: int = -1) -> None:
        self._lib.llama_memory_seq_rm(self._memory, slot.seq_id, start, -1)

    def _busy(self) -> set[_Slot]:
        return {sequence.slot for sequence in self._waiting + self._rows if sequence.slot is not None}

    # ---------------------------------------------------------------- worker thread

    def _prefill_waiting(self) -> None:
        """Prefill waiting prompts in order, within a token budget (smaller while others decode); a
        prompt sharing a longer prefix with one being prefilled than with any cached sequence waits
        for that one's cells instead of computing them too."""
        budget = self.prefill_chunk if not self._rows else max(self.prefill_chunk // 4, 32)
        for sequence in list(self._waiting):
            if budget <= 0 or len(self._rows) >= self.max_batch:
                break
            if sequence.slot is None:
                if sequence.reuse_prefix and self._wait_for_shared(sequence):
                    continue
                try:
                    if not self._begin(sequence):
                        break  # every sequence is busy: wait for one to finish
                except Exception as error:  # noqa: BLE001 - delivered to the request's reader
                    self._waiting.remove(sequence)
                    self._fail(sequence, error)
                    continue
            size = min(len(sequence.keys) - sequence.cursor, budget)
            self._prefill_chunk(sequence, size)
            budget -= size

    def _wait_for_shared(self, sequence: _Sequence) -> bool:
        _, cached = self.pool.longest_prefix(sequence.keys)
        prefilling = [other for other in self._waiting if other.slot is not None and other is not sequence]
        shared = max((common_prefix_length(other.keys, sequence.keys) for other in prefilling), default=0)
        return shared > cached + SHARE_AT_LEAST

    def _begin(self, sequence: _Sequence) -> bool:
        """Give ``sequence`` a llama.cpp sequence holding its longest cached prefix; False if none is free."""
        if len(sequence.keys) >= self.n_ctx:
            raise AssistantError(f"the prompt has {len(sequence.keys)} positions and the llama.cpp KV cache holds "
                                 f"{self.n_ctx}: raise engine.kv_pool_mb")
        pool = self.pool
        best, common = pool.longest_prefix(sequence.keys) if sequence.reuse_prefix else (None, 0)
        reused = min(common, len(sequence.keys) - 1)  # at least one position must run to produce logits
        target = self._target(sequence, best, reused)
        if target is None:
            return False
        if target is best:
            self._drop(target, reused)
        else:
            self._drop(target)
            if reused:
                self._lib.llama_memory_seq_cp(self._memory, best.seq_id, target.seq_id, 0, reused)
        target.keys = list(sequence.keys[:reused])
        pool.touch(target)
        sequence.slot = target
        sequence.epoch = self._epoch
        self.counters.reused_tokens += reused
        sequence.start = sequence.cursor = sequence.length = reused
        sequence.embeddings = sequence.embed_suffix(reused)
        return True

    def _target(self, sequence: _Sequence, best: _Slot | None, reused: int) -> _Slot | None:
        """The sequence to prefill into: the session's own, or the one it continues as a whole, or a free
        one, or the least recently used idle one emptied."""
        pool = self.pool
        idle = pool.idle()
        if sequence.name is not None:
            own = next((slot for slot in idle if slot.name == sequence.name), None)
            if own is not None:
                return own
        elif best is not None and best in idle and len(best.keys) == reused and best.name is not None:
            sequence.name = best.name  # the next turn of that conversation replaces it
            return best
        if sequence.name is None:
            sequence.name = pool.new_name()
        target = next((slot for slot in idle if not slot.keys), None) or pool.evict_one(keep=best)
        if target is None and best is not None and best in idle:
            target = best  # the only idle sequence: taken over, its other positions dropped
        if target is not None:
            target.name = sequence.name
        return target

    def _prefill_chunk(self, sequence: _Sequence, size: int) -> None:
        offset = sequence.cursor - sequence.start
        chunk = sequence.embeddings[0, offset : offset + size].detach().to(torch.float32).contiguous().numpy()  # (size, D)
        last = sequence.cursor + size == len(sequence.keys)
        batch = self._embeds
        batch.n_tokens = size
        ctypes.memmove(batch.embd, chunk.ctypes.data, chunk.nbytes)
        for index in range(size):
            batch.pos[index] = sequence.cursor + index
            batch.n_seq_id[index] = 1
            batch.seq_id[index][0] = sequence.slot.seq_id
            batch.logits[index] = 0
        batch.logits[size - 1] = int(last)
        if size == 1:
            ctypes.memset(ctypes.addressof(batch.embd.contents) + chunk.nbytes, 0, chunk.nbytes)
            self._pad(batch, 1)
        try:
            self._decode(batch, sequence.slot)
        except Exception as error:  # noqa: BLE001 - delivered to this request's reader alone
            self._waiting.remove(sequence)
            self._drop(sequence.slot, len(sequence.slot.keys))
            self._fail(sequence, error)
            return
        sequence.slot.keys.extend(sequence.keys[sequence.cursor : sequence.cursor + size])
        sequence.cursor += size
        sequence.length = sequence.cursor
        self.counters.prefill_tokens += size
        if not last:
            return
        self._waiting.remove(sequence)
        sequence.embeddings = None
        if self._sample(sequence, self._logits(size - 1)):
            self._finish(sequence)
        else:
            self._rows.append(sequence)
            self.peak_batch = max(self.peak_batch, len(self._rows))

    def _decode_step(self) -> None:
        batch, rows = self._tokens, self._rows
        batch.n_tokens = len(rows)
        for index, row in enumerate(rows):
            batch.token[index] = row.generated[-1]
            batch.pos[index] = row.length
            batch.n_seq_id[index] = 1
            batch.seq_id[index][0] = row.slot.seq_id
            batch.logits[index] = 1
        if len(rows) == 1:
            batch.token[1] = 0
            self._pad(batch, 1)
        try:
            self._decode(batch)
        except Exception as error:  # noqa: BLE001 - every row's reader gets the error
            logger.error("llama.cpp decode step failed; %d requests end with the error: %s", len(rows), error)
            for row in rows:
                self._drop(row.slot, len(row.slot.keys))
                self._fail(row, error)
            self._rows = []
            return
        finished = []
        for index, row in enumerate(rows):
            row.slot.keys.append(row.generated[-1])
            row.length += 1
            if self._sample(row, self._logits(index)):
                finished.append(index)
        if finished:
            self._leave(finished)

    def _leave(self, indices: list[int]) -> None:
        leaving = set(indices)
        for index in indices:
            self._finish(self._rows[index])
        self._rows = [row for index, row in enumerate(self._rows) if index not in leaving]

    def _finish(self, sequence: _Sequence) -> None:
        """End a sequence's stream; its cells stay cached unless it must not be reused."""
        slot = sequence.slot
        if not sequence.reuse_prefix or sequence.epoch != self._epoch or sequence.failed:
            self.pool.forget(slot)
        else:
            self.pool.touch(slot)
        self._end(sequence)

    def _pad(self, batch: Any, index: int) -> None:
        """Add a filler position (of the spare sequence, emptied first) at ``index``: llama.cpp multiplies a
        single row with other kernels than several (``ggml_vec_dot`` against tinyBLAS), so a request decoded
        alone would round differently from the same request decoded beside others."""
        self._lib.llama_memory_seq_rm(self._memory, self._pad_seq, -1, -1)
        batch.n_tokens = index + 1
        batch.pos[index] = 0
        batch.n_seq_id[index] = 1
        batch.seq_id[index][0] = self._pad_seq
        batch.logits[index] = 0

    def _decode(self, batch: Any, keep: Any = None) -> None:
        """``llama_decode``; a full cache drops idle sequences (least recently used first) and retries."""
        while True:
            status = self._lib.llama_decode(self._context, batch)
            if status == 0:
                return
            if status == 1 and self.pool.evict_one(keep=keep) is not None:
                continue
            reason = f"the KV cache ({self.n_ctx} positions) is full: raise engine.kv_pool_mb" if status == 1 else f"status {status}"
            raise AssistantError(f"llama.cpp decode failed: {reason}")

    def _logits(self, index: int) -> torch.Tensor:
        pointer = self._lib.llama_get_logits_ith(self._context, index)
        return torch.from_numpy(np.ctypeslib.as_array(pointer, shape=(self.n_vocab,)).copy()).unsqueeze(0)  # (1, V)
