"""``ChatAssistant``: the assistant as a LangChain chat model (``BaseChatModel``).

LangChain messages go through ``langchain_core.messages.convert_to_openai_messages`` and then
``assistant.openai_messages.from_openai_messages``, so images arrive as base64 blocks or data URLs
and never as file paths; a remote image URL is refused unless ``fetch_image`` is given. Each call is
one ``Assistant.stream_events`` step: reply text becomes ``AIMessage.content``, each call the model
writes becomes a tool call (or an invalid tool call when it did not parse), and the step's token
counts become ``usage_metadata``. ``bind_tools`` accepts any LangChain tool, pydantic model,
TypedDict, function or schema dict; ``with_structured_output`` forces one call of the schema's tool,
which the assistant decodes under a grammar, so the answer always parses.

This module runs no tools (an agent does) and knows nothing about prompts, tokens or the engine.
"""

from __future__ import annotations

import asyncio
import threading
from contextlib import closing
from operator import itemgetter
from typing import Any, AsyncIterator, Callable, Iterator, Sequence

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, convert_to_openai_messages
from langchain_core.messages.tool import ToolCallChunk, invalid_tool_call, tool_call, tool_call_chunk
from langchain_core.output_parsers.openai_tools import JsonOutputKeyToolsParser, PydanticToolsParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.runnables.config import run_in_executor
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import ConfigDict, Field, PrivateAttr, field_validator

from assistant.assistant import Assistant
from assistant.errors import AssistantError
from assistant.openai_messages import from_openai_messages
from assistant.tools.calls import ToolCall
from assistant.tools.events import AssistantTurn, TextDelta, ToolCallEvent
from assistant.tools.spec import parse_tool_choice, tool_specs

CALL_OPTIONS = ("max_tokens", "temperature", "top_p", "seed", "tools", "tool_choice", "parallel_tool_calls")
STRUCTURED_OUTPUT_METHODS = ("function_calling", "json_schema", "json_mode")
REASONING_PART_TYPES = ("thinking", "redacted_thinking", "reasoning")  # another model's reasoning in the history
_END = object()  # the async producer's last queue item


