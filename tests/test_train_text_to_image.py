"""Training the built-in scene model (``training.text_to_image``) on a tiny configuration: the loss weights, and
that a trained model saves, loads and draws."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from assistant.errors import AssistantError
from plugins.text_to_image.engine import ImageRequest, SceneEngine
from training.text_to_image import TextToImageTrainConfig, box_weights, train


def test_box_weights_cover_each_box_and_the_margin_around_it():
    layout = [("a large red star", (0.25, 0.25, 0.5, 0.5))]  # pixels 4-7 of 16
    inside = box_weights([layout, []], 16, margin=0)
    grown = box_weights([layout, []], 16, margin=2)
    assert inside.shape == (2, 1, 16, 16) and inside[1].sum() == 0 and grown[1].sum() == 0
    assert inside[0, 0].nonzero().min().item() == 4 and inside[0].sum() == 16
    rows, cols = grown[0, 0].nonzero().T
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (2, 9, 2, 9) and grown[0].sum() == 64
    assert grown.max() == 1  # overlapping boxes do not weigh more


def test_a_negative_margin_is_refused():
    with pytest.raises(AssistantError, match="box_margin"):
        TextToImageTrainConfig(box_margin=-1)


def test_a_tiny_training_run_saves_a_model_that_loads_and_draws(tmp_path):
    config = TextToImageTrainConfig(out=str(tmp_path), steps=2, batch_size=2, warmup_steps=1, resolution=96, patch=12,
                                    channels="32,32", attention_from=1)
    report = train(config)
    assert report["steps"] == 2 and np.isfinite(report["final_loss"])
    assert json.loads((tmp_path / "train_report.json").read_text())["model_config"]["channels"] == [32, 32]
    engine = SceneEngine(tmp_path / "model")
    assert next(engine.model.unet.parameters()).dtype == torch.float32  # saved in 16-bit, loaded for the CPU
    [picture] = engine.generate(ImageRequest("a red circle", steps=2))
    assert picture.size == (96, 96)
