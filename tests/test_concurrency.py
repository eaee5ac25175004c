"""Many requests on one Assistant at once: decoded together, each exactly as it would be alone.

The reference for every request is the same request on a second Assistant over the same weights,
run by itself; ``peak_batch`` proves the concurrent ones really shared decode steps.
"""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest
import torch

from assistant import Assistant
from assistant.config import EngineConfig
from assistant.kv_pool import common_prefix_length
from assistant.tools.events import AssistantTurn
from conftest import needs_llama_cpp

@pytest.fixture(params=["eager", "llama_cpp"])
def fresh_assistant(request, make_config, tmp_path_factory, monkeypatch) -> Assistant:
    """The tests here run on both decode engines: PyTorch's and llama.cpp's (when installed)."""
    config = make_config()
    if request.param == "llama_cpp":
        needs_llama_cpp()
        monkeypatch.setenv("MMA_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "gguf-cache"))
        config.llm.serving = "llama_cpp"
    return Assistant.from_config(config)


def same_reply(bot: Assistant, got, expected) -> bool:
    """A reply (or list of replies) equals its solo run token for token on the PyTorch engine. llama.cpp picks
    its kernels by how many rows share a call, so there a request rounds differently beside others and a
    near-tie of this random tiny model can flip: that engine must only answer (a reply of the same kind), and
    test_llama_cpp checks its logits against the solo run's instead."""
    if bot.config.llm.serving != "llama_cpp":
        return got == expected
    if isinstance(expected, list):
        return isinstance(got, list) and len(got) == len(expected) and all(same_reply(bot, g, e) for g, e in zip(got, expected))
    return isinstance(got, type(expected))


SYSTEM = "You are a careful assistant. Answer briefly and describe the image when there is one. " * 3


def conversation(index: int, image_files: list[str]) -> list[dict]:
    text = ["Hello!", "What is in this picture?", "How many circles are there?", "Describe the image in detail.",
            "The quick brown fox", "Paris is the capital of", "Please answer the question", "How can I help you"][index % 8]
    content = [{"type": "text", "text": text}]
    if index % 3 == 1:
        content.insert(0, {"type": "image", "image": image_files[index % len(image_files)]})
    messages = [{"role": "user", "content": content}]
    return [{"role": "system", "content": SYSTEM}] + messages if index % 2 else messages


def alone(bot: Assistant) -> Assistant:
    """An assistant over the same weights with its own engine and caches."""
    return Assistant(bot.model, bot.tokenizer, bot.config)


def run_together(bot: Assistant, jobs: list) -> list:
    """Run ``jobs`` (callables) in threads released at the same moment; return their results in order."""
    results: list = [None] * len(jobs)
    barrier = threading.Barrier(len(jobs))

    def work(index: int) -> None:
        barrier.wait()
        try:
            results[index] = jobs[index]()
        except Exception as error:  # noqa: BLE001 - compared by the test
            results[index] = error

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def test_eight_concurrent_greedy_requests_each_equal_their_solo_reply(fresh_assistant, image_files):
    lengths = [40, 25, 33, 40, 18, 40, 29, 36]  # different lengths: rows leave and the batch shrinks
    solo = alone(fresh_assistant)
    expected = [solo.chat(conversation(i, image_files), max_new_tokens=n) for i, n in enumerate(lengths)]
    jobs = [lambda i=i, n=n: fresh_assistant.chat(conversation(i, image_files), max_new_tokens=n) for i, n in enumerate(lengths)]
    assert same_reply(fresh_assistant, run_together(fresh_assistant, jobs), expected)
    assert fresh_assistant._engine.peak_batch >= 4  # they were decoded together, not one after another


def test_seeded_sampling_and_a_forced_tool_call_under_load_equal_their_solo_runs(make_config, image_files):
    config = make_config()
    config.llm.max_context_tokens = 4096  # the tiny tokenizer spends many tokens on the tools block
    fresh_assistant = Assistant.from_config(config)

    def add(a: int, b: int) -> int:
        """Add two numbers.

        Args:
            a: The first number.
            b: The second number.
        """
        return a + b

    def tool_turn(bot: Assistant) -> list[dict]:
        events = bot.stream_events(conversation(0, image_files), tools=[add], tool_choice="add", max_new_tokens=200)
        return [call["function"] for call in [e for e in events if isinstance(e, AssistantTurn)][0].message["tool_calls"]]

    def sampled(bot: Assistant, seed: int) -> str:
        return bot.chat(conversation(seed, image_files), max_new_tokens=30, temperature=1.2, top_p=0.9, seed=seed)

    solo = alone(fresh_assistant)
    expected = [tool_turn(solo)] + [sampled(solo, seed) for seed in range(4)]
    jobs = [lambda: tool_turn(fresh_assistant)] + [lambda seed=seed: sampled(fresh_assistant, seed) for seed in range(4)]
    results = run_together(fresh_assistant, jobs)
    assert results == expected
    assert results[0][0]["name"] == "add" and '"b"' in results[0][0]["arguments"]


def test_cancelling_one_stream_ends_only_that_stream(fresh_assistant, image_files):
    solo = alone(fresh_assistant)
    expected = [solo.chat(conversation(i, image_files), max_new_tokens=40) for i in range(3)]
    cancel = threading.Event()
    cancelled_turn: list[AssistantTurn] = []

    def cancelled_job() -> str:
        pieces = []
        for event in fresh_assistant.stream_events(conversation(5, image_files), cancel=cancel, max_new_tokens=200):
            if isinstance(event, AssistantTurn):
                cancelled_turn.append(event)
            elif len(pieces) < 3:
                pieces.append(event)
                if len(pieces) == 3:
                    cancel.set()
        return "cancelled"

    jobs = [cancelled_job] + [lambda i=i: fresh_assistant.chat(conversation(i, image_files), max_new_tokens=40) for i in range(3)]
    results = run_together(fresh_assistant, jobs)
    assert same_reply(fresh_assistant, results[1:], expected)
    assert cancelled_turn[0].finish_reason == "cancelled" and cancelled_turn[0].completion_tokens < 200


def test_a_reader_that_walks_away_frees_its_row(fresh_assistant):
    stream = fresh_assistant.stream([{"role": "user", "content": "Hello!"}], max_new_tokens=300)
    next(stream)
    stream.close()
    deadline = time.monotonic() + 10
    while fresh_assistant._engine.active and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fresh_assistant._engine.active == 0
    assert fresh_assistant.stats.generated_tokens < 300


def test_a_failing_request_does_not_disturb_the_others(fresh_assistant, image_files, monkeypatch):
    solo = alone(fresh_assistant)
    expected = solo.chat(conversation(0, image_files), max_new_tokens=30)
    original = fresh_assistant._embed_suffix

    def embed(prompt, start):
        if "fox" in fresh_assistant.tokenizer.decode([i for i in prompt.input_ids if i >= 0]):
            raise RuntimeError("encoder exploded")
        return original(prompt, start)

    monkeypatch.setattr(fresh_assistant, "_embed_suffix", embed)
    jobs = [lambda: fresh_assistant.chat(conversation(0, image_files), max_new_tokens=30),
            lambda: fresh_assistant.chat(conversation(4, image_files), max_new_tokens=30)]
    results = run_together(fresh_assistant, jobs)
    assert same_reply(fresh_assistant, results[0], expected)
    assert isinstance(results[1], RuntimeError) and "exploded" in str(results[1])


def test_a_second_turn_and_a_shared_system_prompt_are_not_prefilled_again(fresh_assistant):
    bot = fresh_assistant
    first = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hello!"}]
    reply = bot.chat(first, max_new_tokens=10, session="a")
    prompt_tokens = len(bot.prepare(first, 10).input_ids)
    stats = dataclasses.replace(bot.stats)
    bot.chat(first + [{"role": "assistant", "content": reply}, {"role": "user", "content": "And then?"}], max_new_tokens=5, session="a")
    assert bot.stats.reused_tokens - stats.reused_tokens >= prompt_tokens  # its own previous turn
    assert len(bot._engine.pool) == 1  # the session's entry was replaced, not duplicated

    other = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "What is in this picture?"}]
    stats = dataclasses.replace(bot.stats)
    bot.chat(other, max_new_tokens=5, session="b")
    shared = common_prefix_length(bot.prepare(first, 5).position_keys(), bot.prepare(other, 5).position_keys())
    assert shared > 100 and bot.stats.reused_tokens - stats.reused_tokens == shared  # b reused a's system prompt


