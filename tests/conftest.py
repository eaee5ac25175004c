"""Tiny random models built from configs and saved to temp folders; nothing is downloaded.

The tiny LLM has a real byte-level BPE tokenizer trained here with a ChatML chat template, so the
prompt builder, stop tokens and streaming run exactly as with a real checkpoint. Vision towers are
tiny CLIP (with a CLS token) and SigLIP (without), saved as full dual-encoder checkpoints so the
loader's "take the vision tower" path is exercised.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from assistant import Assistant, AssistantConfig, ConnectorConfig, EncoderConfig, LLMConfig, ModalityConfig  # noqa: E402

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CORPUS = [
    "What is in this picture? A red circle on the left and a blue square at the top.",
    "How many circles are there? There are two circles. Describe the image in detail.",
    "The quick brown fox jumps over the lazy dog. Paris is the capital of France.",
    "Hello! How can I help you today? Please answer the question about the image.",
] * 20


def _make_tokenizer(folder: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(CORPUS, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<|endoftext|>", eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    tokenizer.chat_template = CHATML
    tokenizer.save_pretrained(folder)
    return tokenizer


def _make_llm(folder: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _make_tokenizer(folder)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # a peaked, position-dependent distribution: greedy text varies and has no near-ties
        model.lm_head.weight.mul_(30.0)
    model.save_pretrained(folder)


def _make_vision(folder: Path, family: str) -> None:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, SiglipConfig, SiglipImageProcessor, SiglipModel

    torch.manual_seed(1)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=99)
    if family == "clip":
        CLIPModel(CLIPConfig(vision_config=vision, text_config=text)).save_pretrained(folder)
        CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    else:
        SiglipModel(SiglipConfig(vision_config=vision, text_config=text)).save_pretrained(folder)
        SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)


@pytest.fixture(scope="session")
def tiny_paths(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("tiny")
    paths = {"llm": root / "llm", "clip": root / "clip", "siglip": root / "siglip"}
    _make_llm(paths["llm"])
    _make_vision(paths["clip"], "clip")
    _make_vision(paths["siglip"], "siglip")
    return {name: str(path) for name, path in paths.items()}


@pytest.fixture(scope="session")
def make_config(tiny_paths):
    """Factory: ``make_config(connector="mlp", vision="clip", lora_r=0, **fields)`` -> AssistantConfig."""

    def factory(connector: str = "mlp", vision: str = "clip", lora_r: int = 0, **fields) -> AssistantConfig:
        connector_config = ConnectorConfig(kind=connector, num_latents=6, depth=1, num_heads=4)
        modality = ModalityConfig(EncoderConfig(kind="hf_vision", model=tiny_paths[vision]), connector_config)
        llm = LLMConfig(model=tiny_paths["llm"])
        llm.lora = dataclasses.replace(llm.lora, r=lora_r)
        return AssistantConfig(llm=llm, modalities={"image": modality}, **fields)

    return factory


@pytest.fixture(scope="session")
def tiny_assistant(make_config) -> Assistant:
    """A shared tiny assistant (mlp connector, CLIP tower). Tests that mutate state build their own."""
    return Assistant.from_config(make_config())


@pytest.fixture
def fresh_assistant(make_config) -> Assistant:
    return Assistant.from_config(make_config())


@pytest.fixture(scope="session")
def image_files(tmp_path_factory) -> list[str]:
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")
    paths = []
    for index, colour in enumerate(["red", "green", "blue", "yellow"]):
        path = folder / f"{colour}.png"
        image = Image.new("RGB", (48, 40), colour)
        image.putpixel((index, index), (index, 0, 0))
        image.save(path)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="session")
def tiny_sentence_model(tmp_path_factory) -> str:
    """A tiny random BERT as a sentence-transformers model (the packaged MiniLM's tokenizer, random weights)."""
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from assistant.embedders import packaged_minilm_folder

    folder = tmp_path_factory.mktemp("tiny_st")
    bert = folder / "bert"
    tokenizer = BertTokenizerFast.from_pretrained(str(packaged_minilm_folder()))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=128)).save_pretrained(bert)
    tokenizer.save_pretrained(bert)
    transformer = models.Transformer(str(bert), max_seq_length=64)
    SentenceTransformer(modules=[transformer, models.Pooling(32, "mean")]).save(str(folder / "st"))
    return str(folder / "st")


@pytest.fixture(scope="session")
def speak():
    """``speak(text, voice="en-us") -> 16 kHz samples`` through espeak-ng; skips without it (fails under REQUIRE_ESPEAK=1)."""
    from training.data.audio_rows import have_espeak, speak as espeak

    if not have_espeak():
        reason = "espeak-ng is not installed (Debian: apt-get install espeak-ng)"
        if os.environ.get("REQUIRE_ESPEAK") == "1":
            pytest.fail(reason + "; REQUIRE_ESPEAK=1 forbids skipping")
        pytest.skip(reason)
    return espeak


def needs_llama_cpp() -> None:
    """Skip without llama-cpp-python (fail instead under REQUIRE_LLAMA_CPP=1, as in CI, where run.sh builds it)."""
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is None:
        reason = "llama-cpp-python is not installed"
        if os.environ.get("REQUIRE_LLAMA_CPP") == "1":
            pytest.fail(reason + "; REQUIRE_LLAMA_CPP=1 forbids skipping")
        pytest.skip(reason)


def randomise_lora(llm, seed: int = 0, scale: float = 0.2) -> None:
    """Give a fresh LoRA random B matrices (fresh ones are zero), so that it changes the model's output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in llm.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