class ChatAssistant(BaseChatModel):
    """LangChain chat model over an ``Assistant`` (an instance, an artifact folder, or ``None`` for the default).

    Example:
        .. code-block:: python

            from assistant.langchain_chat import ChatAssistant

            chat = ChatAssistant(max_tokens=64)          # loads Assistant.from_pretrained() on first use
            chat.invoke([("human", [{"type": "image", "base64": png_b64, "mime_type": "image/png"},
                                    {"type": "text", "text": "What is in this picture?"}])])
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    assistant: Assistant | str | None = Field(
        default=None, exclude=True, description="an Assistant, an artifact folder (loaded on first use), or None for the default"
    )
    model_name: str = Field(default="", description="name reported in response_metadata and traces; default: from the source")
    max_tokens: int = Field(default=256, description="upper bound on generated tokens per call")
    temperature: float = Field(default=0.0, description="0 = greedy decoding")
    top_p: float = Field(default=1.0, description="nucleus sampling mass (with temperature > 0)")
    stop: list[str] | None = Field(default=None, description="strings that end the reply")
    seed: int | None = Field(default=None, description="makes sampling reproducible")
    parallel_tool_calls: bool = Field(default=True, description="allow several tool calls in one turn (bind_tools can override)")
    streaming: bool = Field(default=False, description="invoke streams underneath (callbacks see each token)")
    fetch_image: Callable[[str], bytes] | None = Field(
        default=None, exclude=True, description="fetches an http(s) image URL; None refuses remote URLs"
    )
    _loaded: Assistant | None = PrivateAttr(default=None)
    _load_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @field_validator("assistant", mode="before")
    @classmethod
    def _source(cls, value: Any) -> Any:
        if value is None or isinstance(value, (Assistant, str)):
            return value
        if hasattr(value, "__fspath__"):
            return str(value.__fspath__())
        raise ValueError(f"assistant must be an Assistant, an artifact folder or None, got {type(value).__name__}")

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        if not self.model_name:
            if isinstance(self.assistant, Assistant):
                self.model_name = f"multimodal-assistant ({self.assistant.config.llm.model})"
            else:
                self.model_name = f"multimodal-assistant ({self.assistant or 'default'})"

    # ---------------------------------------------------------------- LangChain's descriptive hooks

    @property
    def _llm_type(self) -> str:
        return "multimodal-assistant"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name, "max_tokens": self.max_tokens, "temperature": self.temperature,
            "top_p": self.top_p, "stop": self.stop, "seed": self.seed, "parallel_tool_calls": self.parallel_tool_calls,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = super()._get_ls_params(stop=stop or self.stop, **kwargs)
        params["ls_provider"] = "multimodal_assistant"
        return params

    # ---------------------------------------------------------------- the assistant and one request

    def loaded_assistant(self) -> Assistant:
        """The ``Assistant`` this model serves, loaded on first use (once, even from several threads)."""
        if isinstance(self.assistant, Assistant):
            return self.assistant
        with self._load_lock:
            if self._loaded is None:
                self._loaded = Assistant.from_pretrained(self.assistant)
            return self._loaded

    def _request(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        """``stream_events`` arguments for LangChain ``messages`` and per-call options."""
        unknown = sorted(set(kwargs) - set(CALL_OPTIONS))
        if unknown:
            raise AssistantError(f"ChatAssistant does not take {unknown}; per-call options are {list(CALL_OPTIONS)}")
        tools = openai_tools(kwargs.get("tools") or [])
        return {
            "messages": to_assistant_messages(messages, self.fetch_image),
            "tools": tools or None,
            "tool_choice": normalize_tool_choice(kwargs.get("tool_choice"), [tool["function"]["name"] for tool in tools]),
            "parallel_tool_calls": bool(kwargs.get("parallel_tool_calls", self.parallel_tool_calls)),
            "max_new_tokens": kwargs.get("max_tokens", self.max_tokens),
            "temperature": kwargs.get("temperature", self.temperature),
            "top_p": kwargs.get("top_p", self.top_p),
            "stop": list(stop if stop is not None else self.stop or []),
            "seed": kwargs.get("seed", self.seed),
        }

    def _events(
        self, messages: list[BaseMessage], stop: list[str] | None, cancel: threading.Event, kwargs: dict[str, Any]
    ) -> Iterator[TextDelta | ToolCallEvent | AssistantTurn]:
        """The events of one ``stream_events`` step; input errors raise before anything is generated."""
        request = self._request(messages, stop, kwargs)
        events = self.loaded_assistant().stream_events(cancel=cancel, **request)
        with closing(events):
            yield from events

    def _usage_and_metadata(self, turn: AssistantTurn) -> dict[str, Any]:
        usage = {"input_tokens": turn.prompt_tokens, "output_tokens": turn.completion_tokens,
                 "total_tokens": turn.prompt_tokens + turn.completion_tokens}
        return {"usage_metadata": usage, "response_metadata": {"finish_reason": turn.finish_reason, "model_name": self.model_name}}

    # ---------------------------------------------------------------- generation

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._generate_until(messages, stop, threading.Event(), kwargs)

    def _generate_until(
        self, messages: list[BaseMessage], stop: list[str] | None, cancel: threading.Event, kwargs: dict[str, Any]
    ) -> ChatResult:
        turn = None
        with closing(self._events(messages, stop, cancel, kwargs)) as events:
            for event in events:
                if isinstance(event, AssistantTurn):
                    turn = event
        assert turn is not None, "stream_events always ends with an AssistantTurn"
        valid = [call for call in turn.calls if call.error is None]
        message = AIMessage(
            content=turn.message.get("content") or "",
            tool_calls=[tool_call(name=call.name, args=call.arguments, id=call.id) for call in valid],
            invalid_tool_calls=[
                invalid_tool_call(name=call.name, args=call.arguments_json(), id=call.id, error=call.error)
                for call in turn.calls if call.error is not None
            ],
            **self._usage_and_metadata(turn),
        )
        return ChatResult(generations=[ChatGeneration(message=message, generation_info={"finish_reason": turn.finish_reason})])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        yield from self._stream_until(messages, stop, threading.Event(), kwargs)

    def _stream_until(
        self, messages: list[BaseMessage], stop: list[str] | None, cancel: threading.Event, kwargs: dict[str, Any]
    ) -> Iterator[ChatGenerationChunk]:
        """Text deltas, one ``tool_call_chunk`` per finished call, then the usage chunk (``chunk_position="last"``)."""
        try:
            with closing(self._events(messages, stop, cancel, kwargs)) as events:
                yield from self._chunks(events)
        finally:
            cancel.set()  # the consumer stopped early (or the stream ended): nothing more is generated

    def _chunks(self, events: Iterator[Any]) -> Iterator[ChatGenerationChunk]:
        calls = 0
        for event in events:
            if isinstance(event, TextDelta):
                yield ChatGenerationChunk(message=AIMessageChunk(content=event.text))
            elif isinstance(event, ToolCallEvent):
                chunk = AIMessageChunk(content="", tool_call_chunks=[_call_chunk(event.call, calls)])
                calls += 1
                yield ChatGenerationChunk(message=chunk)
            elif isinstance(event, AssistantTurn):
                last = AIMessageChunk(content="", chunk_position="last", **self._usage_and_metadata(event))
                yield ChatGenerationChunk(message=last, generation_info={"finish_reason": event.finish_reason})

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        cancel = threading.Event()
        try:
            return await run_in_executor(None, self._generate_until, messages, stop, cancel, kwargs)
        finally:
            cancel.set()  # a cancelled task stops the worker thread's generation promptly

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        """The sync stream runs in a worker thread; cancelling the task or leaving the loop sets its cancel event."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()

        def put(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the event loop is closed: nobody is listening any more
                cancel.set()

        def produce() -> None:
            try:
                with closing(self._stream_until(messages, stop, cancel, kwargs)) as chunks:
                    for chunk in chunks:
                        if cancel.is_set():
                            return
                        put(chunk)
            except BaseException as error:  # handed to the consumer, which raises it
                put(error)
            finally:
                put(_END)

        worker = asyncio.ensure_future(run_in_executor(None, produce))
        try:
            while (item := await queue.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            cancel.set()
            await asyncio.wait([worker])  # generation has stopped when the stream is left

    # ---------------------------------------------------------------- tools and structured output

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | Any],
        *,
        tool_choice: str | bool | dict[str, Any] | None = None,
        parallel_tool_calls: bool | None = None,
        **kwargs: Any,
    ) -> Runnable:
        """Offer ``tools`` (LangChain tools, pydantic models, TypedDicts, functions or schema dicts) on every call.

        Args:
            tools: The tools; their JSON schemas constrain the calls the model writes.
            tool_choice: ``"auto"`` (default), ``"any"``/``"required"``/``True`` (at least one call; ``True``
                with a single tool forces it), ``"none"``, a tool's name, or ``{"type": "function", "function": {"name"}}``.
            parallel_tool_calls: ``False`` allows at most one call per turn.
            kwargs: Further options bound to every call (e.g. ``max_tokens``).

        Raises:
            AssistantError: A tool cannot be described, two share a name, or ``tool_choice`` names no offered tool.
        """
        formatted = openai_tools(tools)
        specs = tool_specs(formatted)
        choice = normalize_tool_choice(tool_choice, [spec.name for spec in specs])
        parse_tool_choice(choice, specs)  # refuse a bad choice now, not at the first call
        bound: dict[str, Any] = {"tools": formatted, "tool_choice": choice}
        if parallel_tool_calls is not None:
            bound["parallel_tool_calls"] = parallel_tool_calls
        return self.bind(**bound, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        include_raw: bool = False,
        method: str = "function_calling",
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable:
        """Answers as ``schema`` (pydantic model -> instance; TypedDict or JSON schema -> dict).

        Every ``method`` forces one call of the schema's tool, decoded under the grammar of its JSON
        schema, so the output is always schema-valid JSON (``strict`` is therefore always on). With
        ``include_raw`` the result is ``{"raw": AIMessage, "parsed": ..., "parsing_error": ...}``.

        Raises:
            ValueError: An unknown ``method``, no schema, or other arguments.
        """
        if kwargs:
            raise ValueError(f"with_structured_output got unsupported arguments {sorted(kwargs)}")
        if method not in STRUCTURED_OUTPUT_METHODS:
            raise ValueError(f"method must be one of {STRUCTURED_OUTPUT_METHODS}, got {method!r}")
        if schema is None:
            raise ValueError("with_structured_output needs a schema (a pydantic model, a TypedDict or a JSON schema)")
        name = convert_to_openai_tool(schema)["function"]["name"]
        model = self.bind_tools(
            [schema], tool_choice=name, parallel_tool_calls=False,
            ls_structured_output_format={"kwargs": {"method": method, "strict": strict}, "schema": schema},
        )
        if isinstance(schema, type) and is_basemodel_subclass(schema):
            parser: Runnable = PydanticToolsParser(tools=[schema], first_tool_only=True)
        else:
            parser = JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
        if not include_raw:
            return model | parser
        parsed = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
        unparsed = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=model) | parsed.with_fallbacks([unparsed], exception_key="parsing_error")