def test_the_pool_is_bounded_and_an_evicted_session_gets_the_same_reply(make_config):
    bot = Assistant.from_config(make_config(engine=EngineConfig(kv_pool_mb=0.05)))
    conversations = [[{"role": "user", "content": f"{word} The quick brown fox jumps over the lazy dog."}]
                     for word in ("Hello!", "Paris", "Describe", "Please")]
    replies = [bot.chat(messages, max_new_tokens=12) for messages in conversations]
    assert bot._engine.pool.nbytes <= 0.05 * 2**20 and bot._engine.pool.evictions > 0
    assert [bot.chat(messages, max_new_tokens=12) for messages in conversations] == replies


def test_a_stream_that_started_before_reset_cache_does_not_leave_a_stale_cache(fresh_assistant, image_files):
    """The connector changes mid-stream: what the stream cached was computed with the old weights."""
    messages = [{"role": "user", "content": [{"type": "image", "image": image_files[0]}, {"type": "text", "text": "Hello!"}]}]
    stream = fresh_assistant.stream(messages, max_new_tokens=30)
    first = next(stream)
    with torch.no_grad():
        for parameter in fresh_assistant.model.connectors.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.5)
    fresh_assistant.reset_cache()
    "".join(stream)  # finishes after the reset: its cache must not be kept
    assert len(fresh_assistant._engine.pool) == 0
    assert first
    expected = alone(fresh_assistant).chat(messages, max_new_tokens=30)
    assert same_reply(fresh_assistant, fresh_assistant.chat(messages, max_new_tokens=30), expected)


