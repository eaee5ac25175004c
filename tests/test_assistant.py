"""Assistant invariants on tiny models: artifact round trip, prefix reuse, streaming, cancellation."""

import dataclasses
import logging
import threading
import time

import pytest
import torch

from assistant import Assistant, AssistantError
from assistant.processor import PLACEHOLDER_IDS


def user(text, *images):
    return {"role": "user", "content": [*({"type": "image", "image": image} for image in images), {"type": "text", "text": text}]}


def _perturb(module: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)


@pytest.mark.parametrize("connector", ["mlp", "resampler"])
def test_save_then_load_gives_identical_logits(make_config, image_files, tmp_path, connector):
    original = Assistant.from_config(make_config(connector=connector, lora_r=4))
    _perturb(original.model.connectors, 1)
    lora = [p for n, p in original.model.llm.named_parameters() if "lora_" in n]
    with torch.no_grad():
        for p in lora:  # LoRA B starts at zero: make the adapter actually change the output
            p.add_(torch.randn_like(p) * 0.05)
    original.save_pretrained(tmp_path / "artifact")
    files = {p.name for p in (tmp_path / "artifact").iterdir()}
    assert {"assistant_config.json", "connectors.safetensors", "chat_template.jinja", "lora"} <= files
    assert (tmp_path / "artifact" / "lora" / "adapter_model.safetensors").is_file()

    restored = Assistant.from_pretrained(tmp_path / "artifact")
    messages = [user("What is in this picture?", image_files[0])]
    prompt = original.prepare(messages)
    assert restored.prepare(messages).input_ids == prompt.input_ids
    ids = torch.tensor([prompt.input_ids])
    pixels = original.model.encoders["image"].preprocess([prompt.spans[0].frame.image])
    with torch.no_grad():
        before = original.model(ids, pixel_values={"image": pixels}).logits
        after = restored.model(ids, pixel_values={"image": pixels}).logits
        base = Assistant.from_config(make_config(connector=connector, lora_r=4)).model(ids, pixel_values={"image": pixels}).logits
    assert torch.equal(before, after)
    assert not torch.allclose(before, base)  # the round trip carried trained weights, not fresh ones
    assert restored.chat(messages, max_new_tokens=8) == original.chat(messages, max_new_tokens=8)


def test_save_in_16_bit_and_corrupt_artifact(make_config, tmp_path, image_files):
    assistant = Assistant.from_config(make_config(lora_r=4))
    _perturb(assistant.model.llm, 2)
    assistant.save_pretrained(tmp_path / "a", dtype=torch.bfloat16)
    from safetensors.torch import load_file

    assert all(t.dtype == torch.bfloat16 for t in load_file(str(tmp_path / "a" / "connectors.safetensors")).values())
    assert all(t.dtype == torch.bfloat16 for t in load_file(str(tmp_path / "a" / "lora" / "adapter_model.safetensors")).values())
    restored = Assistant.from_pretrained(tmp_path / "a")  # loads back into float32 modules
    lora = {n: p for n, p in restored.model.llm.named_parameters() if "lora_B" in n}
    original = dict(assistant.model.llm.named_parameters())
    assert lora and all(p.dtype == torch.float32 for p in lora.values())
    assert all(torch.allclose(p, original[n], atol=1e-2) and p.abs().sum() > 0 for n, p in lora.items())
    (tmp_path / "a" / "connectors.safetensors").write_bytes(b"garbage")
    with pytest.raises(AssistantError, match="cannot read connector weights"):
        Assistant.from_pretrained(tmp_path / "a")
    with pytest.raises(AssistantError, match="not an assistant artifact"):
        Assistant.from_pretrained(tmp_path / "missing")


def test_artifact_for_a_different_connector_is_rejected(make_config, tmp_path):
    Assistant.from_config(make_config(connector="mlp")).save_pretrained(tmp_path / "mlp")
    config_path = tmp_path / "mlp" / "assistant_config.json"
    config_path.write_text(config_path.read_text().replace('"kind": "mlp"', '"kind": "resampler"'))
    with pytest.raises(AssistantError, match="do not match the config"):
        Assistant.from_pretrained(tmp_path / "mlp")


