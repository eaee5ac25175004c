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


def test_efficientnet_feature_layers_fold_onto_the_same_grid():
    import torch

    from assistant.encoders.efficientnet import EfficientNetLite0Encoder
    from assistant.errors import AssistantError

    head = EfficientNetLite0Encoder(feature_layer=-1)
    batch = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        reference = head.network.extract_features(batch).flatten(2).transpose(1, 2)  # the package's own path
    assert torch.equal(head.features(batch), reference) and reference.shape == (2, 49, 1280)
    block5 = EfficientNetLite0Encoder()  # default: stage-4 output, 80 channels at stride 16, folded 2x2
    assert (block5.feature_layer, block5.num_tokens, block5.hidden_size) == (5, 49, 320)
    with torch.no_grad():
        stride16 = batch
        network = block5.network
        stride16 = network._swish(network._bn0(network._conv_stem(stride16)))
        for block in network._blocks[:6]:
            stride16 = block(stride16)  # (2, 80, 14, 14)
    tokens = block5.features(batch)
    # token (row 0, col 0) holds the 2x2 stride-16 cells of the top-left corner, channel-major
    assert torch.equal(tokens[:, 0].reshape(2, 80, 2, 2), stride16[:, :, :2, :2])
    with pytest.raises(AssistantError, match="feature_layer"):
        EfficientNetLite0Encoder(feature_layer=16)


def test_forced_plugin_call_is_schema_valid_and_the_loop_ends_in_an_answer(default_assistant):
    """The 135M default, told to call a plugin (as ``/weather`` does in the UI), writes valid arguments
    under the grammar, reads the result, and answers from it; the prefix is kept across the tool step."""
    import json

    import jsonschema

    from assistant.tools import tool_spec
    from plugins import plugin

    @plugin
    def weather(city: str) -> str:
        """Get the current weather in a city.

        Args:
            city: The city's name, e.g. "Paris".
        """
        return f"It is sunny and 21 degrees Celsius in {city}."

    question = [{"role": "user", "content": "What is the weather like in Paris today?"}]
    reused_before = default_assistant.stats.reused_tokens
    new = default_assistant.run(question, tools=[weather], tool_choice="weather", followup_tool_choice="none", max_new_tokens=64)
    assert [message["role"] for message in new] == ["assistant", "tool", "assistant"]
    [call] = new[0]["tool_calls"]
    arguments = json.loads(call["function"]["arguments"])
    jsonschema.validate(arguments, tool_spec(weather).parameters)
    assert call["function"]["name"] == "weather" and "Paris" in arguments["city"]
    assert new[1]["content"][0]["text"].startswith("It is sunny")  # the call ran
    answer = new[2]["content"]
    assert "tool_calls" not in new[2] and ("21" in answer or "sunny" in answer.lower()), answer
    assert default_assistant.stats.reused_tokens - reused_before > 100  # the answer step reused the call step's prefix
