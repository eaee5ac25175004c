"""Integration: LangChain's standard chat-model tests on the real packaged default
(SmolLM2-135M-Instruct + the shipped adapter), offline.

The standard image tests download one picture with ``httpx.get``; here that call serves a picture
drawn locally, so the tests run as written without a network. Every capability flag says what
``ChatAssistant`` does; the tests marked ``xfail`` fail on what the 135M model writes, not on the
wrapper (each reason says what the model does).
"""

from __future__ import annotations

import io
from types import SimpleNamespace

import langchain_tests.integration_tests.chat_models as standard_chat_models
import pytest
from langchain_core.language_models import BaseChatModel
from langchain_tests.integration_tests import ChatModelIntegrationTests
from PIL import Image, ImageDraw

from assistant import Assistant
from assistant.config import ToolCallingConfig
from langchain_capabilities import ChatAssistantCapabilities

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def default_assistant() -> Assistant:
    # String arguments the schema leaves open are bounded short, so calls close within max_tokens.
    return Assistant.from_pretrained(tools=ToolCallingConfig(max_string_chars=24))


def _diagram_png() -> bytes:
    image = Image.new("RGB", (320, 240), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((20, 90, 110, 150), outline="black", width=3)
    draw.ellipse((200, 80, 300, 160), fill="orange", outline="black", width=3)
    draw.line((110, 120, 200, 120), fill="black", width=3)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class _LocalPictures:
    """Stands in for ``httpx`` inside ``langchain_tests``: serves a local picture for ``.png`` URLs."""

    def __init__(self) -> None:
        self.png = _diagram_png()

    def get(self, url: str, **_: object) -> SimpleNamespace:
        if not url.endswith(".png"):
            raise AssertionError(f"the standard tests fetched {url}, which this offline suite does not serve")
        return SimpleNamespace(content=self.png)


class TestChatAssistantStandardIntegration(ChatAssistantCapabilities, ChatModelIntegrationTests):
    pytestmark = [pytest.mark.asyncio, pytest.mark.filterwarnings("ignore:The test <Function:pytest.PytestWarning")]

    @pytest.fixture(autouse=True)
    def _offline(self, default_assistant, monkeypatch) -> None:
        self.default = default_assistant
        monkeypatch.setattr(standard_chat_models, "httpx", _LocalPictures())

    @property
    def chat_model_params(self) -> dict:
        # One call per turn: with parallel calls allowed the 135M model repeats the same call until max_tokens.
        # 72 tokens: a forced call of the Joke schema takes about 62 (the call's JSON is written token by token).
        return {"assistant": self.default, "max_tokens": 72, "parallel_tool_calls": False}

    @pytest.mark.xfail(
        strict=True,
        reason="model quality: the 135M default is not trained to choose a tool by itself (tool_choice='auto'); "
        "asked for the weather it answers in text, so no tool_call block appears",
    )
    @pytest.mark.parametrize("model", [{}, {"output_version": "v1"}], indirect=True)
    def test_agent_loop(self, model: BaseChatModel) -> None:
        super().test_agent_loop(model)
