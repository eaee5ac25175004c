"""The serving copy of the LLM written as a GGUF file for llama.cpp, LoRA merged in, cached on disk.

The packaged LLM is a GGUF file already (SmolLM2-135M, Q4_1 layers, Q8_0 embedding), but it holds the
base weights: the adapter's LoRA lives in a separate folder and llama.cpp would have to apply it on
every token. ``serving_gguf`` writes one file instead:

- from a GGUF source: every key/value (architecture, hyper-parameters, tokenizer) copied as it is,
  the tensors the merge left unchanged (the embedding, the norms) byte for byte, and the ones it
  changed (LoRA's projections) quantized from the merged float weights to ``qtype``;
- from a transformers Llama folder (GPT-2-style BPE tokenizer): the metadata written from its config
  and tokenizer (gguf-py's ``BpeVocab``/``SpecialVocab``), every matrix quantized, the embedding kept
  in float32 and the head written as its own quantized ``output.weight``.

``qtype`` is ``q8_0`` by default (a byte per weight and a scale per 32), or ``q5_1`` / ``q4_1`` /
``f16``; what each costs in accuracy and gains in speed: ``benchmarks/bench_decode.py``. llama.cpp's
Llama layout orders the query and key rows of each head differently from transformers (its rotary
embedding pairs neighbouring values): those two are permuted back, as convert_hf_to_gguf.py does.

The file lands in the model cache (``MMA_CACHE_DIR``) under a fingerprint of the source and of the
merged weights, so a second start reads it instead of quantizing again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from assistant.errors import AssistantError
from assistant.llm import cache_root

logger = logging.getLogger(__name__)

MERGED_TYPES = ("q8_0", "q5_1", "q4_1", "f16")

FORMAT = 1  # bump when the written layout changes, so old cache files are not reused
_LAYER = {  # GGUF tensor name in block N -> transformers module name
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
_GLOBAL = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def hf_name(gguf_name: str) -> str:
    """The transformers parameter a llama GGUF tensor holds (``blk.3.attn_q.weight`` -> ``model.layers.3.self_attn.q_proj.weight``)."""
    parts = gguf_name.split(".")
    if parts[0] == "blk" and len(parts) == 4 and parts[2] in _LAYER:
        return f"model.layers.{parts[1]}.{_LAYER[parts[2]]}.{parts[3]}"
    if len(parts) == 2 and parts[0] in _GLOBAL:
        return f"{_GLOBAL[parts[0]]}.{parts[1]}"
    raise AssistantError(f"GGUF tensor {gguf_name!r} has no counterpart in a transformers Llama model")


def to_gguf_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """Query/key rows in llama.cpp's order: per head, the two rotary halves interleaved (convert_hf_to_gguf's permute)."""
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def fingerprint(source: Path, state: dict[str, torch.Tensor], qtype: str) -> str:
    """A digest of the source (path, size, time: a file or a folder's config) and of every weight."""
    stat = (source / "config.json" if source.is_dir() else source).stat()
    digest = hashlib.blake2b(f"{FORMAT}|{qtype}|{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode(), digest_size=12)
    for name in sorted(state):
        tensor = state[name].detach().to(torch.float32).contiguous()
        digest.update(name.encode())
        digest.update(memoryview(tensor.numpy()).cast("B"))
    return digest.hexdigest()


def rope_settings(config: Any) -> dict[str, Any]:
    """Rotary settings of a transformers config (``rope_parameters`` since transformers 5, ``rope_scaling`` before)."""
    return dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})


def local_source(model: str) -> Path:
    """The file or folder a model came from: a ``.gguf`` file, a folder, or a Hugging Face id already in the local cache."""
    path = Path(model)
    if path.exists():
        return path
    try:
        from transformers.utils import cached_file

        return Path(cached_file(model, "config.json", local_files_only=True)).parent  # the cached snapshot, never fetched
    except Exception:  # noqa: BLE001 - any failure means: not available offline
        raise AssistantError(f"llama.cpp serving needs the LLM's files on disk; {model!r} is neither a path nor in the local cache") from None


