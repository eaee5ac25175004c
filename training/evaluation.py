"""Evaluation during training: loss on validation rows, and a task metric on generated answers.

The answer metric asks the ``Assistant`` itself (the serving path, with its prompt builder and decode
engine) to answer each row's last user turn and scores the reply against the row's last assistant
turn, so the number is what a user of the trained adapter would see.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from assistant import Assistant
from assistant.processor import PromptBuilder
from training.data.examples import collate, encode_row
from training.data.rows import Row, message_text
from training.metrics import METRICS


def reference_answer(row: Row) -> tuple[list[dict[str, Any]], str]:
    """(prompt messages up to the last assistant turn, that turn's text)."""
    last = max(i for i, m in enumerate(row.messages) if m["role"] == "assistant")
    return row.messages[:last], message_text(row.messages[last]["content"])


@torch.no_grad()
def evaluate(
    assistant: Assistant,
    builder: PromptBuilder,
    rows: list[Row],
    settings: Any,
    loss_fn: Callable[[torch.nn.Module, dict[str, Any]], torch.Tensor],
    batch_size: int,
) -> dict[str, float]:
    """``{"eval_loss": ..., <metric>: ...}`` over ``rows`` (settings: an ``EvalConfig``)."""
    pad_id = assistant.tokenizer.pad_token_id if assistant.tokenizer.pad_token_id is not None else assistant.tokenizer.eos_token_id
    losses, weights = [], []
    for start in range(0, len(rows), batch_size):
        examples = [encode_row(assistant, builder, row) for row in rows[start : start + batch_size]]
        batch = collate(examples, pad_id)
        losses.append(float(loss_fn(assistant.model, batch)))
        weights.append(int((batch["labels"] != -100).sum()))
    results = {"eval_loss": sum(l * w for l, w in zip(losses, weights)) / max(sum(weights), 1)}
    if settings.metric != "none":
        assistant.reset_cache()  # the connector changed since the cached prefix was computed
        predictions, references = [], []
        for row in rows:
            prompt, reference = reference_answer(row)
            predictions.append(assistant.chat(prompt, max_new_tokens=settings.max_new_tokens))
            references.append(reference)
        assistant.reset_cache()
        results[settings.metric] = METRICS[settings.metric](predictions, references)
    return results
