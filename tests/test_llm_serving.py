"""Serving copies of the LLM (assistant.llm_serving): merged LoRA, bf16 and int8 weights."""

from __future__ import annotations

import pytest
import torch

from assistant import Assistant, AssistantError
from assistant.config import LLMConfig
from conftest import randomise_lora


@pytest.fixture(scope="module")
def trained_artifact(make_config, tmp_path_factory) -> str:
    """A tiny artifact whose LoRA actually changes the output (fresh LoRA B matrices are zero)."""
    assistant = Assistant.from_config(make_config(lora_r=4))
    randomise_lora(assistant.model.llm)
    path = tmp_path_factory.mktemp("serving") / "artifact"
    assistant.save_pretrained(path)
    return str(path)


def greedy(assistant: Assistant, image: str) -> list[int]:
    messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "What is it?"}]}]
    reply = assistant.chat(messages, max_new_tokens=12)
    return assistant.tokenizer.encode(reply, add_special_tokens=False)


def test_merged_lora_gives_the_eager_greedy_tokens(trained_artifact, image_files):
    eager = Assistant.from_pretrained(trained_artifact)
    merged = Assistant.from_pretrained(trained_artifact, serving="merged")
    assert hasattr(eager.model.llm, "peft_config") and not hasattr(merged.model.llm, "peft_config")
    assert greedy(eager, image_files[0]) == greedy(merged, image_files[0])


def test_the_lora_really_changes_the_output(trained_artifact):
    """Guards the test above: with zero LoRA, merged and eager would agree trivially."""
    base = Assistant.from_pretrained(trained_artifact)
    with torch.no_grad():
        before = base.model.llm(input_ids=torch.tensor([[1, 2, 3]])).logits
        with base.model.llm.disable_adapter():
            plain = base.model.llm(input_ids=torch.tensor([[1, 2, 3]])).logits
    assert (before - plain).abs().max() > 1e-3


def test_bf16_weights_serve_and_media_tokens_follow_their_dtype(trained_artifact, image_files):
    served = Assistant.from_pretrained(trained_artifact, serving="bf16")
    assert {p.dtype for p in served.model.llm.parameters()} == {torch.bfloat16}
    assert len(greedy(served, image_files[1])) > 0


def test_int8_quantizes_every_linear_layer_and_unties_the_head(trained_artifact, image_files):
    pytest.importorskip("torchao")
    served = Assistant.from_pretrained(trained_artifact, serving="int8")
    llm = served.model.llm
    head, embedding = llm.get_output_embeddings(), llm.get_input_embeddings()
    assert head.weight is not embedding.weight and embedding.weight.dtype == torch.float32
    quantized = [name for name, module in llm.named_modules() if isinstance(module, torch.nn.Linear)
                 and type(module.weight).__name__ != "Parameter"]
    linears = [name for name, module in llm.named_modules() if isinstance(module, torch.nn.Linear)]
    assert quantized == linears and linears
    eager = Assistant.from_pretrained(trained_artifact)
    assert len(greedy(served, image_files[0])) > 0 and greedy(eager, image_files[0])  # both decode


def test_a_serving_copy_cannot_be_saved_or_trained(trained_artifact, tmp_path, make_config):
    served = Assistant.from_pretrained(trained_artifact, serving="merged")
    with pytest.raises(AssistantError, match="cannot be saved"):
        served.save_pretrained(tmp_path / "copy")
    assert not (tmp_path / "copy").exists()
    from training.config import TrainConfig
    from training.trainer import TrainingError, build_assistant

    config = make_config(lora_r=4)
    config.llm.serving = "merged"
    with pytest.raises(TrainingError, match="cannot be trained"):
        build_assistant(TrainConfig(model=config))
    trainable = build_assistant(TrainConfig(base=trained_artifact, stage="instruct"))
    assert trainable.config.llm.serving == "eager" and hasattr(trainable.model.llm, "peft_config")


def test_unknown_serving_modes_are_refused_by_name(trained_artifact):
    with pytest.raises(AssistantError, match="'fast' is not one of eager, merged, bf16, int8"):
        LLMConfig(serving="fast")
    with pytest.raises(AssistantError, match="'fast'"):
        Assistant.from_pretrained(trained_artifact, serving="fast")


def test_the_ui_and_the_server_take_a_serving_mode():
    from assistant.serve import build_parser
    from launch_ui import parse_options

    assert parse_options(["--serving", "int8"]).serving == "int8" and parse_options([]).serving is None
    assert build_parser().parse_args(["--serving", "merged"]).serving == "merged"
    for parse in (parse_options, build_parser().parse_args):
        with pytest.raises(SystemExit):
            parse(["--serving", "fast"])
