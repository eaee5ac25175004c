"""The default recipe's data plumbing (the training itself is covered by tests/test_training.py)."""

import json

from training.data.rows import load_rows
from training.recipes.build_default import instruct_rows


def test_instruct_rows_mix_every_scene_row_with_repeated_text_rows(tmp_path):
    scene = {"id": "s0", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "red"}]}
    text = {"id": "text_0000", "messages": [{"role": "user", "content": "Name a fruit."}, {"role": "assistant", "content": "Apple."}]}
    (tmp_path / "train.jsonl").write_text(json.dumps(scene) + "\n")
    (tmp_path / "text_rows.jsonl").write_text(json.dumps(text) + "\n")  # present: no LLM is loaded to distil
    mixed = instruct_rows(tmp_path, text_repeats=3)
    rows, report = load_rows(mixed)
    assert [row.id for row in rows] == ["s0", "text_0000_0", "text_0000_1", "text_0000_2"]
    # The first copy continues a scene chat; the others stand alone.
    assert rows[1].messages[:2] == rows[0].messages and rows[1].messages[2:] == rows[2].messages == rows[3].messages
    assert report.bad_fraction == 0


def test_recipe_stages_load_as_training_configs():
    from training.config import load_train_config
    from training.recipes.build_default import RECIPES

    align = load_train_config(["--config", str(RECIPES / "default_align.yaml")])
    instruct = load_train_config(["--config", str(RECIPES / "default_instruct.yaml")])
    assert align.stage == "align" and align.align.objective == "lexical"
    assert instruct.stage == "instruct" and instruct.model.llm.lora.r > 0
    # The connector moves far slower than LoRA in instruct: at a high rate it collapsed to one token.
    assert instruct.optim.connector_learning_rate < instruct.optim.learning_rate / 10


def test_install_only_uses_the_runs_own_settings_and_keeps_the_shipped_adapter_on_failure(tmp_path, monkeypatch):
    import pytest

    from training.recipes import build_default

    shipped = tmp_path / "assistant" / "default_adapter"
    shipped.mkdir(parents=True)
    (shipped / "assistant_config.json").write_text("{}")
    monkeypatch.setattr(build_default, "SHIPPED", shipped)
    run = tmp_path / "run"
    test = {"accuracy_by_type": {"count": 0.5, "colour": 0.9, "shape": 0.8}}
    summary = {
        "train_wall_time_min": 20.0, "align": {"steps": 3}, "instruct": {"steps": 4}, "test": test,
        "args": {"train_scenes": 7, "test_scenes": 2, "connector": "resampler", "num_latents": 16, "text_repeats": 1},
    }
    run.mkdir()
    (run / "build_summary.json").write_text(json.dumps(summary))
    with pytest.raises(SystemExit, match="holds no adapter"):  # the run has no adapter yet
        build_default.main(["--out", str(run), "--install-only"])
    assert (shipped / "assistant_config.json").read_text() == "{}"

    adapter = run / "instruct" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "assistant_config.json").write_text('{"new": true}')
    monkeypatch.setattr("training.evaluate.format_table", lambda report: "| table |")
    build_default.main(["--out", str(run), "--install-only"])  # no --connector given: the run's own is named
    card = (shipped / "MODEL_CARD.md").read_text()
    installed = json.loads((shipped / "assistant_config.json").read_text())  # served as the shipped default is
    assert installed == {"new": True, "llm": {"serving": "auto"}, "engine": {"gguf_type": "f16"}}
    assert "`resampler` connector" in card and "7 synthetic scenes" in card and "count questions (50%)" in card

    # A run from before the cell options existed was a plain mlp, one token per cell, whatever today's flags say.
    summary["args"] = {**summary["args"], "connector": "mlp"}
    (run / "build_summary.json").write_text(json.dumps(summary))
    build_default.main(["--out", str(run), "--install-only"])
    assert "one token per cell" in (shipped / "MODEL_CARD.md").read_text()
    summary["args"] = {**summary["args"], "tokens_per_cell": 4, "select_cells": 8}
    (run / "build_summary.json").write_text(json.dumps(summary))
    build_default.main(["--out", str(run), "--install-only"])
    assert "passes on the 8 grid cells" in (shipped / "MODEL_CARD.md").read_text()
