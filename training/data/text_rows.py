"""Text-only training rows whose answers come from the base LLM itself (self-distillation).

Mixed into a LoRA fine-tune on a visual domain, these rows teach the adapter to leave plain-text
behaviour alone: their targets are what the untuned LLM already says. Each prompt goes through the
given ``Assistant``'s own ``prepare`` (validation, system prompt, chat template), and answers are
decoded greedily with every LoRA adapter disabled and with the assistant's stop tokens, so a row
reproduces what the base model says when served with the same config (use the training config's
``system_prompt``). Generation is batched with left padding through ``transformers``' ``generate``.
An answer that hit the token limit is cut back to its last full sentence when it has one; empty
answers are dropped. This module knows nothing about training loops or the scenes domain.

    python -m training.data.text_rows --out data/text_rows.jsonl [--max-new-tokens 64] [--limit 40]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm import tqdm

from assistant import Assistant, AssistantConfig
from assistant.cli_args import add_dataclass_arguments, dataclass_kwargs

logger = logging.getLogger(__name__)

GENERAL_PROMPTS = Path(__file__).with_name("general_prompts.txt")
# A sentence ends with . ! or ? (then optional closing quotes/brackets) before whitespace or the end.
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s|$)")
_LIST_MARKER = re.compile(r"(?:^|\n)\s*\d+[.)]$")  # "2." opening a numbered item is no sentence end


@dataclass
class DistilledAnswer:
    """One greedy answer: its text (as ``Assistant.chat`` returns it) and whether it hit the limit."""

    text: str
    hit_limit: bool


def load_prompts(path: str | Path = GENERAL_PROMPTS) -> list[str]:
    """Prompts from a text file, one a line; blank lines are skipped."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip()]


def last_full_sentence(text: str) -> str:
    """``text`` up to the end of its last complete sentence, or ``text`` itself when it has none."""
    for match in reversed(list(_SENTENCE_END.finditer(text))):
        kept = text[: match.end()]
        if not _LIST_MARKER.search(kept):
            return kept
    return text


def chat_prompt_ids(assistant: Assistant, prompt: str, max_new_tokens: int) -> list[int]:
    """Token ids of a one-turn text conversation, built exactly as ``Assistant.chat`` builds them."""
    built = assistant.prepare([_user_message(prompt)], max_new_tokens)
    if built.spans:
        raise ValueError(f"prompt {prompt!r:.60} unexpectedly holds media")
    return built.input_ids


def answer_prompts(
    assistant: Assistant, prompts: Sequence[str], max_new_tokens: int = 64, batch_size: int = 16
) -> list[DistilledAnswer]:
    """Greedy answers of the assistant's LLM, with any LoRA disabled, in the order of ``prompts``.

    Raises:
        ValueError: For an empty prompt (naming its index) or a non-positive size.
    """
    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError(f"max_new_tokens and batch_size must be positive, got {max_new_tokens} and {batch_size}")
    for index, prompt in enumerate(prompts):
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"prompt {index} is empty ({prompt!r}); every prompt needs text to answer")
    prompt_ids = [chat_prompt_ids(assistant, prompt, max_new_tokens) for prompt in prompts]
    # Similar lengths share a batch (less padding); answers go back to their prompt's place.
    order = sorted(range(len(prompts)), key=lambda index: len(prompt_ids[index]))
    answers: list[DistilledAnswer | None] = [None] * len(prompts)
    llm = assistant.model.llm
    stop_ids = sorted(assistant._stop_ids)  # the engine's own stop set: serving and distilling end alike
    pad_id = assistant.tokenizer.pad_token_id if assistant.tokenizer.pad_token_id is not None else stop_ids[0]
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    without_lora = llm.disable_adapter() if hasattr(llm, "disable_adapter") else contextlib.nullcontext()
    with without_lora, torch.inference_mode():
        for batch in tqdm(batches, desc="distilling text answers", unit="batch"):
            generated = _generate(llm, [prompt_ids[index] for index in batch], pad_id, stop_ids, max_new_tokens)
            for index, ids in zip(batch, generated):
                answers[index] = _decode(assistant, ids, set(stop_ids))
    return [answer for answer in answers if answer is not None]