def serving_gguf(llm: Any, source: str | os.PathLike, qtype: str = "q8_0") -> Path:
    """A GGUF file of ``llm`` (LoRA already merged) for llama.cpp, written once per weights and ``qtype``.

    Args:
        llm: The merged transformers Llama model (``assistant.llm_serving.prepare_for_serving``).
        source: Where the model was loaded from: a GGUF file (its metadata and tokenizer are copied, its
            unchanged tensors kept byte for byte) or a transformers folder with a GPT-2-style BPE
            ``tokenizer.json`` (metadata written from its config and tokenizer, every matrix quantized).
        qtype: How changed weights are stored (one of ``MERGED_TYPES``).

    Raises:
        AssistantError: Not a Llama-architecture model, a tokenizer llama.cpp cannot be given, or an unknown ``qtype``.
    """
    source = local_source(str(source))
    if qtype not in MERGED_TYPES:
        raise AssistantError(f"gguf type {qtype!r} is not one of {', '.join(MERGED_TYPES)}")
    if getattr(llm.config, "model_type", None) != "llama":
        raise AssistantError(f"llama.cpp serving writes Llama-architecture models; this LLM is {llm.config.model_type!r}")
    if rope_settings(llm.config).get("rope_type", "default") != "default":
        raise AssistantError("llama.cpp serving does not write rope scaling yet; serve this LLM with another mode")
    state = {name: tensor for name, tensor in llm.state_dict().items() if name.startswith(("model.", "lm_head."))}
    target = cache_root() / "serving" / f"{source.stem}-{fingerprint(source, state, qtype)}.gguf"
    if target.is_file():
        logger.info("llama.cpp serving weights from the cache: %s", target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(dir=target.parent, prefix=".staging-", suffix=".gguf")
    os.close(handle)
    try:
        write_gguf(source, state, llm.config, qtype, Path(staging))
        os.replace(staging, target)  # atomic: a crash mid-write never leaves a half file
    finally:
        Path(staging).unlink(missing_ok=True)
    logger.info("wrote llama.cpp serving weights (%s, LoRA merged) to %s", qtype, target)
    return target


def lora_gguf(llm: Any, source: str | os.PathLike) -> Path | None:
    """The LoRA of ``llm`` (a peft model over the Llama loaded from GGUF file ``source``) as a llama.cpp adapter
    file, or None when there is none or llama.cpp cannot apply it (DoRA, rsLoRA, other targets).

    The base stays the source file as it is, so llama.cpp computes what the PyTorch model computes: the same
    de-quantized base weights plus ``B @ A * alpha / r`` in float32. Merging the LoRA into 4-bit weights
    instead loses it (a delta below half a quantization step rounds back to the base value: requantized to
    Q4_1 the default answered like the untuned model, 3.5% on the test split).
    """
    config = getattr(llm, "peft_config", {}).get("default")
    if config is None or getattr(config, "use_dora", False) or getattr(config, "use_rslora", False):
        return None
    source = Path(source)
    base = llm.get_base_model()
    heads, kv_heads = base.config.num_attention_heads, base.config.num_key_value_heads
    names = {hf_name(name): name for name in _gguf_names(base.config.num_hidden_layers)}
    pairs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for name, module in base.named_modules():
        if not (hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {})):
            continue
        target = names.get(f"{name}.weight")
        if target is None:
            return None  # a module llama.cpp has no tensor for
        pairs[target] = (module.lora_A["default"].weight, module.lora_B["default"].weight)
    if not pairs:
        return None
    state = {f"{name}.{side}": tensor for name, (a, b) in pairs.items() for side, tensor in (("lora_a", a), ("lora_b", b))}
    target_file = cache_root() / "serving" / f"{source.stem}-lora-{fingerprint(source, state, f'lora{config.lora_alpha}')}.gguf"
    if target_file.is_file():
        return target_file
    import gguf

    target_file.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(dir=target_file.parent, prefix=".staging-", suffix=".gguf")
    os.close(handle)
    try:
        writer = gguf.GGUFWriter(staging, "llama")
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(config.lora_alpha))
        for name, (a, b) in pairs.items():
            a = a.detach().to(torch.float32).numpy()  # (r, in): llama.cpp's [in, r]
            b = b.detach().to(torch.float32).numpy()  # (out, r)
            part = name.split(".")[-2]
            if part in ("attn_q", "attn_k"):
                b = to_gguf_rows(b, heads if part == "attn_q" else kv_heads)
            writer.add_tensor(f"{name}.lora_a", np.ascontiguousarray(a))
            writer.add_tensor(f"{name}.lora_b", np.ascontiguousarray(b))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(staging, target_file)
    finally:
        Path(staging).unlink(missing_ok=True)
    logger.info("wrote the LoRA as a llama.cpp adapter: %s", target_file)
    return target_file


def _gguf_names(layers: int) -> list[str]:
    return [f"blk.{layer}.{part}.weight" for layer in range(layers) for part in _LAYER]


