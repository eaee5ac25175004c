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


def test_concurrent_greedy_replies_of_the_default_equal_its_solo_replies(default_assistant, tmp_path):
    import threading

    Image.new("RGB", (320, 240), "teal").save(tmp_path / "teal.png")
    questions = ["What is the capital of France?", "Name three colours.", "Write a haiku about the sea.",
                 [{"type": "image", "image": str(tmp_path / "teal.png")}, {"type": "text", "text": "Describe this picture."}]]
    conversations = [[{"role": "user", "content": question}] for question in questions]
    solo = Assistant(default_assistant.model, default_assistant.tokenizer, default_assistant.config)
    expected = [solo.chat(messages, max_new_tokens=20) for messages in conversations]
    replies = [None] * len(conversations)

    def ask(index: int) -> None:
        replies[index] = default_assistant.chat(conversations[index], max_new_tokens=20)

    threads = [threading.Thread(target=ask, args=(index,)) for index in range(len(conversations))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert replies == expected


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


@pytest.fixture(scope="module")
def scene_index(tmp_path_factory):
    """20 generated scenes in a knowledge base built with the shipped embedders (MiniLM + image head)."""
    import random

    from plugins.retrieval import KnowledgeBase
    from training.data.scene_layout import generate_scene
    from training.data.scene_render import scene_png
    from training.data.scenes import scene_seed

    folder = tmp_path_factory.mktemp("scenes")
    scenes = [generate_scene(random.Random(scene_seed(7, "retrieval_check", index))) for index in range(20)]
    for index, scene in enumerate(scenes):
        (folder / f"scene_{index:02d}.png").write_bytes(scene_png(scene))
    knowledge = KnowledgeBase(folder / "index")
    assert knowledge.embedder.supports_images, "the shipped image head should give the default index a picture side"
    knowledge.ingest(folder, progress=False)
    return knowledge, scenes


def test_captions_find_their_scene_among_20_with_the_shipped_image_head(scene_index):
    from training.data.scene_questions import caption

    knowledge, scenes = scene_index
    found = sum(knowledge.search(caption(scene), k=1, kind="picture")[0].record.source.endswith(f"scene_{index:02d}.png")
                for index, scene in enumerate(scenes))
    assert found >= 18  # measured: 20 of 20


@pytest.mark.parametrize("target", [8, 14])
def test_a_forced_retrieval_call_finds_the_picture_and_the_follow_up_is_answered_from_it(default_assistant, scene_index, target):
    import random

    from plugins.retrieval import knowledge_tool
    from training.data.scene_questions import caption, colour_question

    knowledge, scenes = scene_index
    description = caption(scenes[target])
    question = [{"role": "user", "content": "Find the picture with " + description[0].lower() + description[1:]}]
    encoded = default_assistant.stats.encoder_calls
    new = default_assistant.run(question, tools=[knowledge_tool(knowledge)], tool_choice="search_knowledge",
                                followup_tool_choice="none", max_new_tokens=120)
    result = new[1]["content"]
    assert result[0]["text"].startswith("[1] picture 1 of this result: ") and f"scene_{target:02d}.png" in result[0]["text"].split("\n")[0]
    assert [part["type"] for part in result[1:]] == ["image"] * (len(result) - 1) >= ["image"]
    assert default_assistant.stats.encoder_calls > encoded  # the retrieved pictures went through the encoder
    follow_up = colour_question(scenes[target], random.Random(target))
    answer = default_assistant.chat(question + new + [{"role": "user", "content": follow_up.question}], max_new_tokens=12)
    assert follow_up.answer in answer.lower(), (follow_up, answer)


# Held-out test-split scenes (training.data.scenes.scene_seed(0, "test", i) for i = 2, 0, 27) with 1, 2 and 3 circles.
SPOKEN_COUNT_SCENES = ((7707607814550449825, 1), (10834333443742739069, 2), (9833709065195101596, 3))


def _spoken_and_typed(default_assistant, speak, seed: int) -> tuple[str, str]:
    import random

    from assistant.audio import SAMPLE_RATE
    from training.data.scene_layout import generate_scene
    from training.data.scene_render import render
    from training.metrics import normalise_answer

    picture = render(generate_scene(random.Random(seed)))
    question = "How many circles are there?"
    spoken = [{"role": "user", "content": [{"type": "image", "image": picture}, {"type": "audio", "audio": (SAMPLE_RATE, speak(question))}]}]
    typed = [{"role": "user", "content": [{"type": "image", "image": picture}, {"type": "text", "text": question}]}]
    return tuple(normalise_answer(default_assistant.chat(messages, max_new_tokens=8)) for messages in (spoken, typed))


@pytest.mark.parametrize("seed,circles", SPOKEN_COUNT_SCENES)
def test_a_spoken_count_question_is_answered_as_the_typed_one(default_assistant, speak, seed, circles):
    spoken, typed = _spoken_and_typed(default_assistant, speak, seed)
    assert spoken == typed and spoken.isdigit()


@pytest.mark.xfail(strict=True, reason="model quality: the shipped default counts circles wrong on these scenes whether the "
                                       "question is spoken or typed (typed count accuracy 66.7% on the test split)")
def test_a_spoken_count_question_about_a_picture_gets_the_right_count(default_assistant, speak):
    answers = [_spoken_and_typed(default_assistant, speak, seed)[0] for seed, _ in SPOKEN_COUNT_SCENES]
    assert answers == [str(circles) for _, circles in SPOKEN_COUNT_SCENES], answers
