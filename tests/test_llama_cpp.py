"""Serving on llama.cpp: the merged weights written as GGUF (assistant.gguf_export) and the engine
that decodes them (assistant.llama_cpp_engine), checked against the PyTorch model they came from.

The batching, cancellation, reuse and failure invariants run on this engine too: ``test_concurrency``
runs its tests on both engines.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from assistant import Assistant, AssistantError
from assistant.config import EngineConfig
from assistant.generation import SamplingOptions
from assistant.gguf_export import serving_gguf, write_gguf
from assistant.llm import attach_lora, load_language_model
from assistant.llm_serving import prepare_for_serving
from conftest import needs_llama_cpp, randomise_lora
from test_llm_serving import trained_artifact  # noqa: F401 - the fixture: a tiny artifact whose LoRA matters


@pytest.fixture(autouse=True)
def cache_dir(tmp_path_factory, monkeypatch) -> Path:
    folder = tmp_path_factory.getbasetemp() / "gguf-cache"
    monkeypatch.setenv("MMA_CACHE_DIR", str(folder))
    return folder


def merged_tiny(make_config, scale: float = 0.2):
    """The tiny LLM with a LoRA that changes it (random B), merged; and the base weights before the merge."""
    config = make_config(lora_r=4).llm
    llm, _ = load_language_model(config)
    base = {name: tensor.clone() for name, tensor in llm.state_dict().items()}
    llm = attach_lora(llm, config.lora)
    randomise_lora(llm, scale=scale)
    return prepare_for_serving(llm, "merged"), base, config.model


def test_the_written_file_loads_back_in_transformers_with_the_merged_weights(make_config):
    from transformers import AutoModelForCausalLM

    merged, base, source = merged_tiny(make_config)
    path = serving_gguf(merged, source, "f16")
    loaded = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).state_dict()
    expected = merged.state_dict()
    changed = 0
    for name, tensor in expected.items():
        if name.startswith("model."):
            assert torch.allclose(loaded[name], tensor, atol=2e-3, rtol=2e-3), name  # f16 rounding only
            changed += not torch.allclose(base[name], tensor, atol=2e-3, rtol=2e-3)
    assert changed == 2 * 4  # q, k, v and o of both layers: the file holds the merge, not the base


def test_the_file_is_cached_and_keyed_by_the_weights(make_config):
    merged, _, source = merged_tiny(make_config)
    first = serving_gguf(merged, source, "q8_0")
    written = first.stat().st_mtime_ns
    assert serving_gguf(merged, source, "q8_0") == first and first.stat().st_mtime_ns == written
    assert serving_gguf(merged, source, "f16") != first
    with torch.no_grad():
        merged.model.layers[0].mlp.up_proj.weight[0, 0] += 1.0
    assert serving_gguf(merged, source, "q8_0") != first


def test_exports_that_cannot_be_made_are_refused(make_config, tmp_path):
    merged, _, source = merged_tiny(make_config)
    with pytest.raises(AssistantError, match="gguf type"):
        serving_gguf(merged, source, "q3_k")
    with pytest.raises(AssistantError, match="neither a path nor in the local cache"):
        serving_gguf(merged, "nobody/no-such-model", "q8_0")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(AssistantError, match="tokenizer.json"):
        serving_gguf(merged, tmp_path, "q8_0")
    merged.config.model_type = "gpt2"
    try:
        with pytest.raises(AssistantError, match="Llama-architecture"):
            serving_gguf(merged, source, "q8_0")
    finally:
        merged.config.model_type = "llama"


@pytest.mark.integration
def test_the_packaged_gguf_written_back_unmerged_is_the_same_bytes(tmp_path):
    """The metadata copy, the name mapping and the query/key permutation, on the real default: a model
    without LoRA comes out tensor for tensor as the packaged file."""
    import gguf

    from assistant.config import LLMConfig
    from assistant.llm import default_gguf_path

    llm, _ = load_language_model(LLMConfig())
    write_gguf(default_gguf_path(), llm.state_dict(), llm.config, "q8_0", tmp_path / "copy.gguf")
    packaged, copy = gguf.GGUFReader(str(default_gguf_path())), gguf.GGUFReader(str(tmp_path / "copy.gguf"))
    assert [t.name for t in copy.tensors] == [t.name for t in packaged.tensors]
    assert all(a.tensor_type == b.tensor_type and np.array_equal(a.data, b.data) for a, b in zip(packaged.tensors, copy.tensors))
    assert copy.fields["tokenizer.ggml.tokens"].contents() == packaged.fields["tokenizer.ggml.tokens"].contents()


# ---------------------------------------------------------------- the engine (needs llama-cpp-python)


class Recorder:
    """A constraint that changes nothing and keeps the logits of every step."""

    def __init__(self) -> None:
        self.logits: list[torch.Tensor] = []

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        self.logits.append(logits.clone())
        return logits

    def accept(self, token: int) -> None:
        pass


def step_logits(bot: Assistant, messages: list[dict], steps: int = 4, reuse: bool = False) -> tuple[list[int], torch.Tensor]:
    """Greedy tokens and every step's logits (steps, V); without ``reuse`` nothing cached is used or kept."""
    prompt = bot.prepare(messages, steps)
    recorder = Recorder()
    tokens = list(bot._engine.submit(prompt.position_keys(), lambda start: bot._embed_suffix(prompt, start),
                                     SamplingOptions(steps), threading.Event(), reuse_prefix=reuse, constraint=recorder))
    return tokens, torch.cat(recorder.logits)


