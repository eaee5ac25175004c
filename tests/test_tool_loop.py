"""Running tool calls and the generate -> run -> generate loop, on tiny random models: media from tools,
parallel calls, timeouts, errors, confirmation, max_steps, forbidden calls and the conversation's media limit."""

from __future__ import annotations

import time
from typing import Annotated, Literal

import pytest
from langchain_core.tools import InjectedToolArg, StructuredTool, tool
from PIL import Image

from assistant import Assistant
from assistant.config import MediaConfig
from assistant.tools import ToolContext, ToolPolicy, tool_spec
from assistant.tools.calls import ToolCall
from assistant.tools.events import AssistantTurn, ToolConfirmation, ToolProgress, ToolResult
from assistant.tools.loop import run_loop
from assistant.tools.runner import ToolRunner

QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]


@tool(parse_docstring=True)
def turn(direction: Literal["left", "right"]) -> str:
    """Turn the robot.

    Args:
        direction: Which way.
    """
    return f"turned {direction}"


@tool(parse_docstring=True, response_format="content_and_artifact")
def paint(colour: Literal["red", "green", "blue"]) -> tuple[str, list]:
    """Paint a small picture in one colour.

    Args:
        colour: A colour name.
    """
    return f"painted {colour}", [{"type": "image", "image": Image.new("RGB", (40, 32), (200, 30, 30))}]


@pytest.fixture(scope="module")
def bot(make_config) -> Assistant:
    config = make_config()
    config.llm.max_context_tokens = 4096  # the tiny tokenizer spends many tokens on the tools block
    return Assistant.from_config(config)


def test_two_step_loop_with_a_picture_from_a_tool_encodes_it_once_and_keeps_the_prefix(make_config):
    config = make_config()
    config.llm.max_context_tokens = 4096
    bot = Assistant.from_config(config)
    calls_before = bot.stats.encoder_calls
    new = bot.run(QUESTION, tools=[paint], tool_choice="paint", followup_tool_choice="none", max_new_tokens=150,
                  parallel_tool_calls=False)
    assert [m["role"] for m in new] == ["assistant", "tool", "assistant"]
    assert new[1]["tool_call_id"] == new[0]["tool_calls"][0]["id"]
    assert new[1]["content"][0]["text"].startswith("painted")
    assert new[1]["content"][1]["type"] == "image"
    assert bot.stats.encoder_calls == calls_before + 1  # the tool's picture, once
    first_prompt = len(bot.prepare(QUESTION, 150, [paint]).input_ids)
    reused_before = bot.stats.reused_tokens
    history = QUESTION + new + [{"role": "user", "content": "And now?"}]
    list(bot.stream_events(history, tools=[paint], tool_choice="none", max_new_tokens=5))
    assert bot.stats.encoder_calls == calls_before + 1  # the follow-up turn reads the cached features
    assert bot.stats.reused_tokens - reused_before > first_prompt  # the prefix through the tool step was kept


def test_two_sleeping_tools_run_in_parallel(bot):
    @tool(parse_docstring=True)
    def nap(seconds: float) -> str:
        """Sleep.

        Args:
            seconds: How long.
        """
        time.sleep(seconds)
        return "rested"

    started = time.perf_counter()
    results = _run_calls(nap, [ToolCall("nap", {"seconds": 0.8}), ToolCall("nap", {"seconds": 0.8})])
    elapsed = time.perf_counter() - started
    assert [r.ok for r in results] == [True, True]
    assert elapsed < 1.4, f"two 0.8 s tools took {elapsed:.2f} s: not parallel"
    serial = ToolRunner([tool_spec(nap)], MediaConfig(), ToolContext(), parallel=False)
    started = time.perf_counter()
    list(serial.run([ToolCall("nap", {"seconds": 0.3}), ToolCall("nap", {"seconds": 0.3})]))
    assert time.perf_counter() - started >= 0.6


def _run_calls(spec_tool, calls: list[ToolCall], **runner_options) -> list[ToolResult]:
    runner = ToolRunner([tool_spec(spec_tool)], MediaConfig(), ToolContext(), **runner_options)
    return [e for e in runner.run(calls) if isinstance(e, ToolResult)]


def _run_one(spec_tool, arguments, **runner_options) -> ToolResult:
    [result] = _run_calls(spec_tool, [ToolCall(tool_spec(spec_tool).name, arguments)], **runner_options)
    return result


def _text(result: ToolResult) -> str:
    return result.message["content"][0]["text"]


def test_a_hanging_tool_times_out_as_an_error():
    @tool(parse_docstring=True)
    def hang(seconds: float) -> str:
        """Hang.

        Args:
            seconds: How long.
        """
        time.sleep(seconds)
        return "late"

    ToolPolicy(timeout_s=0.3).attach(hang)
    started = time.perf_counter()
    result = _run_one(hang, {"seconds": 5})
    assert time.perf_counter() - started < 1.5
    assert not result.ok and _text(result).startswith("error:") and "0.3 s" in _text(result)


