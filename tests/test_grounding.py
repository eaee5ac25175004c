"""Lexical alignment (``align.objective: lexical``): the loss on hand-made cases and the stage on tiny models."""

from __future__ import annotations

import math

import pytest
import torch

from assistant.errors import AssistantError
from assistant.model import IGNORE_INDEX
from training.config import load_train_config
from training.grounding import answer_words, lexical_alignment_loss
from training.trainer import Trainer

from tests.test_training import scene_data, train, write_config  # noqa: F401  (fixture and helpers)

EMBEDDINGS = torch.eye(4)  # (V=4, D=4): word v points along axis v


def test_answer_words_are_the_distinct_labelled_non_special_ids():
    labels = torch.tensor([[IGNORE_INDEX, 3, 2, 3, 9], [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]])
    words = answer_words(labels, special_ids=[9])
    assert words[0].tolist() == [2, 3] and words[1].numel() == 0


def test_loss_is_the_mixture_likelihood_of_the_answer_words():
    # One row, two tokens: one exactly on word 0, one exactly on word 1; no negatives, so the softmax
    # runs over the row's words {0, 2}. At the embeddings' RMS (0.5) and scale 2, a token along axis v
    # scores 2 * 0.5 * 2 ... computed here term by term.
    tokens = torch.stack([EMBEDDINGS[0], EMBEDDINGS[1]])
    rms = 0.5  # RMS of eye(4)
    unit = tokens * (rms / tokens.pow(2).mean(-1, keepdim=True).sqrt())  # each token rescaled to RMS 0.5: norm 1
    logits = 2.0 * unit @ EMBEDDINGS[[0, 2]].T  # (2 tokens, 2 candidates)
    p = logits.softmax(-1).mean(0)  # mixture over the two tokens
    expected = -(p.log()).mean()
    got = lexical_alignment_loss(tokens, [2], [torch.tensor([0, 2])], EMBEDDINGS, negatives=0, logit_scale=2.0)
    torch.testing.assert_close(got, expected)
    assert math.isclose(float(p[0]), (math.e**2 / (math.e**2 + 1) + 0.5) / 2, rel_tol=1e-6)


def test_tokens_pointing_at_their_words_score_better_and_scale_does_not_matter():
    words = [torch.tensor([0]), torch.tensor([1])]
    right = torch.stack([EMBEDDINGS[0], EMBEDDINGS[1]])  # row 0's token on word 0, row 1's on word 1
    swapped = right.flip(0)
    torch.manual_seed(0)
    good = lexical_alignment_loss(right, [1, 1], words, EMBEDDINGS, negatives=2, logit_scale=3.0)
    torch.manual_seed(0)
    bad = lexical_alignment_loss(swapped, [1, 1], words, EMBEDDINGS, negatives=2, logit_scale=3.0)
    torch.manual_seed(0)
    louder = lexical_alignment_loss(right * 7.0, [1, 1], words, EMBEDDINGS, negatives=2, logit_scale=3.0)
    assert good < bad
    torch.testing.assert_close(good, louder)


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
