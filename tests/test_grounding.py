"""Lexical alignment (``align.objective: lexical``): the loss on hand-made cases and the stage on tiny models."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

from assistant.errors import AssistantError
from assistant.model import IGNORE_INDEX
from training.config import load_train_config
from training.grounding import answer_words, lexical_alignment_loss, rescale_output, single_picture_words
from training.trainer import Trainer

from tests.test_training import scene_data, train, write_config  # noqa: F401  (fixture and helpers)

EMBEDDINGS = torch.eye(4)  # (V=4, D=4): word v points along axis v


def test_answer_words_are_the_distinct_labelled_non_special_ids():
    labels = torch.tensor([[IGNORE_INDEX, 3, 2, 3, 9], [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]])
    words = answer_words(labels, special_ids=[9])
    assert words[0].tolist() == [2, 3] and words[1].numel() == 0


def test_only_single_picture_rows_keep_their_words():
    words = [torch.tensor([1, 2]), torch.tensor([3]), torch.tensor([4])]
    kept = single_picture_words(words, [1, 2, 0])
    assert kept[0].tolist() == [1, 2] and kept[1].numel() == 0 and kept[2].numel() == 0
    with pytest.raises(ValueError):
        single_picture_words(words, [1, 1])


def test_loss_is_the_mixture_likelihood_of_the_answer_words():
    # One row, two tokens: one on word 0, one on word 1; no negatives, so the softmax runs over the
    # row's words {0, 2}. Token 0 scores (2, 0) on them, token 1 scores (0, 0).
    tokens = torch.stack([EMBEDDINGS[0], EMBEDDINGS[1]])
    got = lexical_alignment_loss(tokens, [2], [torch.tensor([0, 2])], EMBEDDINGS, negatives=0, logit_scale=2.0)
    p0 = (math.e**2 / (math.e**2 + 1) + 0.5) / 2  # P(word 0 | row): mean over the two tokens
    p2 = (1 / (math.e**2 + 1) + 0.5) / 2
    assert math.isclose(float(got), -(math.log(p0) + math.log(p2)) / 2, rel_tol=1e-6)


def test_tokens_pointing_at_their_words_score_better():
    words = [torch.tensor([0]), torch.tensor([1])]
    right = torch.stack([EMBEDDINGS[0], EMBEDDINGS[1]])  # row 0's token on word 0, row 1's on word 1
    torch.manual_seed(0)
    good = lexical_alignment_loss(right, [1, 1], words, EMBEDDINGS, negatives=2, logit_scale=3.0)
    torch.manual_seed(0)
    bad = lexical_alignment_loss(right.flip(0), [1, 1], words, EMBEDDINGS, negatives=2, logit_scale=3.0)
    assert good < bad


def test_rescale_output_brings_tokens_to_the_target_rms():
    from adapters.mlp_projector import MLPProjector

    torch.manual_seed(0)
    connector = MLPProjector(6, 8, num_input_tokens=4, output_rms=0.5)
    features = torch.randn(3, 4, 6)
    with torch.no_grad():
        connector.output_norm.weight.mul_(3.0)  # as after lexical alignment: louder than the embeddings
        measured = float(connector(features).pow(2).mean().sqrt())
        assert rescale_output(connector, measured, target_rms=0.13)
        torch.testing.assert_close(connector(features).pow(2).mean().sqrt(), torch.tensor(0.13))
    assert not rescale_output(MLPProjector(6, 8, num_input_tokens=4), 1.0, 0.13)  # no output norm


def test_rows_without_media_or_words_are_left_out():
    tokens = EMBEDDINGS[[0, 1]]
    alone = lexical_alignment_loss(tokens[:1], [1], [torch.tensor([0, 1])], EMBEDDINGS, 0, 1.0)
    mixed = lexical_alignment_loss(tokens, [0, 1, 1], [torch.tensor([3]), torch.tensor([0, 1]), torch.tensor([], dtype=torch.long)], EMBEDDINGS, 0, 1.0)
    torch.testing.assert_close(alone, mixed)
    assert lexical_alignment_loss(tokens[:0], [0], [torch.tensor([1])], EMBEDDINGS, 0, 1.0) is None
    with pytest.raises(ValueError, match="do not split"):
        lexical_alignment_loss(tokens, [1], [torch.tensor([0])], EMBEDDINGS, 0, 1.0)


def test_bad_align_objective_is_refused(tmp_path, tiny_paths, scene_data):  # noqa: F811
    config = write_config(tmp_path, tiny_paths, scene_data, stage="align")
    with pytest.raises(AssistantError, match="align.objective"):
        load_train_config(["--config", str(config), "--align.objective", "contrastive"])


def test_lexical_align_stage_trains_the_connector_without_running_the_llm(tmp_path, tiny_paths, scene_data, monkeypatch):  # noqa: F811
    config = write_config(
        tmp_path, tiny_paths, scene_data, stage="align", align={"objective": "lexical", "negatives": 64},
        optim={"max_steps": 25, "batch_size": 8, "learning_rate": 1e-2},
    )
    trainer = Trainer(load_train_config(["--config", str(config)]))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}

    def no_llm(*args, **kwargs):
        raise AssertionError("the LLM ran during lexical alignment")

    monkeypatch.setattr(trainer.model.llm, "forward", no_llm)
    monkeypatch.setattr(trainer.model.llm.get_decoder(), "forward", no_llm)
    summary = trainer.train()
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert changed and all(n.startswith("connectors.") for n in changed)
    history = trainer.loss_history
    assert sum(history[-5:]) / 5 < sum(history[:5]) / 5
    assert summary["steps"] == 25 and (tmp_path / "run" / "adapter").is_dir()
    # The stage ends with the connector's tokens back at the LLM's embedding RMS.
    from assistant import Assistant

    saved = Assistant.from_pretrained(tmp_path / "run" / "adapter")
    frames = saved.model.encoders["image"].encode([Image.new("RGB", (40, 30), "red"), Image.new("RGB", (40, 30), "blue")])
    with torch.no_grad():
        rms = saved.model.connect("image", frames).float().pow(2).mean().sqrt()
    target = saved.model.llm.get_input_embeddings().weight.float().pow(2).mean().sqrt()
    torch.testing.assert_close(rms, target, rtol=0.3, atol=0)
