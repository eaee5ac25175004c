"""What ``ChatAssistant`` can do, as langchain-tests capability flags: one set for the unit and the
integration suites (``tests/test_langchain_chat.py``, ``tests/test_langchain_standard.py``)."""

from __future__ import annotations

from assistant.langchain_chat import ChatAssistant


class ChatAssistantCapabilities:
    @property
    def chat_model_class(self) -> type[ChatAssistant]:
        return ChatAssistant

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def structured_output_kwargs(self) -> dict:
        return {"method": "function_calling"}

    @property
    def supports_json_mode(self) -> bool:
        return True  # json_mode is served by the same grammar-constrained forced call

    @property
    def supports_image_inputs(self) -> bool:
        return True  # base64 blocks and data URLs

    @property
    def supports_image_urls(self) -> bool:
        return False  # remote URLs are refused: nothing is fetched from the network

    @property
    def supports_image_tool_message(self) -> bool:
        return True

    @property
    def supports_anthropic_inputs(self) -> bool:
        return True  # tool_use / image source blocks and input_schema tools convert; thinking blocks are dropped

    @property
    def supports_pdf_inputs(self) -> bool:
        return False

    @property
    def supports_pdf_tool_message(self) -> bool:
        return False

    @property
    def supports_audio_inputs(self) -> bool:
        # The default hears, but langchain-tests' audio test downloads its clip from wikimedia.org and CI has no
        # network; tests/test_audio.py sends both standard audio blocks to ChatAssistant instead.
        return False

    @property
    def supports_video_inputs(self) -> bool:
        return False  # video is frames of typed-content messages; LangChain has no standard video block here

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    @property
    def supports_model_override(self) -> bool:
        return False  # one ChatAssistant serves one loaded assistant