def _three_turns(bot, image_files, max_new_tokens=12):
    replies = []
    conversation = [{"role": "system", "content": "You are terse."}, user("What is in this picture?", image_files[0])]
    for follow_up in (user("How many circles are there?"), user("Describe the image.", image_files[1]), None):
        replies.append(bot.chat(conversation, max_new_tokens=max_new_tokens))
        if follow_up is None:
            break
        conversation += [{"role": "assistant", "content": replies[-1]}, follow_up]
    return replies


def test_prefix_reuse_gives_identical_greedy_output_and_encodes_each_image_once(make_config, image_files):
    reusing = Assistant.from_config(make_config())
    config = dataclasses.replace(reusing.config, prefix_reuse=False)
    recomputing = Assistant(reusing.model, reusing.tokenizer, config)

    with_reuse = _three_turns(reusing, image_files)
    without_reuse = _three_turns(recomputing, image_files)

    assert with_reuse == without_reuse
    assert len(set(with_reuse)) == 3 and all(with_reuse)  # three distinct, non-empty replies
    assert reusing.stats.encoder_calls == 2  # image 1 in turn 1, image 2 in turn 3, never again
    assert reusing.stats.reused_tokens > 0 and recomputing.stats.reused_tokens == 0
    assert reusing.stats.prefill_tokens < recomputing.stats.prefill_tokens
    total_prompt = len(recomputing.prepare(_conversation_after(reusing, image_files, with_reuse)).input_ids)
    assert reusing.stats.prefill_tokens + reusing.stats.reused_tokens >= total_prompt


def _conversation_after(bot, image_files, replies):
    return [
        {"role": "system", "content": "You are terse."}, user("What is in this picture?", image_files[0]),
        {"role": "assistant", "content": replies[0]}, user("How many circles are there?"),
        {"role": "assistant", "content": replies[1]}, user("Describe the image.", image_files[1]),
    ]


def test_same_picture_in_two_requests_is_encoded_once(fresh_assistant, image_files):
    fresh_assistant.chat([user("What is this?", image_files[2])], max_new_tokens=2)
    # A different system turn makes the prefix diverge before the image, so its features are needed again.
    fresh_assistant.chat([{"role": "system", "content": "Be brief."}, user("And now?", image_files[2])], max_new_tokens=2)
    assert fresh_assistant.stats.encoder_calls == 1 and fresh_assistant.stats.media_cache_hits == 1


def test_different_images_in_the_same_place_are_not_confused(fresh_assistant, image_files):
    """Prefix reuse keys media by content: swapping the picture must change the reply's cache path."""
    first = fresh_assistant.chat([user("What is this?", image_files[0])], max_new_tokens=6)
    reused_before = fresh_assistant.stats.reused_tokens
    second = fresh_assistant.chat([user("What is this?", image_files[1])], max_new_tokens=6)
    prompt_start = fresh_assistant.prepare([user("What is this?", image_files[1])]).spans[0].start
    assert fresh_assistant.stats.reused_tokens - reused_before == prompt_start  # reuse stops at the image
    fresh = Assistant(fresh_assistant.model, fresh_assistant.tokenizer, fresh_assistant.config)
    assert second == fresh.chat([user("What is this?", image_files[1])], max_new_tokens=6)
    assert first == fresh.chat([user("What is this?", image_files[0])], max_new_tokens=6)


def test_stream_pieces_join_to_the_chat_reply(fresh_assistant):
    messages = [user("Hello! How can I help you today?")]
    pieces = list(fresh_assistant.stream(messages, max_new_tokens=20))
    assert len(pieces) > 1
    assert "".join(pieces) == fresh_assistant.chat(messages, max_new_tokens=20)


def test_stop_strings_end_the_reply_before_them(fresh_assistant):
    messages = [user("The quick brown fox")]
    full = fresh_assistant.chat(messages, max_new_tokens=30)
    assert len(full) > 12
    stop = full[6:9]
    expected = full[: full.find(stop)]
    assert fresh_assistant.chat(messages, max_new_tokens=30, stop=[stop]) == expected
    assert "".join(fresh_assistant.stream(messages, max_new_tokens=30, stop=stop)) == expected


