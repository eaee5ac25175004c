"""Integration: the shipped default adapter answers questions about the shipped example scenes."""

import json
from pathlib import Path

import pytest

from assistant import Assistant
from assistant.assistant import SHIPPED_DEFAULT
from training.metrics import normalise_answer

pytestmark = pytest.mark.integration
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def default_assistant():
    if not (SHIPPED_DEFAULT / "assistant_config.json").is_file():
        pytest.skip("no trained default adapter is shipped in assistant/default_adapter")
    return Assistant.from_pretrained()


@pytest.mark.parametrize("index", [0, 1, 2])
def test_answers_the_fixed_example_scenes(default_assistant, index):
    example = json.loads((EXAMPLES / "examples.json").read_text())[index]
    messages = [{"role": "user", "content": [
        {"type": "image", "image": str(EXAMPLES / example["image"])},
        {"type": "text", "text": example["question"]}]}]
    reply = default_assistant.chat(messages, max_new_tokens=12)
    assert normalise_answer(reply) == normalise_answer(example["answer"]), (example["question"], reply)


def test_shipped_weights_are_16_bit_safetensors():
    if not (SHIPPED_DEFAULT / "connectors.safetensors").is_file():
        pytest.skip("no trained default adapter is shipped")
    from safetensors.torch import load_file

    tensors = load_file(str(SHIPPED_DEFAULT / "connectors.safetensors"))
    assert tensors and all(t.dtype.itemsize == 2 for t in tensors.values())
    assert (SHIPPED_DEFAULT / "MODEL_CARD.md").is_file()
