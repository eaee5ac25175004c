"""Connector shapes, the registry's rules and position embeddings (pure torch, no models)."""

import pytest
import torch
from torch import nn

from adapters import CONNECTORS, build_connector, register_connector
from adapters.position import sincos_2d_table


@pytest.mark.parametrize("num_tokens", [1, 49, 196])
def test_mlp_keeps_one_token_per_input(num_tokens):
    connector = build_connector("mlp", input_dim=24, output_dim=16, num_input_tokens=num_tokens)
    out = connector(torch.randn(3, num_tokens, 24))
    assert out.shape == (3, num_tokens, 16)
    assert connector.num_output_tokens(num_tokens) == num_tokens


@pytest.mark.parametrize("num_tokens", [1, 49, 300])
def test_resampler_emits_num_latents_whatever_the_input_length(num_tokens):
    connector = build_connector("resampler", 24, 16, num_tokens, num_latents=5, depth=2, num_heads=4)
    out = connector(torch.randn(2, num_tokens, 24))
    assert out.shape == (2, 5, 16)
    assert connector.num_output_tokens(num_tokens) == 5


def test_resampler_output_depends_on_its_input():
    connector = build_connector("resampler", 8, 8, 10, num_latents=3, num_heads=2).eval()
    a, b = torch.randn(1, 10, 8), torch.randn(1, 10, 8)
    assert not torch.allclose(connector(a), connector(b))


def test_build_ignores_options_the_connector_does_not_take():
    connector = build_connector("mlp", 8, 8, 4, num_latents=99, depth=7, hidden_dim=12)
    assert connector.linear_in.out_features == 12


def test_registry_rejects_duplicates_and_bad_names():
    with pytest.raises(ValueError, match="already registered"):
        register_connector("mlp")
    with pytest.raises(ValueError, match="must match"):
        register_connector("My-Connector")
    with pytest.raises(KeyError, match="unknown connector"):
        build_connector("nonexistent", 8, 8, 4)


def test_register_a_third_party_connector():
    @register_connector("test_identity_pool")
    class MeanPool(nn.Module):
        def __init__(self, input_dim, output_dim, num_input_tokens):
            super().__init__()
            self.proj = nn.Linear(input_dim, output_dim)

        def num_output_tokens(self, num_input_tokens):
            return 1

        def forward(self, tokens):
            return self.proj(tokens.mean(1, keepdim=True))

    try:
        assert build_connector("test_identity_pool", 8, 4, 10)(torch.randn(2, 10, 8)).shape == (2, 1, 4)
    finally:
        del CONNECTORS["test_identity_pool"]


@pytest.mark.parametrize("kind", ["learned", "sincos2d"])
def test_position_embedding_rejects_wrong_token_count(kind):
    connector = build_connector("mlp", 8, 8, 49, position_embedding=kind)
    assert connector(torch.randn(1, 49, 8)).shape == (1, 49, 8)
    with pytest.raises(ValueError, match="built for 49 input tokens"):
        connector(torch.randn(1, 16, 8))


def test_position_embedding_makes_connector_position_aware():
    torch.manual_seed(0)
    connector = build_connector("mlp", 8, 8, 4, position_embedding="learned").eval()
    same = torch.randn(1, 1, 8).expand(1, 4, 8)  # identical content at every position
    out = connector(same)
    assert not torch.allclose(out[0, 0], out[0, 3])


def test_sincos_table_rows_are_distinct():
    table = sincos_2d_table(7, 16)
    assert table.shape == (49, 16)
    assert torch.cdist(table, table).add(torch.eye(49) * 10).min() > 0.1
    with pytest.raises(ValueError):
        sincos_2d_table(7, 10)


@pytest.mark.parametrize("kind", ["mlp", "resampler"])
def test_output_rms_starts_media_tokens_at_the_requested_scale(kind):
    connector = build_connector(kind, 24, 16, 9, num_latents=4, num_heads=4, output_rms=0.13)
    tokens = connector(torch.randn(2, 9, 24) * 50)  # wildly scaled inputs
    per_token_rms = tokens.pow(2).mean(-1).sqrt()
    assert torch.allclose(per_token_rms, torch.full_like(per_token_rms, 0.13), rtol=1e-3)
    with pytest.raises(ValueError, match="output_rms"):
        build_connector(kind, 24, 16, 9, num_latents=4, num_heads=4, output_rms=0.0)


def test_mlp_cells_become_several_tokens_in_cell_order():
    connector = build_connector("mlp", 8, 6, 4, tokens_per_cell=3).eval()
    features = torch.randn(2, 4, 8)
    cells, scores = connector.cells(features)
    assert cells.shape == (2, 4, 3, 6) and scores is None
    assert connector.num_output_tokens(4) == 12
    torch.testing.assert_close(connector(features), cells.flatten(1, 2))  # cell 0's tokens, then cell 1's, ...


def test_mlp_passes_on_the_highest_scoring_cells_in_raster_order():
    torch.manual_seed(0)
    connector = build_connector("mlp", 8, 6, 9, tokens_per_cell=2, select_cells=3).eval()
    features = torch.randn(2, 9, 8)
    cells, scores = connector.cells(features)
    assert scores.shape == (2, 9) and connector.num_output_tokens(9) == 6
    out = connector(features)
    assert out.shape == (2, 6, 6)
    for row in range(2):
        best = sorted(scores[row].topk(3).indices.tolist())
        torch.testing.assert_close(out[row], cells[row, best].flatten(0, 1))

    class FixedScores(nn.Module):  # cells 7, 1 and 4 score highest, in that order
        def forward(self, hidden):
            scores = torch.zeros(*hidden.shape[:2], 1)
            scores[:, [7, 1, 4]] = torch.tensor([3.0, 2.0, 1.0])[:, None]
            return scores

    connector.objectness = FixedScores()
    torch.testing.assert_close(connector(features), cells[:, [1, 4, 7]].flatten(1, 2))


@pytest.mark.parametrize("options, message", [({"tokens_per_cell": 0}, "tokens_per_cell"), ({"select_cells": 10}, "select_cells")])
def test_mlp_rejects_bad_cell_options(options, message):
    with pytest.raises(ValueError, match=message):
        build_connector("mlp", 8, 6, 9, **options)


def test_plain_mlp_weights_load_into_the_default_options():
    """Adapters saved before the cell options existed keep loading: same parameter names and shapes."""
    old_names = {"positions.gate", "input_norm.weight", "input_norm.bias", "linear_in.weight", "linear_in.bias",
                 "linear_out.weight", "linear_out.bias", "output_norm.weight"}
    connector = build_connector("mlp", 8, 6, 49, position_embedding="sincos2d", output_rms=0.1)
    assert set(connector.state_dict()) == old_names
