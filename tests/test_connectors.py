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