def test_sampling_is_reproducible_with_a_seed(fresh_assistant):
    messages = [user("Describe the image in detail.")]
    options = dict(max_new_tokens=15, temperature=1.5, top_p=0.95)
    first = fresh_assistant.chat(messages, seed=3, **options)
    assert fresh_assistant.chat(messages, seed=3, **options) == first
    samples = {fresh_assistant.chat(messages, seed=seed, **options) for seed in range(4)}
    assert len(samples) > 1


def test_cancel_from_another_thread_stops_the_stream(fresh_assistant):
    messages = [user("Hello!")]
    before = fresh_assistant.stats.generated_tokens
    fresh_assistant.chat(messages, max_new_tokens=300)
    assert fresh_assistant.stats.generated_tokens - before == 300  # precondition: no early end on its own

    before = fresh_assistant.stats.generated_tokens
    pieces, at_cancel = [], None
    for piece in fresh_assistant.stream(messages, max_new_tokens=300):
        pieces.append(piece)
        if len(pieces) == 3:
            canceller = threading.Thread(target=fresh_assistant.cancel)
            canceller.start()
            canceller.join()
            at_cancel = fresh_assistant.stats.generated_tokens
    assert at_cancel is not None and at_cancel - before < 300
    time.sleep(0.2)
    # The worker may finish the one decode step it was running when cancel() came; no more after it.
    assert fresh_assistant.stats.generated_tokens <= at_cancel + 1
    assert fresh_assistant.chat(messages, max_new_tokens=4)  # still serves the next request


def test_a_new_stream_leaves_an_unfinished_one_intact(fresh_assistant):
    alone = Assistant(fresh_assistant.model, fresh_assistant.tokenizer, fresh_assistant.config)
    expected_old = alone.chat([user("Hello!")], max_new_tokens=30)
    expected_new = alone.chat([user("What is in this picture?")], max_new_tokens=5)
    old = fresh_assistant.stream([user("Hello!")], max_new_tokens=30)
    first = next(old)
    reply = fresh_assistant.chat([user("What is in this picture?")], max_new_tokens=5)
    assert reply == expected_new
    assert first + "".join(old) == expected_old  # nothing cut off, nothing changed


def test_long_conversation_drops_oldest_turns_but_keeps_system_and_whole_images(make_config, image_files, caplog):
    bot = Assistant.from_config(make_config(system_prompt="SYSTEM-RULES"))
    bot.context_window = 160
    long_text = "The quick brown fox jumps over the lazy dog. " * 3
    messages = []
    for turn in range(4):
        messages += [user(f"{turn} {long_text}", image_files[turn % 2]), {"role": "assistant", "content": long_text}]
    messages.append(user("Describe the image.", image_files[2]))
    with caplog.at_level(logging.WARNING, logger="assistant.processor"):
        prompt = bot.prepare(messages, max_new_tokens=10)
    assert "dropped" in caplog.text
    assert prompt.dropped_messages > 0 and len(prompt.input_ids) <= 150
    text = bot.tokenizer.decode([i for i in prompt.input_ids if i >= 0])
    assert "SYSTEM-RULES" in text and "Describe the image." in text and not text.count("0 The quick")
    n = bot.model.tokens_per_frame()["image"]
    assert sum(i == PLACEHOLDER_IDS["image"] for i in prompt.input_ids) == n * len(prompt.spans)
    assert prompt.spans[-1].frame.key == bot.prepare([user("x", image_files[2])], max_new_tokens=10).spans[0].frame.key
    assert bot.chat(messages, max_new_tokens=10) is not None
    assert bot.stats.dropped_messages == prompt.dropped_messages


def test_a_last_turn_longer_than_the_context_is_an_error(fresh_assistant):
    fresh_assistant.context_window = 64
    with pytest.raises(AssistantError, match="last turn alone"):
        fresh_assistant.chat([user("The quick brown fox jumps over the lazy dog. " * 20)], max_new_tokens=8)


def test_a_chat_turn_uses_no_argument_transformers_deprecates(fresh_assistant, caplog):
    """The engine passes the KV cache as ``cache``: ``past_key_values`` warns on every forward (removal in 5.40)."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fresh_assistant.chat([{"role": "user", "content": "hi"}], max_new_tokens=3)
    said = [str(w.message) for w in caught] + [record.getMessage() for record in caplog.records]
    assert not [text for text in said if "deprecated" in text.lower()], said
