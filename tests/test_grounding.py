"""Lexical alignment (``align.objective: lexical``): the loss on hand-made cases and the stage on tiny models."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from assistant.config import ConnectorConfig
from assistant.errors import AssistantError
from assistant.model import IGNORE_INDEX
from training.config import load_train_config
from training.data.examples import Example, collate, frame_regions
from training.data.rows import BadRow, Region, parse_regions
from training.grounding import (
    answer_words, deal_words, grid_cell, grounded_alignment_loss, lexical_alignment_loss, rescale_output, single_picture_words,
)
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


# --- grounded rows: one token per described box -------------------------------------------------


def test_grid_cell_is_the_raster_index_of_the_centre():
    assert grid_cell((0.0, 0.0), 7) == 0
    assert grid_cell((0.5, 0.5), 7) == 24  # row 3, column 3
    assert grid_cell((0.99, 0.01), 7) == 6  # top-right
    assert grid_cell((0.01, 0.99), 7) == 42  # bottom-left
    assert grid_cell((1.0, 1.0), 7) == 48  # the far edge belongs to the last cell


def test_grounded_loss_on_a_grid_is_the_centre_cells_words_plus_background():
    # 2x2 grid; the box centred at (0.75, 0.25) is cell 1 and says words {0, 1}; the background word is 3.
    # Token 1 points at word 0, the other tokens at word 3; candidates are {0, 1, 3} (no negatives).
    tokens = torch.stack([2 * EMBEDDINGS[3], 2 * EMBEDDINGS[0], 2 * EMBEDDINGS[3], 2 * EMBEDDINGS[3]])[None]
    got = grounded_alignment_loss(tokens, [(0, [0, 1], (0.75, 0.25))], [3], EMBEDDINGS, 0, 1.0, grid=2)
    z = math.e**2 + 2
    object_term = -(math.log(math.e**2 / z) + math.log(1 / z)) / 2
    background_term = -math.log(math.e**2 / z)
    assert math.isclose(float(got), object_term + background_term, rel_tol=1e-6)
    # The same box on the wrong cell costs more.
    moved = grounded_alignment_loss(tokens, [(0, [0, 1], (0.25, 0.75))], [3], EMBEDDINGS, 0, 1.0, grid=2)
    assert moved > got


def test_matching_picks_the_token_that_fits_and_ignores_token_order():
    tokens = torch.stack([2 * EMBEDDINGS[3], 2 * EMBEDDINGS[3], 2 * EMBEDDINGS[0], 2 * EMBEDDINGS[1]])[None]
    regions = [(0, [1], (0.1, 0.1)), (0, [0], (0.9, 0.9))]  # centres do not matter without a grid
    matched = grounded_alignment_loss(tokens, regions, [3], EMBEDDINGS, 0, 1.0, grid=None)
    # The best one-to-one assignment is token 3 -> words [1], token 2 -> words [0]: the grid loss with
    # the boxes placed on those cells.
    placed = grounded_alignment_loss(tokens, [(0, [1], (0.75, 0.75)), (0, [0], (0.25, 0.75))], [3], EMBEDDINGS, 0, 1.0, grid=2)
    torch.testing.assert_close(matched, placed)
    shuffled = tokens[:, [2, 0, 3, 1]]
    torch.testing.assert_close(grounded_alignment_loss(shuffled, regions, [3], EMBEDDINGS, 0, 1.0, grid=None), matched)


def test_grounded_loss_only_counts_named_frames_and_trains_the_tokens():
    torch.manual_seed(0)
    tokens = torch.randn(3, 4, 4, requires_grad=True)
    regions = [(2, [0], (0.2, 0.2))]
    loss = grounded_alignment_loss(tokens, regions, [3], EMBEDDINGS, 0, 1.0, grid=2)
    loss.backward()
    assert tokens.grad[:2].abs().sum() == 0 and tokens.grad[2].abs().sum() > 0
    assert grounded_alignment_loss(tokens, [], [3], EMBEDDINGS, 0, 1.0, grid=2) is None


def test_deal_words_gives_one_word_per_token_in_order():
    assert deal_words([5, 6, 7, 8], 1) == [[5, 6, 7, 8]]
    assert deal_words([5, 6, 7, 8], 4) == [[5], [6], [7], [8]]
    assert deal_words([5, 6, 7, 8, 9], 4) == [[5], [6], [7], [8, 9]]  # the last token takes the rest
    assert deal_words([5, 6], 4) == [[5], [6], [], []]  # the rest predict the background word


def test_several_tokens_per_cell_each_learn_their_own_word():
    # 2x2 grid, 2 tokens per cell; the box in cell 1 says words [0, 1]: its first token must say 0 and
    # its second 1; every other token says the background word 3.
    cells = 2 * EMBEDDINGS[3].expand(1, 4, 2, 4).clone()
    cells[0, 1, 0], cells[0, 1, 1] = 2 * EMBEDDINGS[0], 2 * EMBEDDINGS[1]
    got = grounded_alignment_loss(cells, [(0, [0, 1], (0.75, 0.25))], [3], EMBEDDINGS, 0, 1.0, grid=2)
    z = math.e**2 + 2  # each token: its own word at e^2, the two other candidates at e^0
    assert math.isclose(float(got), -2 * math.log(math.e**2 / z), rel_tol=1e-6)
    swapped = cells.clone()
    swapped[0, 1] = cells[0, 1].flip(0)  # the right words in the wrong order cost more
    assert grounded_alignment_loss(swapped, [(0, [0, 1], (0.75, 0.25))], [3], EMBEDDINGS, 0, 1.0, grid=2) > got
    with pytest.raises(ValueError, match="need a token grid"):
        grounded_alignment_loss(cells, [(0, [0, 1], (0.75, 0.25))], [3], EMBEDDINGS, 0, 1.0, grid=None)


def test_objectness_learns_which_cells_hold_a_box_centre():
    tokens = torch.zeros(1, 4, 4)
    regions = [(0, [0], (0.75, 0.25))]  # cell 1
    without = grounded_alignment_loss(tokens, regions, [3], EMBEDDINGS, 0, 1.0, grid=2)
    right = torch.tensor([[-5.0, 5.0, -5.0, -5.0]])
    wrong = torch.tensor([[5.0, -5.0, -5.0, -5.0]])
    with_right = grounded_alignment_loss(tokens, regions, [3], EMBEDDINGS, 0, 1.0, grid=2, objectness=right)
    with_wrong = grounded_alignment_loss(tokens, regions, [3], EMBEDDINGS, 0, 1.0, grid=2, objectness=wrong)
    bce = float(torch.nn.functional.binary_cross_entropy_with_logits(right, torch.tensor([[0.0, 1.0, 0.0, 0.0]])))
    assert math.isclose(float(with_right - without), bce, rel_tol=1e-5)
    assert with_wrong > with_right + 2  # two cells wrong by 5 logits of four: about 10 / 4


def test_a_sample_of_background_cells_gives_the_same_loss_when_they_agree():
    # Background cells all learn one word: when their tokens are alike, scoring a sample of them changes nothing,
    # and the cells left out of a step get no gradient.
    torch.manual_seed(0)
    background = torch.randn(4)
    tokens = background.expand(2, 9, 4).clone()
    tokens[0, 4], tokens[1, 2] = torch.randn(4), torch.randn(4)
    tokens.requires_grad_(True)
    regions = [(0, [0, 1], (0.5, 0.5)), (1, [2], (0.9, 0.1))]
    full = grounded_alignment_loss(tokens, regions, [3], EMBEDDINGS, 0, 1.0, grid=3)
    sampled = grounded_alignment_loss(tokens, regions, [3], EMBEDDINGS, 0, 1.0, grid=3, background_cells=2)
    torch.testing.assert_close(sampled, full)
    sampled.backward()
    assert int((tokens.grad.abs().sum(-1) > 0).sum()) == 2 * (1 + 2)  # per frame: the object cell and two others


@pytest.mark.parametrize(
    ("regions", "background", "grid", "message"),
    [
        ([(0, [0], (0.5, 0.5))], [3], 3, "does not have 4 cells"),
        ([(5, [0], (0.5, 0.5))], [3], 2, "outside the batch's 1 frames"),
        ([(0, [0], (0.5, 0.5))], [], 2, "background word"),
    ],
)
def test_grounded_loss_refuses_inconsistent_input(regions, background, grid, message):
    with pytest.raises(ValueError, match=message):
        grounded_alignment_loss(torch.zeros(1, 4, 4), regions, background, EMBEDDINGS, 0, 1.0, grid=grid)


def test_rows_parse_regions_and_name_what_is_wrong():
    good = [{"image": 1, "box": [0, 0.25, 0.5, 1], "text": " large red circle left "}, {"box": [0.1, 0.1, 0.2, 0.2], "text": "x"}]
    parsed = parse_regions(good, media_count=2)
    assert parsed[0] == Region(1, (0.0, 0.25, 0.5, 1.0), "large red circle left") and parsed[1].image == 0
    assert parsed[0].centre == (0.25, 0.625)
    assert parse_regions(None, 0) == []
    bad = {
        "not a list": ({"box": [0, 0, 1, 1]}, "must be a list"),
        "item not an object": (["box"], "must be an object"),
        "image out of range": ([{"image": 2, "box": [0, 0, 1, 1], "text": "a"}], "not one of the row's 2 media items"),
        "image a bool": ([{"image": True, "box": [0, 0, 1, 1], "text": "a"}], "not one of"),
        "box inverted": ([{"box": [0.5, 0, 0.2, 1], "text": "a"}], "x0 < x1"),
        "box in pixels": ([{"box": [0, 0, 224, 224], "text": "a"}], "fractions"),
        "box short": ([{"box": [0, 0, 1], "text": "a"}], "fractions"),
        "box strings": ([{"box": ["0", 0, 1, 1], "text": "a"}], "fractions"),
        "empty text": ([{"box": [0, 0, 1, 1], "text": "  "}], "non-empty"),
    }
    for case, (value, message) in bad.items():
        with pytest.raises(BadRow, match=message) as caught:
            parse_regions(value, media_count=2)
        assert caught.value.reason == "malformed_row", case


def test_regions_follow_their_picture_through_frames_and_batches():
    picture = SimpleNamespace(modality="image", frames=["f"])
    video = SimpleNamespace(modality="video", frames=["f0", "f1", "f2"])
    parsed = [SimpleNamespace(media=[video]), SimpleNamespace(media=[]), SimpleNamespace(media=[picture])]
    first, second = Region(0, (0, 0, 1, 1), "a"), Region(1, (0, 0, 1, 1), "b")
    assert frame_regions(parsed, [first, second]) == [(0, first), (1, first), (2, first), (3, second)]
    examples = [Example([1, 2], [1, 2], ["x", "y"], [(1, first)]), Example([1], [1], [], []), Example([3], [3], ["z"], [(0, second)])]
    batch = collate(examples, pad_id=0)
    assert batch["regions"] == [(1, first), (2, second)] and batch["frames_per_row"] == [2, 0, 1]


def test_grounded_rows_reach_the_align_stage_on_both_connector_kinds(tmp_path, tiny_paths, scene_data, monkeypatch):  # noqa: F811
    seen = []
    real = grounded_alignment_loss

    def spy(tokens, regions, background, embeddings, negatives, logit_scale, grid, objectness=None, background_cells=0):
        seen.append((tokens.shape, len(regions), grid, objectness))
        return real(tokens, regions, background, embeddings, negatives, logit_scale, grid, objectness, background_cells)

    monkeypatch.setattr("training.trainer.grounded_alignment_loss", spy)
    # SigLIP resizes the whole picture: the mlp keeps its grid. CLIP centre-crops: cells do not cover the
    # picture, so boxes are matched instead, as for the resampler.
    cases = (
        ("mlp", "siglip", True, {}), ("mlp", "clip", False, {}), ("resampler", "siglip", False, {}),
        ("mlp", "siglip", True, {"tokens_per_cell": 3, "select_cells": 2}),
    )
    for kind, vision, uses_grid, options in cases:
        seen.clear()
        config = write_config(
            tmp_path / f"{kind}_{vision}", tiny_paths, scene_data, stage="align", align={"objective": "lexical", "negatives": 16},
            optim={"max_steps": 3, "batch_size": 4, "learning_rate": 1e-2},
        )
        train_config = load_train_config(["--config", str(config)])
        train_config.model.modalities["image"].encoder.model = tiny_paths[vision]
        train_config.model.modalities["image"].connector = ConnectorConfig(kind=kind, num_latents=6, depth=1, num_heads=4, **options)
        trainer = Trainer(train_config)
        trainer.train()
        encoder_grid = trainer.model.encoders["image"].grid
        assert len(seen) == 3 and all(count > 0 for _, count, _, _ in seen), (kind, vision)
        if uses_grid:  # every cell's tokens (F, N, S, D) reach the loss, not only the cells chosen for the LLM
            slots = options.get("tokens_per_cell", 1)
            assert encoder_grid and all(
                grid == encoder_grid and shape[1:3] == (grid * grid, slots) for shape, _, grid, _ in seen
            )
            assert all((scores is not None) == bool(options) for *_, scores in seen)
            assert all(scores is None or scores.shape == shape[:2] for shape, _, _, scores in seen)
        else:
            assert all(grid is None and scores is None for _, _, grid, scores in seen), (kind, vision)


def test_grounded_loss_runs_in_float32_under_bf16_autocast():
    tokens = torch.stack([2 * EMBEDDINGS[3], 2 * EMBEDDINGS[0], 2 * EMBEDDINGS[3], 2 * EMBEDDINGS[3]])[None]
    reference = grounded_alignment_loss(tokens, [(0, [0, 1], (0.75, 0.25))], [3], EMBEDDINGS, 0, 1.0, grid=None)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the matching path hands the costs to scipy
        got = grounded_alignment_loss(tokens, [(0, [0, 1], (0.75, 0.25))], [3], EMBEDDINGS, 0, 1.0, grid=None)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, reference)
