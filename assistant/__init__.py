"""Conversational multimodal assistant: frozen encoders -> trainable connectors -> a language model.

Public API: ``Assistant`` (chat, stream, save/load), ``AssistantConfig`` and ``AssistantError``.
Nothing in this package imports ``training``, ``plugins`` or gradio.
"""

from assistant.assistant import Assistant, AssistantStats
from assistant.config import AssistantConfig, ConnectorConfig, EncoderConfig, LLMConfig, LoraConfig, MediaConfig, ModalityConfig
from assistant.errors import AssistantError

__all__ = [
    "Assistant",
    "AssistantConfig",
    "AssistantError",
    "AssistantStats",
    "ConnectorConfig",
    "EncoderConfig",
    "LLMConfig",
    "LoraConfig",
    "MediaConfig",
    "ModalityConfig",
]