def test_an_error_while_picking_a_token_ends_only_that_request_and_the_engine_keeps_serving(fresh_assistant, image_files):
    from assistant.generation import SamplingOptions

    class ExplodingGrammar:
        def mask(self, logits):
            raise RuntimeError("grammar exploded")

        def accept(self, token):
            pass

    expected = alone(fresh_assistant).chat(conversation(0, image_files), max_new_tokens=30)
    prompt = fresh_assistant.prepare(conversation(2, image_files), 10)

    def broken() -> list[int]:
        return list(fresh_assistant._engine.submit(prompt.position_keys(), lambda start: fresh_assistant._embed_suffix(prompt, start),
                                                   SamplingOptions(10), threading.Event(), constraint=ExplodingGrammar()))

    results = run_together(fresh_assistant, [lambda: fresh_assistant.chat(conversation(0, image_files), max_new_tokens=30), broken])
    assert same_reply(fresh_assistant, results[0], expected)
    assert isinstance(results[1], RuntimeError) and "exploded" in str(results[1])
    assert same_reply(fresh_assistant, fresh_assistant.chat(conversation(0, image_files), max_new_tokens=30), expected)  # the worker lives on


def test_a_vanishing_temperature_decodes_greedily_and_a_bad_seed_is_refused(fresh_assistant):
    from assistant.errors import AssistantError

    messages = [{"role": "user", "content": "Hello!"}]
    assert fresh_assistant.chat(messages, max_new_tokens=12, temperature=1e-40) == fresh_assistant.chat(messages, max_new_tokens=12)
    with pytest.raises(AssistantError, match="seed"):
        fresh_assistant.chat(messages, seed=2**64)
    assert not fresh_assistant._active  # nothing left behind by the refused request


@pytest.mark.parametrize("value", [{"max_batch": 0}, {"prefill_chunk": 0}, {"kv_pool_mb": -1}])
def test_bad_engine_settings_are_refused(value):
    from assistant.errors import AssistantError

    with pytest.raises(AssistantError, match="engine"):
        EngineConfig(**value)


def test_prompts_prefilled_together_from_different_cached_prefixes_equal_their_solo_runs(fresh_assistant, image_files):
    """One prefill pass over rows whose cached pasts differ in length (one long, one short, one none)."""
    if fresh_assistant.config.llm.serving == "llama_cpp":
        pytest.skip("the PyTorch engine's grouped prefill (llama.cpp prefills one prompt per call)")
    first_turns = [conversation(1, image_files), [{"role": "user", "content": "Hi"}]]
    replies = [fresh_assistant.chat(messages, max_new_tokens=12) for messages in first_turns]
    follow_ups = [messages + [{"role": "assistant", "content": reply}, {"role": "user", "content": "And then?"}]
                  for messages, reply in zip(first_turns, replies)] + [conversation(3, image_files)]
    solo = alone(fresh_assistant)
    expected = [solo.chat(messages, max_new_tokens=25) for messages in follow_ups]

    engine, groups = fresh_assistant._engine, []
    prefill_group = engine._prefill_group

    def recording(group, sizes):
        groups.append(sorted(sequence.cursor for sequence in group))
        prefill_group(group, sizes)

    engine._prefill_group = recording
    slow = fresh_assistant.model.llm.register_forward_pre_hook(lambda *args: time.sleep(0.1))
    try:
        busy = fresh_assistant.stream([{"role": "user", "content": "Hello!"}], max_new_tokens=20)
        next(busy)  # the worker is now in slow decode steps: the three below arrive during one of them
        jobs = [lambda m=m: fresh_assistant.chat(m, max_new_tokens=25) for m in follow_ups]
        assert run_together(fresh_assistant, jobs) == expected
        busy.close()
    finally:
        slow.remove()
    past_lengths = next(group for group in groups if len(group) == 3)
    assert len(set(past_lengths)) == 3  # one pass over three rows with cached pasts of different lengths
