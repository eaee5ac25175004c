"""The wire format of ``/v1/chat/completions`` and ``/v1/models``, as pydantic models.

Requests are validated strictly (a string where a number belongs is an error, as at OpenAI) and
unknown fields are ignored. Message contents are kept as plain dicts here: their parts are checked
by ``assistant.openai_messages``, which names the message and part at fault. Responses and stream
chunks follow OpenAI's ``chat.completion`` and ``chat.completion.chunk`` objects. This module knows
nothing about the model or HTTP.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_STOP_STRINGS = 16


class RequestModel(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class FunctionDefinition(RequestModel):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDefinition(RequestModel):
    type: Literal["function"]
    function: FunctionDefinition

    def openai(self) -> dict[str, Any]:
        """The OpenAI function dict the assistant takes (an absent schema means no arguments)."""
        parameters = self.function.parameters if self.function.parameters is not None else {"type": "object", "properties": {}}
        return {"type": "function", "function": {"name": self.function.name, "description": self.function.description or "",
                                                 "parameters": parameters}}


class StreamOptions(RequestModel):
    include_usage: bool = False


class JSONSchemaFormat(RequestModel):
    name: str = Field(default="response", max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(RequestModel):
    type: str = "text"  # text | json_object | json_schema
    json_schema: JSONSchemaFormat | None = None

    def reply_schema(self) -> dict[str, Any] | None:
        """The JSON schema the reply is decoded under (None for plain text): ``json_object`` is any object."""
        if self.type == "json_object":
            return {"type": "object"}
        if self.type == "json_schema":
            return (self.json_schema.schema_ if self.json_schema else None) or {"type": "object"}
        return None


class ChatCompletionRequest(RequestModel):
    """The fields this server reads; anything else a client sends is ignored."""

    messages: list[dict[str, Any]] = Field(min_length=1)
    model: str | None = None  # None: the served model
    tools: list[ToolDefinition] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool = True
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = 1
    # Accepted and not needed: prompts are matched to the KV cache by content, whoever sends them.
    prompt_cache_key: str | None = Field(default=None, max_length=256)
    logprobs: bool | None = None
    response_format: ResponseFormat | None = None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def reply_schema(self) -> dict[str, Any] | None:
        return self.response_format.reply_schema() if self.response_format is not None else None

    def stop_strings(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def add(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.total_tokens = self.prompt_tokens + self.completion_tokens


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str
    logprobs: None = None


class _Completion(BaseModel):
    """What a completion and each of its stream chunks carry alike."""

    id: str
    created: int
    model: str


class ChatCompletion(_Completion):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[Choice]
    usage: Usage


class ChunkChoice(BaseModel):
    index: int = 0
    delta: dict[str, Any]
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(_Completion):
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    choices: list[ChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "multimodal-assistant"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def completion_id() -> str:
    return "chatcmpl-" + secrets.token_hex(12)


def now() -> int:
    return int(time.time())