def to_assistant_messages(messages: list[BaseMessage], fetch_image: Callable[[str], bytes] | None = None) -> list[dict[str, Any]]:
    """LangChain messages -> the assistant's typed-content messages (through the OpenAI format).

    Raises:
        AssistantError: Naming the message and part that cannot be converted (e.g. a PDF, a remote
            image URL without ``fetch_image``).
    """
    try:
        openai = convert_to_openai_messages(messages)
    except (ValueError, TypeError, KeyError) as error:
        raise AssistantError(f"cannot convert the messages for the assistant: {error}") from None
    for message in openai:
        if message.get("role") == "assistant" and isinstance(message.get("content"), list):
            message["content"] = [part for part in message["content"] if part.get("type") not in REASONING_PART_TYPES]
    return from_openai_messages(openai, fetch_image or refuse_remote_image)


def openai_tools(tools: Sequence[Any]) -> list[dict[str, Any]]:
    """Each tool as an OpenAI function dict. A tool given twice (a pydantic model and its JSON schema,
    which differ only in ``title`` annotations) counts once; other tools sharing a name are refused later."""
    formatted: list[dict[str, Any]] = []
    seen = []
    for tool in tools:
        described = convert_to_openai_tool(tool)
        key = _untitled(described)
        if key not in seen:
            seen.append(key)
            formatted.append(described)
    return formatted


