"""``ChatAssistant`` (the LangChain chat model) on tiny random assistants: streaming, tools, usage,
images, cancellation and batching, plus LangChain's standard unit tests. Nothing is downloaded."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from contextlib import aclosing
from typing import Literal, TypedDict

import jsonschema
import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_tests.unit_tests import ChatModelUnitTests
from PIL import Image
from pydantic import BaseModel, Field

from assistant import Assistant, AssistantError
from assistant.config import ToolCallingConfig
from assistant.langchain_chat import ChatAssistant, to_assistant_messages
from assistant.tools.events import AssistantTurn
from langchain_capabilities import ChatAssistantCapabilities


@tool
def move(direction: Literal["left", "right"], steps: int) -> str:
    """Move the robot.

    Args:
        direction: Which way.
        steps: How far.
    """
    return f"moved {steps} {direction}"


@tool
def forecast(city: str, days: int) -> str:
    """Weather forecast for a city."""
    return "sunny"


class Person(BaseModel):
    """A person."""

    name: str = Field(description="The person's name.")
    age: int = Field(description="The person's age.")


class PersonDict(TypedDict):
    """A person."""

    name: str
    age: int


@pytest.fixture(scope="module")
def bot(make_config) -> Assistant:
    # Short string arguments, so the random model's calls close well within max_tokens; a wide context,
    # because the tiny tokenizer spends many tokens on the tools block.
    config = make_config(tools=ToolCallingConfig(max_string_chars=8))
    config.llm.max_context_tokens = 4096
    return Assistant.from_config(config)


@pytest.fixture
def chat(bot) -> ChatAssistant:
    return ChatAssistant(assistant=bot, max_tokens=48)


def _png_base64(colour: str = "red") -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 32), colour).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _merged(chunks):
    full = None
    for chunk in chunks:
        full = chunk if full is None else full + chunk
    return full


def _calls(message) -> list[tuple[str, dict]]:
    return [(call["name"], call["args"]) for call in message.tool_calls]


# ---------------------------------------------------------------- text, usage, metadata


def test_stream_concatenation_equals_invoke(chat):
    reply = chat.invoke("Hello")
    chunks = list(chat.stream("Hello"))
    full = _merged(chunks)
    assert len(chunks) > 2 and reply.content  # streamed piece by piece
    assert full.content == reply.content
    assert full.usage_metadata == reply.usage_metadata
    assert full.response_metadata["finish_reason"] == reply.response_metadata["finish_reason"] == "length"
    assert chunks[-1].chunk_position == "last" and chunks[-1].usage_metadata is not None
    assert sum(1 for chunk in chunks if chunk.usage_metadata) == 1  # usage comes once, not per delta


def test_usage_metadata_matches_the_assistant_turn(bot, chat):
    question = [SystemMessage("Be brief."), HumanMessage("What is in this picture?")]
    events = list(bot.stream_events(to_assistant_messages(question), max_new_tokens=20))
    turn = events[-1]
    assert isinstance(turn, AssistantTurn)
    reply = chat.invoke(question, max_tokens=20)
    assert reply.usage_metadata == {
        "input_tokens": turn.prompt_tokens,
        "output_tokens": turn.completion_tokens,
        "total_tokens": turn.prompt_tokens + turn.completion_tokens,
    }
    assert reply.usage_metadata["output_tokens"] == 20  # max_tokens per call reaches the assistant
    assert reply.content == turn.message["content"]
    assert reply.response_metadata["model_name"] == chat.model_name and chat.model_name


def test_stop_strings_end_the_reply(chat):
    reply = chat.invoke("Hello").content
    stop = reply[5:8]
    cut = chat.invoke("Hello", stop=[stop]).content
    assert cut == reply[: reply.index(stop)]
    assert ChatAssistant(assistant=chat.assistant, max_tokens=48, stop=[stop]).invoke("Hello").content == cut


# ---------------------------------------------------------------- tools


def test_named_tool_choice_forces_a_schema_valid_call(chat):
    for choice, expected in [("move", move), ({"type": "function", "function": {"name": "forecast"}}, forecast)]:
        reply = chat.bind_tools([forecast, move], tool_choice=choice).invoke("Hello", max_tokens=160)
        assert [call["name"] for call in reply.tool_calls] == [expected.name]
        jsonschema.validate(reply.tool_calls[0]["args"], convert_to_openai_tool(expected)["function"]["parameters"])
        assert reply.tool_calls[0]["id"] and reply.response_metadata["finish_reason"] == "tool_calls"
    assert chat.bind_tools([move], tool_choice=True).invoke("Hello", max_tokens=160).tool_calls[0]["name"] == "move"


def test_tool_choice_any_calls_and_none_does_not(chat):
    required = chat.bind_tools([forecast, move], tool_choice="any", parallel_tool_calls=False).invoke("Hello", max_tokens=160)
    assert len(required.tool_calls) == 1 and required.tool_calls[0]["name"] in ("forecast", "move")
    answer = chat.bind_tools([forecast, move], tool_choice="none").invoke("Hello")
    assert answer.tool_calls == [] and answer.invalid_tool_calls == [] and answer.content


def test_tool_call_chunks_merge_to_the_invoke_tool_calls(chat):
    model = chat.bind_tools([forecast, move], tool_choice="any")
    reply = model.invoke("Hello", max_tokens=200)
    chunks = list(model.stream("Hello", max_tokens=200))
    with_calls = [chunk for chunk in chunks if chunk.tool_call_chunks]
    assert [chunk.tool_call_chunks[0]["index"] for chunk in with_calls] == list(range(len(reply.tool_calls)))
    full = _merged(chunks)
    assert _calls(full) == _calls(reply) and len(reply.tool_calls) >= 1
    assert len({call["id"] for call in full.tool_calls}) == len(full.tool_calls)
    assert full.response_metadata["finish_reason"] == reply.response_metadata["finish_reason"]


def test_a_call_cut_off_by_max_tokens_is_an_invalid_tool_call(chat):
    model = chat.bind_tools([move], tool_choice="move")
    reply = model.invoke("Hello", max_tokens=12)
    assert reply.tool_calls == [] and len(reply.invalid_tool_calls) == 1
    assert "cut off" in reply.invalid_tool_calls[0]["error"]
    full = _merged(model.stream("Hello", max_tokens=12))
    assert full.tool_calls == [] and len(full.invalid_tool_calls) == 1 and "cut off" in full.invalid_tool_calls[0]["args"]


def test_bind_tools_takes_every_tool_form_and_checks_the_choice(chat):
    def my_adder(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    anthropic_style = {
        "name": "picker", "description": "Pick a colour.", "input_schema": {"type": "object", "properties": {"colour": {"type": "string"}}},
    }
    json_schema = {**Person.model_json_schema(), "title": "PersonSchema"}
    tools = [move, Person, PersonDict, my_adder, json_schema, convert_to_openai_tool(forecast), anthropic_style]
    bound = chat.bind_tools(tools, tool_choice="picker")
    names = [spec["function"]["name"] for spec in bound.kwargs["tools"]]
    assert names == ["move", "Person", "PersonDict", "my_adder", "PersonSchema", "forecast", "picker"]
    assert bound.kwargs["tool_choice"] == "picker"
    with pytest.raises(AssistantError, match="not among the offered tools"):
        chat.bind_tools([move], tool_choice="teleport")
    assert len(chat.bind_tools([Person, Person.model_json_schema()]).kwargs["tools"]) == 1  # one tool, given twice
    other_forecast = {"name": "forecast", "description": "Another.", "parameters": {"type": "object", "properties": {}}}
    with pytest.raises(AssistantError, match="share the name"):
        chat.bind_tools([forecast, other_forecast])


def test_a_tool_result_in_the_history_reaches_the_prompt(chat):
    call = {"name": "move", "args": {"direction": "left", "steps": 2}, "id": "call_1", "type": "tool_call"}
    history = [HumanMessage("Hello"), AIMessage("", tool_calls=[call])]
    short = chat.invoke([*history, ToolMessage("ok", tool_call_id="call_1")], max_tokens=4)
    long = chat.invoke([*history, ToolMessage("moved two steps to the left " * 4, tool_call_id="call_1")], max_tokens=4)
    assert long.usage_metadata["input_tokens"] > short.usage_metadata["input_tokens"]
    picture = {"type": "image", "base64": _png_base64(), "mime_type": "image/png"}
    with_image = chat.invoke([*history, ToolMessage([picture, {"type": "text", "text": "ok"}], tool_call_id="call_1")], max_tokens=4)
    image_tokens = chat.assistant.model.tokens_per_frame()["image"]
    assert with_image.usage_metadata["input_tokens"] >= short.usage_metadata["input_tokens"] + image_tokens


# ---------------------------------------------------------------- structured output


@pytest.mark.parametrize("method", ["function_calling", "json_schema", "json_mode"])
def test_structured_output_is_schema_valid(chat, method):
    person = chat.with_structured_output(Person, method=method).invoke("Hello", max_tokens=160)
    assert isinstance(person, Person)
    as_dict = chat.with_structured_output(PersonDict, method=method).invoke("Hello", max_tokens=160)
    jsonschema.validate(as_dict, convert_to_openai_tool(PersonDict)["function"]["parameters"])
    streamed = list(chat.with_structured_output(Person.model_json_schema(), method=method).stream("Hello", max_tokens=160))
    assert streamed and set(streamed[-1]) == {"name", "age"}


def test_structured_output_include_raw(bot):
    chat = ChatAssistant(assistant=bot, max_tokens=160)  # a RunnableMap does not pass call options on
    result = chat.with_structured_output(Person, include_raw=True).invoke("Hello")
    assert isinstance(result["parsed"], Person) and result["parsing_error"] is None
    assert result["raw"].tool_calls[0]["args"] == result["parsed"].model_dump()
    cut_off = ChatAssistant(assistant=bot, max_tokens=12).with_structured_output(Person, include_raw=True).invoke("Hello")
    assert cut_off["parsed"] is None and cut_off["raw"].invalid_tool_calls
    with pytest.raises(ValueError, match="method"):
        chat.with_structured_output(Person, method="telepathy")


# ---------------------------------------------------------------- images


def test_an_image_reaches_the_model_as_base64_block_and_data_url(chat, bot):
    data = _png_base64("blue")
    text = {"type": "text", "text": "What is in this picture?"}
    plain = chat.invoke([HumanMessage([text])], max_tokens=8)
    encoder_calls = bot.stats.encoder_calls
    block = chat.invoke([HumanMessage([{"type": "image", "base64": data, "mime_type": "image/png"}, text])], max_tokens=8)
    url = chat.invoke([HumanMessage([{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}}, text])], max_tokens=8)
    image_tokens = bot.model.tokens_per_frame()["image"]
    assert block.usage_metadata["input_tokens"] >= plain.usage_metadata["input_tokens"] + image_tokens
    assert url.usage_metadata == block.usage_metadata and url.content == block.content
    assert bot.stats.encoder_calls == encoder_calls + 1  # the same picture both times: encoded once


def test_a_remote_image_url_is_refused_unless_a_fetcher_is_given(chat, bot):
    remote = HumanMessage([{"type": "image", "url": "https://example.com/cat.png"}, {"type": "text", "text": "What is this?"}])
    with pytest.raises(AssistantError, match="remote image URL 'https://example.com/cat.png' refused"):
        chat.invoke([remote])
    fetched = []

    def fetch(url: str) -> bytes:
        fetched.append(url)
        return base64.b64decode(_png_base64("green"))

    reply = ChatAssistant(assistant=bot, max_tokens=4, fetch_image=fetch).invoke([remote])
    assert fetched == ["https://example.com/cat.png"] and reply.usage_metadata["input_tokens"] > bot.model.tokens_per_frame()["image"]


def test_unsupported_input_and_options_raise_naming_the_problem(chat):
    """A file block with bytes is an attachment for tools (the model reads a marker); one with only an id is refused."""
    pdf = HumanMessage([{"type": "file", "base64": "JVBERi0=", "mime_type": "application/pdf", "filename": "a.pdf"}])
    assert chat.invoke([pdf], max_tokens=2).content is not None
    by_id = HumanMessage([{"type": "file", "file_id": "file-abc"}])
    with pytest.raises(AssistantError, match="keeps no uploaded files"):
        chat.invoke([by_id])

    async def streamed():
        return [chunk async for chunk in chat.astream([by_id])]

    with pytest.raises(AssistantError, match="keeps no uploaded files"):  # raised through the worker thread
        asyncio.run(streamed())
    with pytest.raises(AssistantError, match="max_new_tokens"):
        chat.invoke("Hello", max_tokens=0)
    with pytest.raises(AssistantError, match=r"does not take \['max_new_tokens'\]"):
        chat.invoke("Hello", max_new_tokens=3)


# ---------------------------------------------------------------- async, cancellation, batching


def _recording(bot, monkeypatch) -> list:
    """Record the cancel event each request hands to ``bot.stream_events``."""
    events = []
    original = bot.stream_events

    def stream_events(*args, **kwargs):
        events.append(kwargs["cancel"])
        return original(*args, **kwargs)

    monkeypatch.setattr(bot, "stream_events", stream_events)
    return events


def _settled(bot) -> int:
    """``generated_tokens`` once it stops growing."""
    count = -1
    while count != bot.stats.generated_tokens:
        count = bot.stats.generated_tokens
        time.sleep(0.2)
    return count


def test_async_stream_cancelled_midway_stops_generation(fresh_assistant, monkeypatch):
    bot, limit = fresh_assistant, 400
    cancels = _recording(bot, monkeypatch)
    chat = ChatAssistant(assistant=bot, max_tokens=limit)
    before = bot.stats.generated_tokens

    async def cancelled_after_first_chunk() -> int:
        first = asyncio.Event()
        received = []

        async def consume():
            async for chunk in chat.astream("Hello"):
                received.append(chunk)
                first.set()

        task = asyncio.create_task(consume())
        await first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return len(received)

    received = asyncio.run(cancelled_after_first_chunk())
    assert len(cancels) == 1 and cancels[0].is_set()
    generated = _settled(bot) - before
    assert received < limit and generated < limit // 2  # the whole reply would be `limit` tokens

    async def left_after_two_chunks() -> None:
        async with aclosing(chat.astream("Hello")) as stream:
            count = 0
            async for _ in stream:
                count += 1
                if count == 2:
                    break

    before = _settled(bot)
    asyncio.run(left_after_two_chunks())
    assert len(cancels) == 2 and cancels[1].is_set()
    assert _settled(bot) - before < limit // 2


def test_ainvoke_and_astream_equal_their_sync_versions(chat):
    async def both():
        reply = await chat.ainvoke("Hello")
        chunks = [chunk async for chunk in chat.astream("Hello")]
        return reply, _merged(chunks)

    reply, streamed = asyncio.run(both())
    assert reply.content == streamed.content == chat.invoke("Hello").content
    assert reply.usage_metadata == streamed.usage_metadata


def test_batch_of_three_equals_three_invokes(chat):
    prompts = ["Hello", "What is in this picture?", "The quick brown fox"]
    batched = chat.batch(prompts)
    single = [chat.invoke(prompt) for prompt in prompts]
    assert [reply.content for reply in batched] == [reply.content for reply in single]
    assert [reply.usage_metadata for reply in batched] == [reply.usage_metadata for reply in single]
    assert len({reply.content for reply in single}) == 3  # the prompts give different replies
    assert [reply.content for reply in asyncio.run(chat.abatch(prompts))] == [reply.content for reply in single]


# ---------------------------------------------------------------- construction


def test_an_artifact_path_loads_lazily_and_once(bot, tmp_path):
    bot.save_pretrained(tmp_path / "artifact")
    chat = ChatAssistant(assistant=tmp_path / "artifact", max_tokens=4)
    assert chat.assistant == str(tmp_path / "artifact") and "artifact" in chat.model_name
    assert chat._loaded is None  # nothing is loaded until the first call
    loaded = chat.loaded_assistant()
    assert isinstance(loaded, Assistant) and chat.loaded_assistant() is loaded
    assert chat.invoke("Hello").usage_metadata["output_tokens"] == 4
    with pytest.raises(ValueError, match="assistant must be"):
        ChatAssistant(assistant=42)


def test_identifying_and_tracing_params(chat):
    assert chat._llm_type == "multimodal-assistant"
    assert chat._identifying_params["max_tokens"] == 48
    params = chat._get_ls_params()
    assert params["ls_provider"] == "multimodal_assistant" and params["ls_model_name"] == chat.model_name
    assert params["ls_max_tokens"] == 48 and params["ls_temperature"] == 0.0
    assert json.dumps(chat._identifying_params)  # plain data: usable as a cache key


# ---------------------------------------------------------------- LangChain's standard unit tests


class TestChatAssistantStandardUnit(ChatAssistantCapabilities, ChatModelUnitTests):
    @pytest.fixture(autouse=True)
    def _tiny_assistant(self, bot) -> None:
        self.tiny = bot

    @property
    def chat_model_params(self) -> dict:
        return {"assistant": self.tiny}
