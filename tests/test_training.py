"""Training on tiny random models and a tiny generated scene dataset."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from assistant import Assistant
from assistant.processor import PromptBuilder
from training.config import load_train_config
from training.contract import TemplateContractError, check_template_contract
from training.data.examples import IGNORE_INDEX, encode_conversation, parse_messages
from training.data.rows import load_rows
from training.export import merge_lora
from training.trainer import Trainer, TrainingError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scene_data(tmp_path_factory) -> Path:
    from training.data.scenes import main as scenes_main

    out = tmp_path_factory.mktemp("scenes")
    scenes_main(["--out", str(out), "--train", "6", "--val", "2", "--test", "1", "--seed", "5"])
    return out


def write_config(folder: Path, tiny_paths, scene_data: Path, **sections) -> Path:
    config = {
        "output_dir": str(folder / "run"),
        "stage": "instruct",
        "model": {
            "llm": {"model": tiny_paths["llm"], "lora": {"r": 4, "dropout": 0.1}},
            "modalities": {"image": {"encoder": {"kind": "hf_vision", "model": tiny_paths["clip"]}, "connector": {"kind": "mlp"}}},
        },
        "data": {"train_file": str(scene_data / "train.jsonl"), "max_length": 400},
        "optim": {"max_steps": 8, "batch_size": 4, "warmup_steps": 1, "learning_rate": 3e-3, "seed": 7},
        "checkpoint": {"save_every": 0, "keep_last": 2},
        "eval": {"eval_every": 0, "metric": "none"},
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            config.setdefault(section, {}).update(values)
        else:
            config[section] = values
    path = folder / "run.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


def train(path: Path, *overrides: str) -> Trainer:
    trainer = Trainer(load_train_config(["--config", str(path), *overrides]))
    trainer.summary = trainer.train()
    return trainer


def test_loss_decreases_and_only_adapters_change(tmp_path, tiny_paths, scene_data):
    config = write_config(tmp_path, tiny_paths, scene_data, optim={"max_steps": 30})
    trainer = Trainer(load_train_config(["--config", str(config)]))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    summary = trainer.train()
    losses = trainer.loss_history
    assert len(losses) == 30 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed and all(n.startswith("connectors.") or "lora_" in n for n in changed)
    assert any("lora_" in n for n in changed) and any(n.startswith("connectors.") for n in changed)
    assert summary["samples_per_s"] > 0 and summary["peak_memory_mb"] > 0
    assert (tmp_path / "run" / "tensorboard").is_dir() and (tmp_path / "run" / "summary.json").is_file()
    restored = Assistant.from_pretrained(tmp_path / "run" / "adapter")  # the core's one artifact
    row = load_rows(scene_data / "val.jsonl")[0][0]
    assert restored.chat(row.messages[:1], max_new_tokens=3) is not None


def test_gradient_accumulation_matches_a_larger_batch(tmp_path, tiny_paths, scene_data):
    """Accumulating two micro-batches of 2 (no crash, both count) reaches the weights of one batch of 4."""
    common = dict(model={"llm": {"model": tiny_paths["llm"], "lora": {"r": 4, "dropout": 0.0}},
                         "modalities": {"image": {"encoder": {"kind": "hf_vision", "model": tiny_paths["clip"]}, "connector": {"kind": "mlp"}}}},
                  data={"group_by_length": False})
    one = train(write_config(tmp_path / "one", tiny_paths, scene_data, optim={"max_steps": 1, "batch_size": 4}, **common))
    two = train(write_config(tmp_path / "two", tiny_paths, scene_data, optim={"max_steps": 1, "batch_size": 2, "grad_accum": 2}, **common))
    assert two.summary["samples"] == one.summary["samples"] == 4
    for (name, a), (_, b) in zip(one.model.named_parameters(), two.model.named_parameters()):
        if a.requires_grad:
            assert torch.allclose(a, b, atol=1e-5), name


def test_align_stage_trains_the_connector_only(tmp_path, tiny_paths, scene_data):
    trainer = train(write_config(tmp_path, tiny_paths, scene_data, stage="align", optim={"max_steps": 2}))
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("connectors.") for n in trainable)


def test_resume_after_interruption_reproduces_the_uninterrupted_run(tmp_path, tiny_paths, scene_data, monkeypatch):
    sections = dict(checkpoint={"save_every": 3}, data={"modality_dropout": 0.3})
    full = train(write_config(tmp_path / "a", tiny_paths, scene_data, **sections))
    expected = load_file(str(tmp_path / "a" / "run" / "adapter" / "connectors.safetensors"))
    expected_lora = load_file(str(tmp_path / "a" / "run" / "adapter" / "lora" / "adapter_model.safetensors"))

    config = write_config(tmp_path / "b", tiny_paths, scene_data, **sections)
    import training.trainer as trainer_module

    real_collate, calls = trainer_module.collate, []

    def crashing_collate(batch, pad_id):
        calls.append(1)
        if len(calls) == 5:  # the 5th micro-batch: after the step-3 checkpoint, before step 6
            raise KeyboardInterrupt("simulated crash")
        return real_collate(batch, pad_id)

    monkeypatch.setattr(trainer_module, "collate", crashing_collate)
    with pytest.raises(KeyboardInterrupt):
        train(config)
    monkeypatch.setattr(trainer_module, "collate", real_collate)
    assert [p.name for p in (tmp_path / "b" / "run" / "checkpoints").iterdir() if not p.name.startswith(".")] == ["checkpoint-0000003"]

    resumed = train(config, "--resume")
    assert resumed.loss_history == full.loss_history[3:]
    got = load_file(str(tmp_path / "b" / "run" / "adapter" / "connectors.safetensors"))
    got_lora = load_file(str(tmp_path / "b" / "run" / "adapter" / "lora" / "adapter_model.safetensors"))
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    assert all(torch.equal(got_lora[k], expected_lora[k]) for k in expected_lora)


def _bad_rows(root: Path) -> Path:
    from PIL import Image

    (root / "images").mkdir(parents=True)
    Image.new("RGB", (32, 32), "red").save(root / "images" / "ok.png")
    (root / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    (root.parent / "outside.png").write_bytes((root / "images" / "ok.png").read_bytes())
    answer = [{"from": "human", "value": "<image>\nWhat color?"}, {"from": "gpt", "value": "red"}]
    rows = [
        {"id": "good-1", "image": "images/ok.png", "conversations": answer},
        {"id": "good-2", "conversations": [{"from": "human", "value": "Say hi"}, {"from": "gpt", "value": "hi"}]},
        {"id": "missing", "image": "images/nope.png", "conversations": answer},
        {"id": "unreadable", "image": "images/broken.png", "conversations": answer},
        {"id": "mismatch", "image": ["images/ok.png", "images/ok.png"], "conversations": answer},
        {"id": "escape", "image": "../outside.png", "conversations": answer},
        {"id": "empty-answer", "image": "images/ok.png", "conversations": [answer[0], {"from": "gpt", "value": "  "}]},
        {"id": "no-answer", "conversations": [{"from": "human", "value": "hello"}]},
        {"id": "too-long", "conversations": [{"from": "human", "value": "word " * 600}, {"from": "gpt", "value": "ok"}]},
    ]
    lines = [json.dumps(r) for r in rows] + ["{not json"]
    path = root / "rows.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_every_bad_row_kind_is_reported_with_its_id(tmp_path, tiny_paths, scene_data):
    rows_file = _bad_rows(tmp_path / "data")
    config = write_config(tmp_path, tiny_paths, scene_data, data={"train_file": str(rows_file), "max_bad_fraction": 0.5})
    with pytest.raises(TrainingError, match="8 of 10 rows are bad"):
        train(config)
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())["train"]["bad_by_reason"]
    assert {reason: entry["row_ids"] for reason, entry in report.items()} == {
        "missing_file": ["missing"],
        "unreadable_media": ["unreadable"],
        "placeholder_mismatch": ["mismatch"],
        "path_escape": ["escape"],
        "empty_assistant_turn": ["empty-answer"],
        "no_assistant_turn": ["no-answer"],
        "too_long": ["too-long"],
        "malformed_row": ["rows.jsonl:10"],
    }
    assert not (tmp_path / "run" / "checkpoints").exists()  # stopped before spending compute


def test_bad_rows_under_the_limit_are_skipped(tmp_path, tiny_paths, scene_data):
    rows_file = _bad_rows(tmp_path / "data")
    config = write_config(tmp_path, tiny_paths, scene_data, data={"train_file": str(rows_file), "max_bad_fraction": 0.9}, optim={"max_steps": 1, "batch_size": 2})
    assert train(config).summary["steps"] == 1


def test_labels_cover_exactly_the_assistant_turns(tiny_assistant, scene_data):
    rows, _ = load_rows(scene_data / "train.jsonl")
    row = next(r for r in rows if r.question_type == "multi_turn")
    parsed = parse_messages(tiny_assistant, row.messages)
    example = encode_conversation(tiny_assistant.prompt_builder, parsed)
    labelled = [t for t in example.labels if t != IGNORE_INDEX]
    answers = [m["content"][0]["text"] for m in row.messages if m["role"] == "assistant"]
    expected = "".join(f"{a}<|im_end|>\n" for a in answers)
    assert tiny_assistant.tokenizer.decode(labelled) == expected
    assert len(example.frames) == 1 and example.input_ids.count(-200) == tiny_assistant.model.tokens_per_frame()["image"]


def test_template_contract_catches_a_mismatched_template(tiny_assistant, scene_data):
    rows, _ = load_rows(scene_data / "train.jsonl")
    sample = [r for r in rows if r.question_type in ("multi_turn", "comparison")][:3]
    matching = PromptBuilder(tiny_assistant.tokenizer, tiny_assistant.model.tokens_per_frame(), tiny_assistant.config.system_prompt)
    assert check_template_contract(tiny_assistant, matching, sample) >= 3
    other = type(tiny_assistant.tokenizer).from_pretrained(tiny_assistant.tokenizer.name_or_path)
    other.chat_template = tiny_assistant.tokenizer.chat_template.replace("+ '<|im_end|>", "+ '.<|im_end|>")
    assert other.chat_template != tiny_assistant.tokenizer.chat_template
    mismatched = PromptBuilder(other, tiny_assistant.model.tokens_per_frame(), None)
    with pytest.raises(TemplateContractError, match="differ from inference ids at position"):
        check_template_contract(tiny_assistant, mismatched, sample)
    with pytest.raises(TemplateContractError):
        check_template_contract(tiny_assistant, PromptBuilder(tiny_assistant.tokenizer, tiny_assistant.model.tokens_per_frame(), "Another system prompt."), sample)


def test_full_modality_dropout_trains_on_text_alone(tmp_path, tiny_paths, scene_data):
    trainer = train(write_config(tmp_path, tiny_paths, scene_data, data={"modality_dropout": 1.0}, optim={"max_steps": 2}))
    assert len(trainer.features) == 0  # no image was ever encoded
    assert all(math.isfinite(x) for x in trainer.loss_history)


def test_qlora_four_bit_step_on_cpu(tmp_path, tiny_paths, scene_data):
    pytest.importorskip("bitsandbytes")
    config = write_config(tmp_path, tiny_paths, scene_data, optim={"max_steps": 2})
    trainer = train(config, "--model.llm.quantize", "4bit")
    assert any(type(m).__name__ == "Linear4bit" for m in trainer.model.llm.modules())
    assert all(math.isfinite(x) for x in trainer.loss_history)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, tiny_paths, scene_data, monkeypatch):
    config = write_config(tmp_path, tiny_paths, scene_data, checkpoint={"save_every": 2})
    real_loss, calls = Trainer._loss, []

    def exploding(self, model, batch):
        calls.append(1)
        loss = real_loss(self, model, batch)
        return loss * float("nan") if len(calls) == 5 else loss

    monkeypatch.setattr(Trainer, "_loss", exploding)
    with pytest.raises(TrainingError, match="non-finite loss at step 5; last good checkpoint: .*checkpoint-0000004"):
        train(config)
    state = json.loads((tmp_path / "run" / "checkpoints" / "checkpoint-0000004" / "trainer_state.json").read_text())
    assert state["step"] == 4 and math.isfinite(state["last_loss"])


def test_export_merges_lora_into_plain_weights(tmp_path, tiny_paths, scene_data):
    train(write_config(tmp_path, tiny_paths, scene_data, optim={"max_steps": 3}))
    adapter = tmp_path / "run" / "adapter"
    merged = merge_lora(adapter, tmp_path / "merged")
    with_lora, plain = Assistant.from_pretrained(adapter), Assistant.from_pretrained(merged)
    assert not hasattr(plain.model.llm, "peft_config") and not (merged / "lora").exists()
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.allclose(with_lora.model(ids).logits, plain.model(ids).logits, atol=1e-4)


def test_two_process_ddp_on_cpu_keeps_ranks_identical(tmp_path, tiny_paths, scene_data):
    config = write_config(tmp_path, tiny_paths, scene_data, optim={"max_steps": 3, "batch_size": 2})
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
               "-m", "training.finetune", "--config", str(config)]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 3
    first, second = summary["rank_weight_checksums"]
    assert first == second


def test_connector_learning_rate_is_its_own_parameter_group(tmp_path, tiny_paths, scene_data):
    config = write_config(tmp_path, tiny_paths, scene_data, optim={"learning_rate": 1e-4, "connector_learning_rate": 2e-3})
    trainer = Trainer(load_train_config(["--config", str(config)]))
    connector, lora = trainer.parameter_groups()
    assert connector["lr"] == 2e-3 and lora["lr"] == 1e-4
    assert {id(p) for p in connector["params"]} == {id(p) for p in trainer.model.connectors.parameters()}
    assert lora["params"] and all(p.requires_grad for p in lora["params"])
    with pytest.raises(Exception, match="connector_learning_rate"):
        load_train_config(["--config", str(config), "--optim.connector-learning-rate", "0"])


def test_training_features_are_the_float32_features_served(tmp_path, tiny_paths, scene_data):
    """Under bf16 autocast the frozen encoder still runs in float32, as at inference."""
    from training.data.examples import encode_conversation, parse_messages
    from training.data.rows import load_rows

    config = write_config(tmp_path, tiny_paths, scene_data, optim={"mixed_precision": "bf16"})
    trainer = Trainer(load_train_config(["--config", str(config)]))
    rows, _ = load_rows(scene_data / "train.jsonl", None)
    frames = encode_conversation(trainer.builder, parse_messages(trainer.assistant, rows[0].messages)).frames
    with trainer.accelerator.autocast():
        trained = trainer._encoder_features({"frames": frames})["image"]
    served = trainer.model.encoders["image"].encode([frame.image for frame in frames])
    assert trained.dtype == torch.float32
    torch.testing.assert_close(trained, served, rtol=0, atol=0)