def write_gguf(source: Path, state: dict[str, torch.Tensor], config: Any, qtype: str, out: Path) -> None:
    """Write ``state`` (a transformers Llama state dict) to ``out`` with ``source``'s metadata."""
    import gguf
    from tqdm.auto import tqdm

    quant = {"q8_0": gguf.GGMLQuantizationType.Q8_0, "q5_1": gguf.GGMLQuantizationType.Q5_1,
             "q4_1": gguf.GGMLQuantizationType.Q4_1, "f16": gguf.GGMLQuantizationType.F16}[qtype]
    file_type = {"q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "q5_1": gguf.LlamaFileType.MOSTLY_Q5_1,
                 "q4_1": gguf.LlamaFileType.MOSTLY_Q4_1, "f16": gguf.LlamaFileType.MOSTLY_F16}[qtype]
    writer = gguf.GGUFWriter(str(out), "llama")  # writes general.architecture itself
    if source.suffix == ".gguf":
        base = _copy_metadata(gguf, gguf.GGUFReader(str(source)), writer, int(file_type))
    else:
        base = _hf_metadata(gguf, source, config, writer, int(file_type))
    tied = "output.weight" not in base
    if tied and "lm_head.weight" in state and not torch.equal(state["lm_head.weight"], state["model.embed_tokens.weight"]):
        raise AssistantError("the LM head no longer equals the embedding, but the source model ties them")
    if "lm_head.weight" not in state:  # a tied head appears once in a state dict
        state = {**state, "lm_head.weight": state["model.embed_tokens.weight"]}
    for name, original in tqdm(base.items(), desc="GGUF for llama.cpp", unit="tensor", leave=False):
        merged = state[hf_name(name)].detach().to(torch.float32).numpy()
        part = name.split(".")[-2]
        if part in ("attn_q", "attn_k"):
            merged = to_gguf_rows(merged, config.num_attention_heads if part == "attn_q" else config.num_key_value_heads)
        if name == "token_embd.weight" and original is None:
            # Prompts reach llama.cpp as rows of the PyTorch table, generated tokens through this one: kept
            # exact, so a cached turn and the same text prefilled fresh are the same numbers; the head is
            # written separately (``output.weight``), quantized like the other matrices.
            data, kind = merged.astype(np.float32), gguf.GGMLQuantizationType.F32
        elif original is not None and np.array_equal(gguf.quants.dequantize(original.data, original.tensor_type).reshape(merged.shape), merged):
            data, kind = original.data, original.tensor_type  # untouched by the merge: the source bytes, exactly
        elif merged.ndim == 1:
            data, kind = merged.astype(np.float32), gguf.GGMLQuantizationType.F32
        else:
            data, kind = gguf.quants.quantize(merged, quant), quant
        writer.add_tensor(name, data, raw_dtype=kind)  # quantized rows: their bytes' shape
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _copy_metadata(gguf: Any, reader: Any, writer: Any, file_type: int) -> dict[str, Any]:
    """Every key/value of a llama GGUF file; returns its tensors by name."""
    architecture = reader.fields["general.architecture"].contents()
    if architecture != "llama":
        raise AssistantError(f"llama.cpp serving writes llama-architecture GGUF files; this one is {architecture!r}")
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        if name == "general.file_type":
            writer.add_file_type(file_type)
            continue
        sub_type = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), field.types[0], sub_type=sub_type)
    return {tensor.name: tensor for tensor in reader.tensors}


def _hf_metadata(gguf: Any, folder: Path, config: Any, writer: Any, file_type: int) -> dict[str, None]:
    """Hyper-parameters from a transformers Llama config and the folder's BPE tokenizer; returns the
    tensor names to write (none has source bytes to keep)."""
    try:
        vocab = gguf.BpeVocab(folder)
    except (FileNotFoundError, ValueError) as error:
        raise AssistantError(f"llama.cpp serving needs a GPT-2-style BPE tokenizer.json in {folder}: {error}") from None
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_name(folder.name)
    writer.add_file_type(file_type)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(float(rope_settings(config).get("rope_theta") or getattr(config, "rope_theta", None) or 10000.0))
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(config.vocab_size)
    tokens, types = [], []
    for text, _score, kind in vocab.all_tokens():
        tokens.append(text)
        types.append(int(kind))
    for index in range(len(tokens), config.vocab_size):  # embedding rows past the tokenizer's
        tokens.append(f"[PAD{index}]".encode())
        types.append(int(gguf.TokenType.UNUSED))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens[: config.vocab_size])
    writer.add_token_types(types[: config.vocab_size])
    gguf.SpecialVocab(folder, load_merges=True, n_vocab=config.vocab_size).add_to_gguf(writer, quiet=True)
    names = ["token_embd.weight", "output_norm.weight", "output.weight"]  # the head untied (see write_gguf)
    for layer in range(config.num_hidden_layers):
        names += [f"blk.{layer}.{part}.weight" for part in _LAYER]
    return dict.fromkeys(names)
