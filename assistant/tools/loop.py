"""The tool loop: generate -> run the calls -> append the results -> generate again, until an answer.

The first step uses the caller's ``tool_choice``; later steps use ``followup_tool_choice`` ("auto" by
default). ``direct_calls`` replace the first step: calls the user made themselves (a ``/generate_image a red
star`` command: the text is the argument, not something a small model should rewrite) run as if the model
had made them, and the model then answers with their results. After ``max_steps`` rounds of calls, calls
the model still makes are answered with an error result instead of running, and one last step with
``tool_choice="none"`` (its grammar cannot open a call) makes the model answer. Every step goes through
``Assistant.stream_events``, so each request reuses the previous one's KV prefix and cached media features:
a tool's picture is encoded once.
This module knows nothing about templates, grammars or how a tool runs.
"""

from __future__ import annotations

import threading
from typing import Any, Iterator

from assistant.errors import AssistantError
from assistant.messages import MEDIA_TYPES, attached_files, filter_user_text, tool_texts, user_texts
from assistant.tools.calls import ToolCall
from assistant.tools.context import ToolContext
from assistant.tools.events import AssistantTurn, Event, ToolCallEvent, ToolResult
from assistant.tools.runner import Confirm, ToolRunner, refused
from assistant.tools.spec import ToolChoice, parse_tool_choice, tool_specs


def run_loop(
    assistant: Any,
    messages: list[dict[str, Any]],
    tools: list[Any],
    tool_choice: Any = "auto",
    followup_tool_choice: Any = "auto",
    parallel_tool_calls: bool = True,
    max_steps: int = 4,
    confirm: Confirm | None = None,
    direct_calls: list[ToolCall] | None = None,
    **sampling: Any,
) -> Iterator[Event]:
    """Yield the events of a whole tool-using exchange (see ``Assistant.run_stream``)."""
    if not isinstance(max_steps, int) or max_steps < 0:
        raise AssistantError(f"max_steps must be a non-negative integer, got {max_steps!r}")
    specs = tool_specs(tools)
    parse_tool_choice(tool_choice, specs)  # bad choices fail before anything runs
    parse_tool_choice(followup_tool_choice, specs)
    conversation = filter_user_text(list(messages), [spec.policy.user_text_filter for spec in specs if spec.policy.user_text_filter])
    context = ToolContext(cancel=sampling.pop("cancel", None) or threading.Event(), assistant=assistant)
    runner = ToolRunner(specs, assistant.config.media, context, confirm, parallel_tool_calls)
    rounds = 0
    choice = tool_choice
    direct = list(direct_calls or [])
    while True:
        turn = None
        if context.cancel.is_set():
            return
        if direct:
            turn = AssistantTurn({"role": "assistant", "content": "", "tool_calls": [call.to_openai() for call in direct]},
                                 "tool_calls", calls=direct)
            for call in direct:
                yield ToolCallEvent(call)
            yield turn
            direct = []
        else:
            for event in assistant.stream_events(conversation, tools=specs, tool_choice=choice,
                                                 parallel_tool_calls=parallel_tool_calls, cancel=context.cancel, **sampling):
                if isinstance(event, AssistantTurn):
                    turn = event
                yield event
        conversation.append(turn.message)
        calls = turn.calls
        if not calls or turn.finish_reason == "cancelled":
            return
        if rounds >= max_steps:
            for call in calls:
                result = refused(call, f"not run: this exchange reached max_steps={max_steps} rounds of tool calls")
                conversation.append(result.message)
                yield result
            if rounds > max_steps:  # even the last step called (possible only without the grammar): stop here
                return
            rounds, choice = rounds + 1, "none"
            continue
        _refuse_calls_the_choice_forbids(calls, parse_tool_choice(choice, specs))
        context.images, context.audio = _media(assistant, conversation[:-1])  # what the model saw when it made the calls
        context.user_texts = user_texts(conversation)
        context.files = attached_files(conversation)
        context.tool_texts = tool_texts(conversation[:-1])
        runner.media_budget = assistant.config.media.max_items_per_request - _media_items(conversation)
        for event in runner.run(calls):
            if isinstance(event, ToolResult):
                conversation.append(event.message)
            yield event
        rounds += 1
        choice = followup_tool_choice


def _refuse_calls_the_choice_forbids(calls: list[ToolCall], choice: ToolChoice) -> None:
    """Mark calls the step's ``tool_choice`` does not allow, so they get an error result instead of running.

    Under the grammar a model cannot make them; without it (``tools.constrained=False``) it can.
    """
    for call in calls:
        if call.error:
            continue
        if choice.mode == "none":
            call.error = f"tool_choice='none' allows no tool calls; {call.name!r} did not run"
        elif choice.mode == "forced" and call.name != choice.name:
            call.error = f"tool_choice names {choice.name!r}; {call.name!r} did not run"


def _media_items(conversation: list[dict[str, Any]]) -> int:
    """Media parts in the conversation, as ``validate_messages`` counts them against its limit."""
    return sum(1 for message in conversation if isinstance(message.get("content"), list)
               for part in message["content"] if isinstance(part, dict) and part.get("type") in MEDIA_TYPES)


def _media(assistant: Any, conversation: list[dict[str, Any]]) -> tuple[list[Any], list[Any]]:
    """The conversation's pictures and audio clips (whole), oldest first, decoded as the assistant decodes them."""
    parsed = assistant.parse(conversation, cut_audio=False)
    items = [item for message in parsed for item in message.media]
    pictures = [frame.image for item in items if item.modality == "image" for frame in item.frames]
    return pictures, [item.frames[0] for item in items if item.modality == "audio"]

