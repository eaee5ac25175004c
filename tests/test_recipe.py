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
    assert report.bad_fraction == 0
