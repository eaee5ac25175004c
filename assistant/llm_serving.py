"""A serving copy of the language model: LoRA merged into the weights, then the weights made smaller.

Decoding one token of a small model reads every weight once, so on a CPU the bytes per token set the
speed: SmolLM2-135M is about 540 MB in float32, 270 MB in bfloat16 and 135 MB in int8. The modes
(``LLMConfig.serving``):

- ``eager``: the model as loaded, peft's LoRA layers unmerged. Training uses it, and it is the reference
  the other modes are measured against;
- ``merged``: LoRA merged into the base weights (peft ``merge_and_unload``), same dtype: the same greedy
  tokens up to float rounding, and no LoRA matmuls per layer;
- ``bf16``: merged, then every weight in bfloat16;
- ``int8``: merged, then torchao's int8 weight-only quantization of every linear layer (per-channel
  scales; activations stay in float). The LM head shares its weight with the input embedding in
  SmolLM2: it is untied first, so the head is quantized and the embedding, which a token reads one row
  of and which media tokens are compared against, stays in full precision.
- ``llama_cpp``: llama.cpp decodes (``assistant.llama_cpp_engine``) from a GGUF file of the LoRA-merged
  weights, float16 by default, or from the GGUF file the LLM came from with its LoRA as a llama.cpp
  adapter (``llama_cpp_weights``, ``engine.gguf_type``); the PyTorch model, unmerged, still embeds the
  prompt (text rows and media tokens) and is what a caller of ``model.llm`` sees;
- ``auto``: ``llama_cpp`` when llama-cpp-python is installed and the LLM is a full-precision Llama model,
  else ``eager``.

``decode_engine`` builds the engine each mode decodes with. A serving copy cannot be trained (``training``
loads with ``serving="eager"``). What each mode costs in accuracy and gains in speed:
``benchmarks/bench_decode.py``.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

import torch
from torch import nn

from assistant.config import SERVING_MODES, AssistantConfig
from assistant.errors import AssistantError
from assistant.generation import EngineCounters

logger = logging.getLogger(__name__)


def prepare_for_serving(llm: Any, mode: str) -> Any:
    """``llm`` made ready to serve in ``mode`` (in place where possible; use the returned model).

    Raises:
        AssistantError: An unknown mode, a bitsandbytes-quantized model (already small; it cannot be merged
            exactly), or ``int8`` without torchao installed.
    """
    if mode not in SERVING_MODES:
        raise AssistantError(f"llm serving {mode!r} is not one of {', '.join(SERVING_MODES)}")
    mode = resolve_mode(mode, llm)
    if mode in ("eager", "llama_cpp"):  # llama.cpp gets the LoRA as an adapter (assistant.gguf_export.lora_gguf)
        return llm
    if getattr(llm, "is_loaded_in_4bit", False) or getattr(llm, "is_loaded_in_8bit", False):
        raise AssistantError(f"llm serving {mode!r} needs full-precision weights; this model is quantized with bitsandbytes")
    if hasattr(llm, "merge_and_unload"):
        llm = llm.merge_and_unload()
        logger.info("merged LoRA into the serving copy of the LLM")
    if mode == "bf16":
        llm = llm.to(torch.bfloat16)
    elif mode == "int8":
        llm = _int8_weight_only(llm)
    llm.eval()
    for parameter in llm.parameters():
        parameter.requires_grad_(False)
    return llm


def resolve_mode(mode: str, llm: Any) -> str:
    """The mode ``auto`` stands for with this LLM; any other mode unchanged."""
    if mode != "auto":
        return mode
    base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm
    quantized = getattr(base, "is_loaded_in_4bit", False) or getattr(base, "is_loaded_in_8bit", False)
    usable = importlib.util.find_spec("llama_cpp") is not None and base.config.model_type == "llama" and not quantized
    return "llama_cpp" if usable else "eager"


def decode_engine(model: Any, config: AssistantConfig, stop_token_ids: set[int], counters: EngineCounters) -> Any:
    """The continuous-batching engine for ``model`` (prepared for ``config.llm.serving``): llama.cpp's for
    ``llama_cpp``, else PyTorch's (``assistant.batching.BatchEngine``)."""
    from assistant.batching import BatchEngine

    engine = config.engine
    if resolve_mode(config.llm.serving, model.llm) == "llama_cpp":
        from assistant.llama_cpp_engine import LlamaCppEngine, import_llama_cpp

        try:
            import_llama_cpp()  # fail before the weights are written when llama-cpp-python is missing
            gguf, lora = llama_cpp_weights(model.llm, config)
            return LlamaCppEngine(model, gguf, stop_token_ids, counters, engine.kv_pool_mb, engine.max_batch,
                                  engine.prefill_chunk, engine.decode_threads, lora_file=lora)
        except AssistantError as error:
            if config.llm.serving != "auto":
                raise
            logger.warning("serving 'auto' decodes with PyTorch: %s", error)

    return BatchEngine(model, stop_token_ids, counters, engine.kv_pool_mb, engine.max_batch, engine.prefill_chunk,
                       engine.decode_threads)


def llama_cpp_weights(llm: Any, config: AssistantConfig) -> tuple[Any, Any]:
    """The GGUF file llama.cpp loads and the LoRA adapter file it applies (or None) for ``llm``.

    By default (``engine.gguf_type="f16"``) the LoRA is merged into a copy of the weights, written once as a
    float16 GGUF file. llama.cpp multiplies 16-bit weights with 16-bit activations; with 8- or 4-bit weights
    it rounds the activations to 8 bits too. On the built-in default float16 gave eager's greedy replies to
    all 32 text prompts, the 4-bit source file with the adapter to 20 (and decoded slower: 47 vs 56 tok/s).
    With "source" an LLM loaded from a GGUF file (the built-in one) is served from that very file, its LoRA
    as a llama.cpp adapter; other sources and LoRA variants llama.cpp cannot apply are then merged at q8_0.
    """
    import copy
    from pathlib import Path

    from assistant.gguf_export import local_source, lora_gguf, serving_gguf
    from assistant.llm import resolve_source

    source = local_source(resolve_source(config.llm.model))
    peft, kind = hasattr(llm, "peft_config"), config.engine.gguf_type
    if kind == "source" and source.suffix == ".gguf" and getattr(llm.config, "model_type", None) == "llama":
        lora = lora_gguf(llm, source) if peft else None
        if lora is not None or not peft:
            return Path(source), lora
    merged = copy.deepcopy(llm).merge_and_unload() if peft else llm  # the PyTorch copy keeps its LoRA layers
    return serving_gguf(merged, source, "q8_0" if kind == "source" else kind), None


def _int8_weight_only(llm: Any) -> Any:
    try:
        from torchao.quantization import Int8WeightOnlyConfig, quantize_
    except ImportError:
        raise AssistantError("llm serving 'int8' needs torchao: pip install 'multimodal-assistant[fast]' (or torchao)") from None
    _untie_head(llm)
    quantize_(llm, Int8WeightOnlyConfig(), filter_fn=lambda module, _: isinstance(module, nn.Linear))
    logger.info("int8 weight-only (torchao) on every linear layer of the LLM, the LM head included")
    return llm


def _untie_head(llm: Any) -> None:
    """Give the LM head its own copy of a weight it shares with the input embedding."""
    head, embedding = llm.get_output_embeddings(), llm.get_input_embeddings()
    if head is not None and embedding is not None and head.weight is embedding.weight:
        head.weight = nn.Parameter(embedding.weight.detach().clone(), requires_grad=False)
        llm.config.tie_word_embeddings = False
