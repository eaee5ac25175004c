"""Self-distilled text rows: training format, served-answer equality, batching, LoRA, bad prompts."""

from __future__ import annotations

import re

import pytest
import torch

from assistant import Assistant
from assistant.model import IGNORE_INDEX
from training.data import text_rows
from training.data.examples import check_row, encode_conversation, parse_messages
from training.data.rows import load_rows, message_text
from training.data.text_rows import (
    DistilledAnswer,
    answer_prompts,
    chat_prompt_ids,
    distill_text_rows,
    last_full_sentence,
    load_prompts,
    write_text_rows,
)
from training.text_regression import TEXT_PROMPTS

PROMPTS = [
    "What is the capital of Canada?",
    "Give me a synonym for happy.",
    "How many sides does a hexagon have?",
    "Write one sentence about autumn.",
    "Who invented the telephone?",
    "What is 7 times 8?",
    "Hi",
]
MAX_NEW_TOKENS = 12


def test_general_prompts_are_many_unique_and_disjoint_from_the_held_out_check():
    prompts = load_prompts()
    assert len(prompts) == 120
    assert len({p.lower() for p in prompts}) == len(prompts)
    held_out = {question.lower() for question, _ in TEXT_PROMPTS}
    assert not held_out & {p.lower() for p in prompts}
    held_out_capitals = re.compile(r"capital of (france|japan|italy|germany|spain|england|russia|china)", re.I)
    assert not [p for p in prompts if held_out_capitals.search(p) or "red planet" in p.lower()]


def test_rows_load_and_encode_as_training_rows(tiny_assistant, tmp_path):
    rows = distill_text_rows(tiny_assistant, PROMPTS, max_new_tokens=MAX_NEW_TOKENS)
    assert rows, "the tiny model answered nothing"
    path = tmp_path / "text_rows.jsonl"
    write_text_rows(path, rows)
    loaded, report = load_rows(path)
    assert report.bad_count == 0, report.to_dict()
    assert [row.id for row in loaded] == [row["id"] for row in rows]
    builder = tiny_assistant.prompt_builder
    for row, raw in zip(loaded, rows):
        assert re.fullmatch(r"text_\d{4}", row.id)
        prompt = PROMPTS[int(row.id.removeprefix("text_"))]
        assert message_text(row.messages[0]["content"]) == prompt
        answer = message_text(row.messages[1]["content"])
        assert answer == answer.strip() and answer
        assert check_row(tiny_assistant, builder, row, max_length=512) > 0
        # Training sees the prompt the distiller generated from, and learns exactly the answer.
        example = encode_conversation(builder, parse_messages(tiny_assistant, row.messages))
        served = chat_prompt_ids(tiny_assistant, prompt, MAX_NEW_TOKENS)
        assert example.input_ids[: len(served)] == served
        assert set(example.labels[: len(served)]) == {IGNORE_INDEX}
        learned = [token for token in example.labels if token != IGNORE_INDEX]
        assert tiny_assistant.tokenizer.decode(learned, skip_special_tokens=True).strip() == answer


def test_answers_equal_what_chat_serves(fresh_assistant):
    rows = distill_text_rows(fresh_assistant, PROMPTS, max_new_tokens=MAX_NEW_TOKENS, cut_to_sentence=False)
    by_id = {row["id"]: message_text(row["messages"][1]["content"]) for row in rows}
    served = {}
    for index, prompt in enumerate(PROMPTS):
        reply = fresh_assistant.chat([{"role": "user", "content": prompt}], max_new_tokens=MAX_NEW_TOKENS).strip()
        if reply:
            served[f"text_{index:04d}"] = reply
    assert len(served) >= 3, "too few non-empty replies for the comparison to mean anything"
    assert by_id == served


def test_batching_does_not_change_answers(tiny_assistant):
    one_by_one = answer_prompts(tiny_assistant, PROMPTS, max_new_tokens=MAX_NEW_TOKENS, batch_size=1)
    batched = answer_prompts(tiny_assistant, PROMPTS, max_new_tokens=MAX_NEW_TOKENS, batch_size=4)
    assert len({len(chat_prompt_ids(tiny_assistant, p, MAX_NEW_TOKENS)) for p in PROMPTS}) > 1  # padding happens
    assert batched == one_by_one
    assert len({answer.text for answer in batched}) > 1


def test_lora_is_disabled_while_distilling(make_config, tiny_assistant):
    tuned = Assistant.from_config(make_config(lora_r=4))
    with torch.no_grad():
        for name, parameter in tuned.model.llm.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(0))
    with_lora = [tuned.chat([{"role": "user", "content": p}], max_new_tokens=MAX_NEW_TOKENS) for p in PROMPTS]
    base = answer_prompts(tiny_assistant, PROMPTS, max_new_tokens=MAX_NEW_TOKENS)
    assert with_lora != [answer.text for answer in base], "the LoRA perturbation changed nothing; the test is void"
    assert answer_prompts(tuned, PROMPTS, max_new_tokens=MAX_NEW_TOKENS) == base


@pytest.mark.parametrize("prompts", [["Hi", ""], ["Hi", "   \n"], ["Hi", None]])
def test_empty_prompts_are_rejected(tiny_assistant, prompts):
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        distill_text_rows(tiny_assistant, prompts)


def test_last_full_sentence():
    assert last_full_sentence("Tokyo is big. It has many peo") == "Tokyo is big."
    assert last_full_sentence('He said "Yes!" and then we') == 'He said "Yes!"'
    assert last_full_sentence("Pi is 3.14 and so on") == "Pi is 3.14 and so on"  # no sentence end: kept whole
    assert last_full_sentence("Tips:\n1. Sleep well.\n2.") == "Tips:\n1. Sleep well."
    assert last_full_sentence("Is it? Yes") == "Is it?"


def test_only_answers_that_hit_the_limit_are_cut_and_empty_ones_dropped(tiny_assistant, monkeypatch):
    fixed = [
        DistilledAnswer(" One. Two three", hit_limit=True),
        DistilledAnswer("One. Two three", hit_limit=False),
        DistilledAnswer("  ", hit_limit=False),
        DistilledAnswer("no sentence end", hit_limit=True),
    ]
    monkeypatch.setattr(text_rows, "answer_prompts", lambda *args, **kwargs: fixed)
    rows = distill_text_rows(tiny_assistant, ["a", "b", "c", "d"])
    answers = {row["id"]: message_text(row["messages"][1]["content"]) for row in rows}
    assert answers == {"text_0000": "One.", "text_0001": "One. Two three", "text_0003": "no sentence end"}
