"""The template contract: what is trained is what is served.

For sample rows, the ids the trainer builds for each assistant turn's prompt must equal the ids the
``Assistant`` builds at inference for the same conversation prefix, tools on offer, earlier tool calls
and tool results included. A mismatch (another chat template,
a different system prompt, different tokenization) stops training before any compute is spent.
"""

from __future__ import annotations

from assistant import Assistant
from assistant.processor import PromptBuilder
from assistant.tools.spec import tool_specs
from training.data.examples import parse_messages
from training.data.rows import Row


class TemplateContractError(RuntimeError):
    """Training and inference would tokenize the same conversation differently."""


def check_template_contract(assistant: Assistant, training_builder: PromptBuilder, rows: list[Row]) -> int:
    """Compare training and inference prompt ids turn by turn; returns the number of prompts checked."""
    checked = 0
    for row in rows:
        parsed = parse_messages(assistant, row.messages)
        for index, message in enumerate(parsed):
            if message.role != "assistant":
                continue
            trained = training_builder.build(parsed[:index], add_generation_prompt=True, tools=tool_specs(row.tools)).input_ids
            served = assistant.prepare(row.messages[:index], max_new_tokens=1, tools=row.tools).input_ids
            if trained != served:
                at = next((i for i, (a, b) in enumerate(zip(trained, served)) if a != b), min(len(trained), len(served)))
                decode = assistant.tokenizer.decode
                raise TemplateContractError(
                    f"row {row.id}, turn {index}: training ids differ from inference ids at position {at} "
                    f"(training: {decode([i for i in trained[at:at + 12] if i >= 0])!r}, "
                    f"inference: {decode([i for i in served[at:at + 12] if i >= 0])!r})"
                )
            checked += 1
    return checked