def distill_text_rows(
    assistant: Assistant,
    prompts: Sequence[str],
    max_new_tokens: int = 64,
    batch_size: int = 16,
    cut_to_sentence: bool = True,
) -> list[dict[str, Any]]:
    """Messages-format rows ``text_0000``, ... answering ``prompts`` with the base LLM.

    Args:
        assistant: Supplies the LLM, tokenizer, chat template and system prompt; LoRA is disabled.
        prompts: User prompts, one per row.
        max_new_tokens: Upper bound on each answer's tokens.
        batch_size: Prompts generated together (left-padded).
        cut_to_sentence: Cut an answer that hit ``max_new_tokens`` back to its last full sentence.

    Returns:
        One row per non-empty answer; a row's id numbers its prompt, so dropped answers leave gaps.

    Raises:
        ValueError: For an empty prompt.
    """
    started = time.perf_counter()
    answers = answer_prompts(assistant, prompts, max_new_tokens, batch_size)
    rows, cut, dropped = [], 0, 0
    for index, (prompt, answer) in enumerate(zip(prompts, answers)):
        text = answer.text.strip()
        if answer.hit_limit and cut_to_sentence:
            shorter = last_full_sentence(text).strip()
            cut += shorter != text
            text = shorter
        if not text:
            dropped += 1
            continue
        rows.append({
            "id": f"text_{index:04d}",
            "messages": [
                _user_message(prompt),
                {"role": "assistant", "content": [{"type": "text", "text": text}]},
            ],
        })
    logger.info(
        "distilled %d text rows from %d prompts in %.1f s (%d hit the %d-token limit, %d cut to a sentence, %d empty dropped)",
        len(rows), len(prompts), time.perf_counter() - started, sum(a.hit_limit for a in answers), max_new_tokens, cut, dropped,
    )
    return rows


def write_text_rows(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Write rows as JSONL (one row a line, UTF-8)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as file:
        for row in rows:
            file.write(json.dumps(row, ensure_ascii=False) + "\n")


def _user_message(prompt: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "text", "text": prompt}]}


def _generate(llm: Any, prompt_ids: list[list[int]], pad_id: int, stop_ids: list[int], max_new_tokens: int) -> list[list[int]]:
    """Greedy continuations of left-padded prompts (each without the padding or the prompt)."""
    from transformers import GenerationConfig

    width = max(len(ids) for ids in prompt_ids)
    input_ids = torch.full((len(prompt_ids), width), pad_id, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros((len(prompt_ids), width), dtype=torch.long)  # (B, T)
    for row, ids in enumerate(prompt_ids):
        input_ids[row, width - len(ids) :] = torch.tensor(ids)
        attention_mask[row, width - len(ids) :] = 1
    # Set explicitly, so a checkpoint's generation_config (penalties, sampling) cannot change the argmax.
    settings = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, repetition_penalty=1.0,
        eos_token_id=stop_ids, pad_token_id=pad_id,
    )
    device = llm.get_input_embeddings().weight.device
    output = llm.generate(
        input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), generation_config=settings
    )  # (B, T + new)
    return output[:, width:].tolist()


def _decode(assistant: Assistant, ids: list[int], stop_ids: set[int]) -> DistilledAnswer:
    """Text up to the first stop token, decoded as ``Assistant.stream`` decodes it."""
    end = next((position for position, token in enumerate(ids) if token in stop_ids), None)
    kept = ids if end is None else ids[:end]
    text = assistant.tokenizer.decode(kept, skip_special_tokens=True).rstrip("\ufffd")
    return DistilledAnswer(text, hit_limit=end is None)


@dataclass
class TextRowsConfig:
    """What to distil and where; the command line is built from these fields."""

    out: str = field(default="", metadata={"help": "output JSONL file (required)"})
    prompts: str = field(default=str(GENERAL_PROMPTS), metadata={"help": "prompt file, one prompt a line"})
    max_new_tokens: int = field(default=64, metadata={"help": "upper bound on each answer's tokens"})
    batch_size: int = field(default=16, metadata={"help": "prompts generated together"})
    limit: int | None = field(default=None, metadata={"help": "use only the first N prompts"})
    system_prompt: str | None = field(
        default=None, metadata={"help": "the training config's system prompt (rows must match what is served)"}
    )

    def __post_init__(self) -> None:
        if not self.out:
            raise ValueError("--out is required")
        if self.max_new_tokens < 1 or self.batch_size < 1 or (self.limit is not None and self.limit < 1):
            raise ValueError("--max-new-tokens, --batch-size and --limit must be positive")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: answer the prompt file with the untrained default assistant and write JSONL rows."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m training.data.text_rows", description=__doc__.split("\n\n")[0])
    add_dataclass_arguments(parser, TextRowsConfig)
    args = parser.parse_args(argv)
    try:
        config = TextRowsConfig(**dataclass_kwargs(args, TextRowsConfig))
    except ValueError as error:
        parser.error(str(error))
    prompts = load_prompts(config.prompts)[: config.limit]
    # The base: default LLM without LoRA; connectors are untrained but text-only prompts never use them.
    assistant = Assistant.from_config(AssistantConfig(system_prompt=config.system_prompt))
    rows = distill_text_rows(assistant, prompts, config.max_new_tokens, config.batch_size)
    write_text_rows(config.out, rows)
    logger.info("wrote %d rows to %s", len(rows), config.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