@pytest.mark.parametrize("gguf_type,tolerance", [("f16", 0.02), ("q8_0", 0.05)])
def test_llama_cpp_computes_the_logits_of_the_merged_model(trained_artifact, image_files, gguf_type, tolerance):
    """Same prompt (picture and text), same teacher-forced tokens: llama.cpp's logits are the PyTorch
    model's up to the weights' rounding, and both pick the same tokens."""
    needs_llama_cpp()
    eager = Assistant.from_pretrained(trained_artifact, serving="merged")
    fast = Assistant.from_pretrained(trained_artifact, serving="llama_cpp", engine=EngineConfig(gguf_type=gguf_type))
    messages = [{"role": "user", "content": [{"type": "image", "image": image_files[0]}, {"type": "text", "text": "What is it?"}]}]
    tokens, expected = step_logits(eager, messages)
    fast_tokens, logits = step_logits(fast, messages)
    scale = expected.abs().max()
    assert (logits - expected).abs().max() <= tolerance * scale, (logits - expected).abs().max() / scale
    assert fast_tokens == tokens
    base = Assistant.from_pretrained(trained_artifact)  # guards the comparison: without its LoRA the model differs
    with torch.no_grad():
        for name, parameter in base.model.llm.named_parameters():
            if "lora_B" in name:
                parameter.zero_()
    _, unmerged = step_logits(base, messages)
    assert (unmerged - expected).abs().max() > 3 * tolerance * scale


def test_a_gguf_llm_is_served_from_its_own_file_with_its_lora_as_an_adapter(make_config, tmp_path, image_files):
    """gguf_type 'source': an LLM loaded from a GGUF file runs in llama.cpp from that same file, and its LoRA
    (unmerged) as a llama.cpp adapter: the logits are the PyTorch model's with that LoRA, not without it."""
    needs_llama_cpp()
    config = make_config(lora_r=4)
    llm, _ = load_language_model(config.llm)
    source = tmp_path / "tiny.gguf"
    write_gguf(Path(config.llm.model), llm.state_dict(), llm.config, "f16", source)
    config.llm = dataclasses.replace(config.llm, model=str(source))
    config.engine = EngineConfig(gguf_type="source")
    bot = Assistant.from_config(config)
    randomise_lora(bot.model.llm, seed=2)
    fast = Assistant(bot.model, bot.tokenizer, dataclasses.replace(bot.config, llm=dataclasses.replace(bot.config.llm, serving="llama_cpp")))
    assert fast._engine.lora_file is not None and Path(fast._engine.gguf_file) == source  # the source file itself
    messages = [{"role": "user", "content": [{"type": "image", "image": image_files[1]}, {"type": "text", "text": "What is it?"}]}]
    tokens, expected = step_logits(bot, messages)
    fast_tokens, logits = step_logits(fast, messages)
    scale = expected.abs().max()
    assert (logits - expected).abs().max() <= 0.02 * scale and fast_tokens == tokens
    randomise_lora(bot.model.llm, scale=0.0)  # the same model without its LoRA: the adapter mattered
    _, unmerged = step_logits(bot, messages)
    assert (unmerged - logits).abs().max() > 0.06 * scale


def test_concurrent_and_continued_requests_compute_their_solo_logits(make_config, image_files):
    """Six requests at once (two sharing a system prompt, two with pictures), then a second turn that starts
    from its cached first: every step's logits are the solo run's up to rounding, until a near-tie flips a
    token (llama.cpp rounds a row differently beside others). A sequence that read another's cells would
    be off by far more than that."""
    from test_concurrency import SYSTEM, conversation, run_together

    needs_llama_cpp()
    config = make_config()
    config.llm.serving = "llama_cpp"
    bot = Assistant.from_config(config)
    solo = Assistant(bot.model, bot.tokenizer, bot.config)
    requests = [conversation(i, image_files) for i in range(6)]

    def agree(got: tuple[list[int], torch.Tensor], expected: tuple[list[int], torch.Tensor]) -> None:
        (tokens, logits), (solo_tokens, solo_logits) = got, expected
        same = next((i for i, (a, b) in enumerate(zip(tokens, solo_tokens)) if a != b), min(len(tokens), len(solo_tokens)))
        steps = min(same + 1, len(logits), len(solo_logits))  # up to and with the first step that differs
        scale = solo_logits.abs().max()
        assert (logits[:steps] - solo_logits[:steps]).abs().max() <= 0.01 * scale
        if same < len(solo_tokens):  # a flip is a near-tie of the solo logits
            top = solo_logits[same].topk(2).values
            assert top[0] - top[1] <= 0.02 * scale

    expected = [step_logits(solo, messages, 24) for messages in requests]
    for got, want in zip(run_together(bot, [lambda m=m: step_logits(bot, m, 24, reuse=True) for m in requests]), expected):
        agree(got, want)
    assert bot._engine.peak_batch >= 3
    first = requests[1]
    reply = bot.tokenizer.decode(expected[1][0], skip_special_tokens=True)
    follow_up = first + [{"role": "assistant", "content": reply}, {"role": "user", "content": "And then?"}]
    reused = bot.stats.reused_tokens
    agree(step_logits(bot, follow_up, 16, reuse=True), step_logits(solo, follow_up, 16))
    assert bot.stats.reused_tokens - reused > len(bot.prepare(first, 16).input_ids) // 2
    assert SYSTEM in str(first)