def test_raising_oversized_and_corrupt_media_tools_give_error_results():
    @tool(parse_docstring=True)
    def explode(reason: str) -> str:
        """Fail.

        Args:
            reason: Why.
        """
        raise RuntimeError(reason)

    @tool(parse_docstring=True)
    def flood(size: int) -> str:
        """Return a lot of text.

        Args:
            size: Characters.
        """
        return "x" * size

    @tool(parse_docstring=True, response_format="content_and_artifact")
    def broken_picture(name: str) -> tuple[str, list]:
        """Return a corrupt picture.

        Args:
            name: Anything.
        """
        return "here", [{"type": "image", "image": b"\x89PNG\r\n\x1a\nnot really"}]

    failed = _run_one(explode, {"reason": "disk on fire"})
    assert not failed.ok and "RuntimeError: disk on fire" in _text(failed)
    flooded = _run_one(flood, {"size": 10 * 1024 * 1024})
    assert not flooded.ok and "over its cap of 8000" in _text(flooded) and len(_text(flooded)) < 200
    corrupt = _run_one(broken_picture, {"name": "x"})
    assert not corrupt.ok and "media that cannot be used" in _text(corrupt) and len(corrupt.message["content"]) == 1


def test_unknown_tools_and_arguments_failing_the_schema_do_not_run():
    ran = []

    @tool(parse_docstring=True)
    def record(count: int) -> str:
        """Record.

        Args:
            count: How many.
        """
        ran.append(count)
        return "ok"

    results = _run_calls(record, [ToolCall("delete_everything", {}), ToolCall("record", {"count": "many"}), ToolCall("record", {})])
    assert "unknown tool 'delete_everything'" in _text(results[0])
    assert "at count" in _text(results[1]) and "'many' is not of type 'integer'" in _text(results[1])
    assert "'count' is a required property" in _text(results[2])
    assert ran == [] and not any(r.ok for r in results)


def test_confirmation_runs_approved_calls_only():
    ran = []

    @tool(parse_docstring=True)
    def launch(target: str) -> str:
        """Launch something with side effects.

        Args:
            target: What.
        """
        ran.append(target)
        return "launched"

    ToolPolicy(requires_confirmation=True).attach(launch)
    denied = ToolRunner([tool_spec(launch)], MediaConfig(), ToolContext(), confirm=lambda call: False)
    events = list(denied.run([ToolCall("launch", {"target": "a"})]))
    assert isinstance(events[0], ToolConfirmation) and "denied" in _text(events[1]) and ran == []
    unasked = _run_one(launch, {"target": "b"})
    assert "nobody was asked" in _text(unasked) and ran == []
    approved = _run_one(launch, {"target": "c"}, confirm=lambda call: call.arguments["target"] == "c")
    assert approved.ok and ran == ["c"]


def test_max_steps_exhausted_answers_calls_with_errors_then_ends_in_an_answer(bot):
    events = list(bot.run_stream(QUESTION, tools=[turn], tool_choice="required", followup_tool_choice="required",
                                 max_steps=1, max_new_tokens=200, temperature=1.0, seed=0, parallel_tool_calls=False))
    turns = [e for e in events if isinstance(e, AssistantTurn)]
    results = [e for e in events if isinstance(e, ToolResult)]
    assert len(turns) == 3 and turns[-1].message.get("tool_calls") is None
    assert results[0].ok and not results[1].ok and "max_steps=1" in _text(results[1])
    assert bot.chat(QUESTION, max_new_tokens=3) is not None  # the assistant serves the next request


class ScriptedAssistant:
    """Stands in for an assistant decoding without the grammar: each step makes the calls it is given."""

    def __init__(self, steps: list[list[ToolCall]]) -> None:
        self.steps = list(steps)
        self.config = type("Config", (), {"media": MediaConfig()})()
        self.choices: list = []

    def parse(self, messages, cut_audio=True):
        return []

    def stream_events(self, messages, tools, tool_choice, **options):
        self.choices.append(tool_choice)
        calls = self.steps.pop(0) if self.steps else []
        message = {"role": "assistant", "content": "" if calls else "done"}
        if calls:
            message["tool_calls"] = [call.to_openai() for call in calls]
        yield AssistantTurn(message, "tool_calls" if calls else "stop", calls=calls)


def recorder(name: str, ran: list) -> StructuredTool:
    """A tool called ``name`` that appends each ``word`` it gets to ``ran`` (prefixed by its name unless "record")."""
    def record(word: str) -> str:
        """Record a word.

        Args:
            word: The word.
        """
        ran.append(word if name == "record" else f"{name}:{word}")
        return "recorded"

    return StructuredTool.from_function(record, name=name, parse_docstring=True)