def _untitled(schema: Any) -> Any:
    """``schema`` without its ``title`` annotations (which do not change what validates)."""
    if isinstance(schema, list):
        return [_untitled(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    kept = {}
    for key, value in schema.items():
        if key == "title" and isinstance(value, str):
            continue
        if key in ("properties", "$defs", "definitions", "patternProperties") and isinstance(value, dict):
            kept[key] = {name: _untitled(sub) for name, sub in value.items()}  # names, not keywords
        else:
            kept[key] = _untitled(value)
    return kept


def refuse_remote_image(url: str) -> bytes:
    """The default ``fetch_image``: ChatAssistant reads nothing from the network."""
    raise AssistantError(
        f"remote image URL {url[:100]!r} refused: ChatAssistant does not fetch from the network; send the image as "
        "base64 ({'type': 'image', 'base64': ..., 'mime_type': 'image/png'} or a data: URL), or pass fetch_image="
    )


def normalize_tool_choice(choice: Any, names: list[str]) -> str | dict[str, Any]:
    """LangChain's ``tool_choice`` values -> the assistant's (``auto | none | required | <name>``)."""
    if choice is None or choice == "auto":
        return "auto"
    if choice is True:
        return names[0] if len(names) == 1 else "required"
    if choice in ("any", "required"):
        return "required"
    if isinstance(choice, str) or isinstance(choice, dict):
        return choice  # "none", a tool's name or an OpenAI function dict: checked by parse_tool_choice
    raise AssistantError(f"tool_choice must be 'auto', 'any', 'none', True, a tool name or a function dict, got {choice!r}")


def _call_chunk(call: ToolCall, index: int) -> ToolCallChunk:
    """A finished call as one stream chunk; a call that did not parse carries its error instead of JSON
    arguments, so the merged message lists it among ``invalid_tool_calls``."""
    arguments = call.arguments_json() if call.error is None else f"error: {call.error}"
    return tool_call_chunk(name=call.name, args=arguments, id=call.id, index=index)