def test_a_full_llama_cpp_cache_drops_the_oldest_conversation_and_still_answers(make_config):
    needs_llama_cpp()
    config = make_config(engine=EngineConfig(kv_pool_mb=0.0625))  # 256 positions of the tiny model
    config.llm.serving = "llama_cpp"
    bot = Assistant.from_config(config)
    assert bot._engine.n_ctx == 256
    conversations = [[{"role": "user", "content": f"{word} The quick brown fox jumps over the lazy dog. " * 6}]
                     for word in ("Hello!", "Paris", "Describe", "Please")]
    replies = [bot.chat(messages, max_new_tokens=12) for messages in conversations]
    assert bot._engine.pool.evictions > 0 and bot._engine.pool.cached_tokens <= 256
    assert [bot.chat(messages, max_new_tokens=12) for messages in conversations] == replies
    too_long = [{"role": "user", "content": "The quick brown fox jumps over the lazy dog. " * 30}]
    with pytest.raises(AssistantError, match="KV cache holds 256"):
        bot.chat(too_long, max_new_tokens=4)
    assert bot.chat(conversations[0], max_new_tokens=12) == replies[0]  # still serving


def test_without_llama_cpp_the_mode_names_the_package(make_config, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_llama_cpp(name, *args, **kwargs):
        if name == "llama_cpp":
            raise ImportError("no llama_cpp")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_llama_cpp)
    config = make_config()
    config.llm = dataclasses.replace(config.llm, serving="llama_cpp")
    with pytest.raises(AssistantError, match="llama-cpp-python"):
        Assistant.from_config(config)


def test_an_assistant_served_by_llama_cpp_saves_its_lora_unmerged(trained_artifact, tmp_path):
    """llama.cpp gets the LoRA as an adapter or a merged copy; the PyTorch model keeps it unmerged, so saving
    (from serving 'auto' too, which the built-in default uses) writes the artifact it was loaded from."""
    needs_llama_cpp()
    served = Assistant.from_pretrained(trained_artifact, serving="auto")
    assert served.describe()["llm"].endswith("(llama_cpp weights)")
    served.save_pretrained(tmp_path / "copy")
    again = Assistant.from_pretrained(tmp_path / "copy", serving="eager")
    original = Assistant.from_pretrained(trained_artifact, serving="eager")
    lora = {name: p for name, p in original.model.llm.named_parameters() if "lora_" in name}
    assert lora and all(torch.equal(p, dict(again.model.llm.named_parameters())[name]) for name, p in lora.items())
    assert again.config.llm.serving == "eager" and served.config.llm.serving == "auto"


@pytest.mark.integration
def test_the_shipped_default_decodes_on_llama_cpp_and_answers_as_eager():
    """The built-in default serves 'auto': llama.cpp on float16 merged weights. On the shipped examples and a
    few text prompts its greedy replies are the eager PyTorch model's, word for word."""
    import json

    from launch_ui import EXAMPLES_DIR
    from training.text_regression import TEXT_PROMPTS

    needs_llama_cpp()
    fast, eager = Assistant.from_pretrained(), Assistant.from_pretrained(serving="eager")
    assert fast.describe()["llm"].endswith("(llama_cpp weights)") and fast.config.engine.gguf_type == "f16"
    conversations = [[{"role": "user", "content": [{"type": "image", "image": str(EXAMPLES_DIR / example["image"])},
                                                   {"type": "text", "text": example["question"]}]}]
                     for example in json.loads((EXAMPLES_DIR / "examples.json").read_text())]
    prompts = [prompt for prompt, _ in TEXT_PROMPTS[:6]] + ["What is 2 + 2?"]  # q8_0 and bf16 answered "2" to it
    conversations += [[{"role": "user", "content": prompt}] for prompt in prompts]
    for messages in conversations:
        assert fast.chat(messages, max_new_tokens=24) == eager.chat(messages, max_new_tokens=24), messages
