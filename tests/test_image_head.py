"""The image head (pictures into a text-embedding space): its loss, module, artifact, recall and training.

The loss is checked on hand-made embeddings; the artifact round trip and a short training run use the
tiny random CLIP vision tower and a tiny random sentence-transformers model, so nothing downloads.
"""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch
from PIL import Image

from adapters.image_text_head import ImageTextHead, ImageTextHeadConfig, symmetric_info_nce
from assistant.config import EncoderConfig
from assistant.errors import AssistantError
from assistant.image_text import ImageTextModel
from training.data.scene_layout import generate_scene
from training.data.scene_questions import caption
from training.image_head import ImageHeadConfig, recall_at, scene_key, train
from training.image_head_check import independent_scene


def test_info_nce_is_low_for_matched_pairs_high_for_shuffled_and_ignores_identical_content():
    eye = torch.eye(4)
    scale = torch.tensor(math.log(100.0))
    matched = symmetric_info_nce(eye, eye, scale)
    shuffled = symmetric_info_nce(eye, eye[[1, 2, 3, 0]], scale)
    assert matched < 1e-3 and shuffled > 50
    twins = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # two pictures of identical content with identical captions
    assert abs(float(symmetric_info_nce(twins, twins, scale)) - math.log(2)) < 1e-5  # each fights its twin
    same = torch.ones(2, 2, dtype=torch.bool)
    assert float(symmetric_info_nce(twins, twins, scale, same)) < 1e-6  # not a negative of its twin


def test_the_head_gives_unit_vectors_and_checks_its_input():
    head = ImageTextHead(ImageTextHeadConfig(input_dim=12, num_positions=16, output_dim=8, width=16, num_queries=2, num_heads=2))
    vectors = head(torch.randn(3, 16, 12))
    assert vectors.shape == (3, 8) and torch.allclose(vectors.norm(dim=-1), torch.ones(3), atol=1e-5)
    with pytest.raises(ValueError, match=r"expects \(B, 16, 12\)"):
        head(torch.randn(3, 15, 12))
    with pytest.raises(ValueError, match="square grid"):
        ImageTextHeadConfig(num_positions=50)
    with pytest.raises(ValueError, match="divisible"):
        ImageTextHeadConfig(width=30, num_heads=4)


def test_the_artifact_round_trips_and_bad_folders_are_clear_errors(tiny_paths, tmp_path):
    model = ImageTextModel.create(EncoderConfig(kind="hf_vision", model=tiny_paths["clip"]), 8, "tiny-text", width=16, num_heads=2)
    pictures = [Image.new("RGB", (40, 40), colour) for colour in ("red", "blue")]
    before = model.embed(pictures)
    model.save(tmp_path / "head", dtype=torch.float32)
    loaded = ImageTextModel.load(tmp_path / "head")
    assert np.allclose(loaded.embed(pictures), before, atol=1e-6) and loaded.text_model == "tiny-text"
    assert np.allclose(np.linalg.norm(before, axis=1), 1.0, atol=1e-5)
    with pytest.raises(AssistantError, match="is not an image head"):
        ImageTextModel.load(tmp_path / "nothing")
    config = json.loads((tmp_path / "head" / "image_head.json").read_text())
    config["head"]["input_dim"] = 999
    (tmp_path / "head" / "image_head.json").write_text(json.dumps(config))
    with pytest.raises(AssistantError, match="cannot load the image head"):
        ImageTextModel.load(tmp_path / "head")


def test_recall_counts_a_picture_of_identical_content_as_a_hit():
    pictures = np.eye(3, dtype=np.float32)
    texts = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]], dtype=np.float32)  # text 0 is nearest picture 1
    assert recall_at(texts, pictures, ["a", "b", "c"], ["a", "b", "c"], ks=(1, 2))["R@1"] == round(1 / 3, 4)
    assert recall_at(texts, pictures, ["a", "a", "c"], ["a", "a", "c"], ks=(1,))["R@1"] == 1.0  # 0 and 1 are the same scene


def test_the_independent_check_is_deterministic_and_worded_differently():
    first, again = independent_scene(random.Random("x")), independent_scene(random.Random("x"))
    assert first[1] == again[1] and first[2] == again[2] and np.array_equal(np.asarray(first[0]), np.asarray(again[0]))
    picture, text, key = first
    assert picture.size == (256, 256) and text.count(";") == len(key) - 1
    for size, colour, shape, position in key:
        assert colour in text
    scene = generate_scene(random.Random(0))
    assert caption(scene).startswith("A") and scene_key(scene) == tuple(sorted(scene_key(scene)))


def test_a_short_training_run_learns_and_saves_a_loadable_head(tiny_paths, tiny_sentence_model, tmp_path):
    folder = tmp_path / "pictures"
    folder.mkdir()
    colours = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220), "yellow": (230, 230, 20)}
    rows = []
    for index in range(16):
        name = list(colours)[index % 4]
        Image.new("RGB", (32, 32), colours[name]).save(folder / f"{index}.png")
        rows.append({"image": f"pictures/{index}.png", "caption": f"A plain {name} picture."})
    (tmp_path / "captions.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    config = ImageHeadConfig(out=str(tmp_path / "run"), data=str(tmp_path / "captions.jsonl"), test_scenes=8, steps=60, batch_size=8,
                             text_model=tiny_sentence_model, encoder="hf_vision", encoder_model=tiny_paths["clip"], warmup_steps=5)
    report = train(config)
    assert report["held_out"]["text_to_picture"]["R@1"] == 1.0  # four colours, captions identical per colour
    assert (tmp_path / "run" / "image_head" / "image_head.safetensors").is_file()
    assert json.loads((tmp_path / "run" / "report.json").read_text())["final_loss"] == report["final_loss"]
    loaded = ImageTextModel.load(tmp_path / "run" / "image_head")
    assert loaded.embed([Image.new("RGB", (32, 32), colours["red"])]).shape == (1, 32)


def test_bad_caption_rows_name_their_line(tmp_path):
    (tmp_path / "rows.jsonl").write_text(json.dumps({"image": "missing.png", "caption": "x"}) + "\n")
    with pytest.raises(AssistantError, match=r"rows.jsonl:1"):
        train(ImageHeadConfig(out=str(tmp_path / "run"), data=str(tmp_path / "rows.jsonl"), text_model="/nowhere"))
