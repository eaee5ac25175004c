"""The model's placeholder contract, the freeze policy and the encoders' frozen state."""

import pytest
import torch

from assistant import Assistant, AssistantError
from assistant.freeze import apply_freeze_policy
from assistant.processor import PLACEHOLDER_IDS

IMAGE = PLACEHOLDER_IDS["image"]


def test_placeholder_count_mismatch_is_a_clear_error(tiny_assistant):
    model = tiny_assistant.model
    width = model.llm.get_input_embeddings().embedding_dim
    ids = torch.tensor([[5, IMAGE, IMAGE, IMAGE, 6]])
    with pytest.raises(AssistantError, match="3 image positions but the connector produced 2 tokens"):
        model.embed(ids, {"image": torch.randn(2, width)})
    with pytest.raises(AssistantError, match="produced 0 tokens"):
        model.embed(ids, {})
    assert model.embed(ids, {"image": torch.randn(3, width)}).shape == (1, 5, width)


def test_media_tokens_land_exactly_on_placeholders(tiny_assistant):
    model = tiny_assistant.model
    width = model.llm.get_input_embeddings().embedding_dim
    ids = torch.tensor([[7, IMAGE, 8, IMAGE]])
    media = torch.randn(2, width)
    embedded = model.embed(ids, {"image": media})
    text = model.llm.get_input_embeddings()(torch.tensor([7, 8]))
    assert torch.equal(embedded[0, 1], media[0]) and torch.equal(embedded[0, 3], media[1])
    assert torch.equal(embedded[0, 0], text[0]) and torch.equal(embedded[0, 2], text[1])


def test_forward_with_pixels_matches_tokens_per_frame(tiny_assistant, image_files):
    from PIL import Image

    model = tiny_assistant.model
    encoder = model.encoders["image"]
    pixels = encoder.preprocess([Image.open(image_files[0])])
    n = model.tokens_per_frame()["image"]
    ids = torch.tensor([[3] + [IMAGE] * n + [4]])
    labels = ids.clamp(min=0)
    with torch.no_grad():
        out = model(ids, pixel_values={"image": pixels}, labels=labels)
        logits = model(ids, pixel_values={"image": pixels}).logits
    assert logits.shape[:2] == (1, n + 2) and torch.isfinite(out.loss)
    # The loss over labelled positions only equals the usual full-logits loss.
    expected = torch.nn.functional.cross_entropy(logits[0, :-1], labels[0, 1:])
    assert torch.allclose(out.loss, expected, atol=1e-5)
    partial = labels.clone()
    partial[0, : n // 2] = -100
    expected_partial = torch.nn.functional.cross_entropy(logits[0, :-1], partial[0, 1:], ignore_index=-100)
    with torch.no_grad():
        assert torch.allclose(model(ids, pixel_values={"image": pixels}, labels=partial).loss, expected_partial, atol=1e-5)
    with pytest.raises(AssistantError, match="placeholder mismatch"):
        model(ids[:, :-2], pixel_values={"image": pixels})


@pytest.mark.parametrize("vision, tokens", [("clip", 16), ("siglip", 16)])
def test_hf_vision_tower_tokens_drop_cls_only_where_present(make_config, vision, tokens):
    assistant = Assistant.from_config(make_config(vision=vision))
    encoder = assistant.model.encoders["image"]
    assert encoder.num_tokens == tokens  # 32 px / 8 px patches = 16 (CLIP's CLS dropped)
    assert encoder.drop_cls == (vision == "clip")


@pytest.mark.parametrize("connector", ["mlp", "resampler"])
def test_freeze_policy_trains_only_connector_and_lora(make_config, connector):
    assistant = Assistant.from_config(make_config(connector=connector, lora_r=4))
    model = assistant.model
    count = apply_freeze_policy(model)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and count == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert all(name.startswith("connectors.") or "lora_" in name for name in trainable)
    assert any("lora_" in name for name in trainable) and any(n.startswith("connectors.") for n in trainable)
    # A backward pass leaves gradients only on those parameters.
    model.train()
    ids = torch.tensor([[3] + [IMAGE] * model.tokens_per_frame()["image"] + [4, 5]])
    pixels = torch.randn(1, 3, 32, 32)
    model(ids, pixel_values={"image": pixels}, labels=ids.clamp(min=0)).loss.backward()
    with_grad = {name for name, p in model.named_parameters() if p.grad is not None}
    assert with_grad <= trainable and with_grad
    assert not model.encoders["image"].training  # encoders stay in eval mode under model.train()
    model.eval()


def test_align_stage_freezes_lora(make_config):
    assistant = Assistant.from_config(make_config(lora_r=4))
    apply_freeze_policy(assistant.model, train_connectors=True, train_lora=False)
    trainable = [name for name, p in assistant.model.named_parameters() if p.requires_grad]
    assert trainable and all(name.startswith("connectors.") for name in trainable)


def test_fresh_connector_tokens_start_at_the_text_embedding_scale(tiny_assistant, image_files):
    from PIL import Image

    model = tiny_assistant.model
    embedding_rms = model.llm.get_input_embeddings().weight.float().pow(2).mean().sqrt()
    features = model.encoders["image"].encode([Image.open(image_files[0])])
    tokens = model.connect("image", features)
    assert torch.allclose(tokens.float().pow(2).mean(-1).sqrt(), embedding_rms.expand(tokens.shape[:-1]), rtol=1e-2)
