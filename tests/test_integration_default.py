"""Integration: the real packaged defaults (EfficientNet-Lite0 + SmolLM2-135M-Instruct), offline."""

import pytest
from PIL import Image

from assistant import Assistant

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def default_assistant():
    return Assistant.from_pretrained()


def test_default_answers_a_text_question_sensibly(default_assistant):
    reply = default_assistant.chat([{"role": "user", "content": "What is the capital of France?"}], max_new_tokens=24)
    assert "Paris" in reply


def test_default_accepts_an_image_and_keeps_history(default_assistant, tmp_path):
    path = tmp_path / "scene.png"
    Image.new("RGB", (320, 240), "orange").save(path)
    turn1 = [{"role": "user", "content": [{"type": "image", "image": str(path)}, {"type": "text", "text": "What is in this picture?"}]}]
    reply = default_assistant.chat(turn1, max_new_tokens=16)
    assert reply.strip()
    encoder_calls = default_assistant.stats.encoder_calls
    turn2 = turn1 + [{"role": "assistant", "content": reply}, {"role": "user", "content": "What is the capital of France?"}]
    assert "Paris" in default_assistant.chat(turn2, max_new_tokens=24)
    assert default_assistant.stats.encoder_calls == encoder_calls  # the image was not encoded again
    assert default_assistant.model.encoders["image"].num_tokens == 49
