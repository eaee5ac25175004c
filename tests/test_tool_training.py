"""Training rows that teach tool use: tools on offer, assistant tool calls, tool turns with pictures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from PIL import Image

from assistant.model import IGNORE_INDEX
from training.contract import check_template_contract
from training.data.examples import check_row, encode_conversation, parse_messages
from training.data.rows import BadRow, load_rows, parse_row

PAINT = {"type": "function", "function": {"name": "paint", "description": "Paint a picture.",
                                          "parameters": {"type": "object", "properties": {"colour": {"type": "string"}}, "required": ["colour"]}}}
CALL = {"id": "c1", "type": "function", "function": {"name": "paint", "arguments": '{"colour": "red"}'}}


def _row(**changes) -> dict:
    row = {
        "id": "t1",
        "tools": [PAINT],
        "messages": [
            {"role": "user", "content": "Paint me something red."},
            {"role": "assistant", "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "c1", "name": "paint",
             "content": [{"type": "text", "text": "painted red"}, {"type": "image", "image": "red.png"}]},
            {"role": "assistant", "content": "Here is a red picture."},
        ],
    }
    row.update(changes)
    return row


@pytest.fixture(scope="module")
def bot(make_config):
    from assistant import Assistant

    config = make_config()
    config.llm.max_context_tokens = 4096  # the tiny tokenizer spends many tokens on the tools block
    return Assistant.from_config(config)


@pytest.fixture
def tool_data(tmp_path) -> Path:
    Image.new("RGB", (32, 32), "red").save(tmp_path / "red.png")
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(_row(id=f"t{i}")) for i in range(4)) + "\n")
    return tmp_path


def test_labels_cover_the_tool_call_and_the_answer_and_the_tool_picture_is_a_media_span(tiny_assistant, tool_data):
    [row, *_], report = load_rows(tool_data / "train.jsonl")
    assert report.bad_count == 0 and row.tools == [PAINT]
    example = encode_conversation(tiny_assistant.prompt_builder, parse_messages(tiny_assistant, row.messages), row.tools)
    labelled = tiny_assistant.tokenizer.decode([t for t in example.labels if t != IGNORE_INDEX])
    assert labelled == ('<tool_call>\n{"name": "paint", "arguments": {"colour": "red"}}\n</tool_call><|im_end|>\n'
                        "Here is a red picture.<|im_end|>\n")
    assert len(example.frames) == 1 and example.input_ids.count(-200) == tiny_assistant.model.tokens_per_frame()["image"]
    prompt = tiny_assistant.tokenizer.decode([i for i in example.input_ids if i >= 0])
    assert "<tools>" in prompt and "<tool_response>\npainted red" in prompt


def test_template_contract_covers_tool_turns(bot, tool_data):
    rows, _ = load_rows(tool_data / "train.jsonl")
    # one prompt before the call and one that ends with the tool's result, per row
    assert check_template_contract(bot, bot.prompt_builder, rows[:2]) == 4


def test_bad_tool_rows_are_reported(tiny_assistant, tool_data):
    with pytest.raises(BadRow, match="'tools' must be a list"):
        parse_row(_row(tools={"paint": PAINT}), "x", tool_data)
    with pytest.raises(BadRow, match="valid function name"):
        parse_row(_row(tools=[{"type": "function", "function": {"name": "bad name", "parameters": {"type": "object"}}}]), "x", tool_data)
    broken = _row()
    broken["messages"][1] = {"role": "assistant", "tool_calls": [{**CALL, "function": {"name": "paint", "arguments": "{oops"}}]}
    with pytest.raises(BadRow, match="not valid JSON") as error:
        check_row(tiny_assistant, tiny_assistant.prompt_builder, parse_row(broken, "x", tool_data), 4000)
    assert error.value.reason == "malformed_row"
    empty = _row()
    empty["messages"][1] = {"role": "assistant", "content": ""}
    with pytest.raises(BadRow) as error:
        parse_row(empty, "x", tool_data)
    assert error.value.reason == "empty_assistant_turn"


def test_a_short_run_trains_on_tool_rows(tmp_path, tiny_paths, tool_data):
    from test_training import train, write_config

    config = write_config(
        tmp_path, tiny_paths, tool_data,
        model={"llm": {"model": tiny_paths["llm"], "lora": {"r": 4}, "max_context_tokens": 4096},
               "modalities": {"image": {"encoder": {"kind": "hf_vision", "model": tiny_paths["clip"]}, "connector": {"kind": "mlp"}}}},
        data={"train_file": str(tool_data / "train.jsonl"), "max_length": 4000},
        optim={"max_steps": 2, "batch_size": 2},
    )
    trainer = train(config)
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())
    assert trainer.summary["steps"] == 2 and report["train"]["bad_rows"] == 0 and report["train"]["total_rows"] == 4
    assert math.isfinite(trainer.summary["final_train_loss"])