def test_calls_the_tool_choice_forbids_never_run_even_without_the_grammar():
    ran = []
    record, other = recorder("record", ran), recorder("other", ran)

    scripted = ScriptedAssistant([[ToolCall("record", {"word": "a"})]])
    results = [e for e in run_loop(scripted, QUESTION, [record], tool_choice="none") if isinstance(e, ToolResult)]
    assert ran == [] and not results[0].ok and "tool_choice='none'" in _text(results[0])

    scripted = ScriptedAssistant([[ToolCall("other", {"word": "b"}), ToolCall("record", {"word": "c"})]])
    results = [e for e in run_loop(scripted, QUESTION, [record, other], tool_choice="record") if isinstance(e, ToolResult)]
    assert ran == ["c"] and [r.ok for r in results] == [False, True] and "names 'record'" in _text(results[0])

    endless = ScriptedAssistant([[ToolCall("record", {"word": str(step)})] for step in range(10)])
    events = list(run_loop(endless, QUESTION, [record], tool_choice="auto", max_steps=2))
    assert ran == ["c", "0", "1"]  # two rounds ran; the third round's call and the final step's call are refused
    assert endless.choices == ["auto", "auto", "auto", "none"] and len(endless.steps) == 6  # and then it stops
    assert sum(isinstance(e, ToolResult) and not e.ok for e in events) == 2


@tool(parse_docstring=True, response_format="content_and_artifact")
def gallery(count: Literal[6]) -> tuple[str, list]:
    """Show several pictures.

    Args:
        count: How many.
    """
    return f"{count} pictures", [{"type": "image", "image": Image.new("RGB", (24, 24), (40 * i, 90, 200))} for i in range(count)]


def test_pictures_beyond_the_conversation_limit_are_left_out_and_the_exchange_goes_on(make_config, image_files):
    config = make_config()
    config.llm.max_context_tokens = 4096
    config.media.max_items_per_request = 4
    bot = Assistant.from_config(config)
    question = [{"role": "user", "content": [{"type": "image", "image": image_files[0]}, {"type": "text", "text": "Show more."}]}]
    new = bot.run(question, tools=[gallery], tool_choice="gallery", followup_tool_choice="none", max_new_tokens=200,
                  parallel_tool_calls=False)
    result = new[1]["content"]
    assert [part["type"] for part in result] == ["text", "image", "image", "image"]  # 1 in the question + 3 = the limit
    assert "3 more picture(s) not shown" in result[0]["text"]
    assert new[-1]["role"] == "assistant" and "tool_calls" not in new[-1]  # the answer step ran within the limit


def test_a_tool_sees_earlier_tool_results_and_its_progress_comes_out_of_the_loop():
    seen = []

    @tool(parse_docstring=True)
    def step(word: str, context: Annotated[ToolContext, InjectedToolArg] = None) -> str:
        """Do one step.

        Args:
            word: The word.
        """
        seen.append(list(context.tool_texts))
        context.report(1, 2, f"half of {word}")
        return f"did {word}"

    scripted = ScriptedAssistant([[ToolCall("step", {"word": "a"})], [ToolCall("step", {"word": "b"})]])
    events = list(run_loop(scripted, QUESTION, [step]))
    assert seen == [[], [("step", "did a")]]  # the second call sees the first one's result
    progress = [(event.call.arguments["word"], event.done, event.total, event.note) for event in events if isinstance(event, ToolProgress)]
    assert progress == [("a", 1, 2, "half of a"), ("b", 1, 2, "half of b")]
    assert [isinstance(event, ToolResult) for event in events].count(True) == 2


def test_direct_calls_run_in_place_of_the_first_step_and_the_model_answers_after():
    ran = []
    record, other = recorder("record", ran), recorder("other", ran)
    scripted = ScriptedAssistant([])  # every generated step answers "done"
    events = list(run_loop(scripted, QUESTION, [record], tool_choice="record", followup_tool_choice="none",
                           direct_calls=[ToolCall("record", {"word": "a large red star"})]))
    assert ran == ["a large red star"] and scripted.choices == ["none"]  # one generated step: the answer
    [first, *_] = [e for e in events if isinstance(e, AssistantTurn)]
    assert first.message["tool_calls"][0]["function"]["arguments"] == '{"word": "a large red star"}'
    assert [type(e).__name__ for e in events] == ["ToolCallEvent", "AssistantTurn", "ToolResult", "AssistantTurn"]

    # a direct call is checked like a generated one: a tool that is not offered, or one the choice forbids, never runs
    results = [e for e in run_loop(ScriptedAssistant([]), QUESTION, [record, other], tool_choice="record",
                                   direct_calls=[ToolCall("other", {"word": "b"}), ToolCall("gone", {})]) if isinstance(e, ToolResult)]
    assert ran == ["a large red star"] and not any(r.ok for r in results)
