"""Integration: the shipped text-to-image scene model, alone and called by the real default assistant."""

import pytest

from plugins.text_to_image.checker import check
from plugins.text_to_image.engine import ImageRequest, SceneEngine, TextToImageConfig, load_engine
from plugins.text_to_image.tool import draw_checked

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def engine():
    return load_engine(TextToImageConfig())


def test_a_large_red_circle_is_drawn_and_accepted_by_the_checker_within_the_retry_budget(engine):
    assert isinstance(engine, SceneEngine)
    [drawn] = draw_checked(engine, ImageRequest("a large red circle"), TextToImageConfig().max_tries)
    assert drawn.verdict.passed, (drawn.verdict.summary(), drawn.verdict.found)
    assert check("a large red circle", drawn.picture).passed  # the kept picture is the accepted one


def test_the_default_assistant_calls_generate_image_and_gets_the_picture_back(engine):
    from assistant import Assistant
    from plugins.text_to_image.tool import generate_image

    bot = Assistant.from_pretrained()
    question = [{"role": "user", "content": "Draw a large red circle"}]  # measured: the 135M model passes "Draw a large red circle."
    new = bot.run(question, tools=[generate_image], tool_choice="generate_image", followup_tool_choice="none", max_new_tokens=60)
    result = new[1]
    assert result["role"] == "tool" and result["content"][0]["text"].startswith("Prompt: "), result["content"][0]["text"]
    assert [part["type"] for part in result["content"][1:]] == ["image"]
    assert "circle" in result["content"][0]["text"].split("\n")[0]
    assert "matches the prompt" in result["content"][0]["text"], result["content"][0]["text"]
