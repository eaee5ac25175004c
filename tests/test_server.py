"""The OpenAI-compatible server, run by uvicorn on a background thread over tiny random assistants.

Clients are the official ``openai`` package (sync and async) and plain ``httpx`` for what the SDK
cannot send (malformed JSON, oversized or chunked bodies, disconnects). The answers are compared
with the Python API's on the same request, so the server adds nothing to and loses nothing of them.
Remote image fetching itself is tested in ``test_remote_media.py``.
"""

from __future__ import annotations

import ast
import asyncio
import base64
import itertools
import json
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import httpx
import jsonschema
import openai
import pytest

from assistant import Assistant, AssistantError
from assistant.serving import ServerConfig, create_app
from assistant.serving.background import serve_in_thread
from assistant.tools.events import AssistantTurn, TextDelta

MODEL = "multimodal-assistant"
HELLO = [{"role": "user", "content": "Hello"}]
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city.", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "maxLength": 12}, "unit": {"type": "string", "enum": ["c", "f"]}},
    "required": ["city", "unit"]}}}


class Recording:
    """An assistant that records the cancel event the server hands each generation."""

    def __init__(self, bot: Assistant) -> None:
        self.bot = bot
        self.cancels: list[threading.Event] = []

    def __getattr__(self, name):
        return getattr(self.bot, name)

    def stream_events(self, messages, cancel=None, **options):
        self.cancels.append(cancel)
        self.options = options
        return self.bot.stream_events(messages, cancel=cancel, **options)


@contextmanager
def slow_steps(bot: Assistant, delay_s: float):
    """Every forward pass of the LLM (one prefill chunk or one decode step of the batch) takes ``delay_s`` longer."""
    handle = bot.model.llm.register_forward_pre_hook(lambda module, args: time.sleep(delay_s))
    try:
        yield
    finally:
        handle.remove()


def eventually(condition, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture(scope="module")
def bot(make_config) -> Assistant:
    config = make_config()
    config.llm.max_context_tokens = 4096  # the tiny tokenizer spends many tokens on the tools block
    return Assistant.from_config(config)


@pytest.fixture(scope="module")
def url(bot):
    with serve_in_thread(create_app(bot)) as base:
        yield base


@pytest.fixture(scope="module")
def client(url) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def data_url(path: str) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def direct(bot: Assistant, messages, **options) -> tuple[str, AssistantTurn]:
    events = list(bot.stream_events(messages, **options))
    return "".join(e.text for e in events if isinstance(e, TextDelta)), events[-1]


def post(url: str, body, **kwargs) -> httpx.Response:
    content = json.dumps(body) if isinstance(body, (dict, list)) else body  # str, bytes or an iterator of bytes
    headers = {"content-type": "application/json", **kwargs.pop("headers", {})}
    return httpx.post(f"{url}/v1/chat/completions", content=content, headers=headers, timeout=kwargs.pop("timeout", 30), **kwargs)


def error_of(response: httpx.Response) -> dict:
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


# ---------------------------------------------------------------- answers


def test_sync_completion_equals_the_python_api(bot, client):
    reply = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=12)
    text, turn = direct(bot, HELLO, max_new_tokens=12)
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == text and choice.finish_reason == turn.finish_reason
    assert choice.finish_reason in ("stop", "length") and reply.model == MODEL and reply.object == "chat.completion"
    usage = reply.usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (turn.prompt_tokens, turn.completion_tokens) != (0, 0)
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens and usage.completion_tokens <= 12


def test_sampling_options_reach_the_model(bot):
    options = dict(temperature=1.0, top_p=0.9, seed=7)
    recording = Recording(bot)
    with serve_in_thread(create_app(recording)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        reply = client.chat.completions.create(model=MODEL, messages=HELLO, max_completion_tokens=10, max_tokens=99,
                                               stop=["zz", "q"], prompt_cache_key="conversation-1", **options)
    assert recording.options == {"tools": None, "tool_choice": "auto", "parallel_tool_calls": True, "max_new_tokens": 10,
                                 "stop": ["zz", "q"], **options}  # prompt_cache_key is accepted and not needed
    assert reply.choices[0].message.content == direct(bot, HELLO, max_new_tokens=10, stop=["zz", "q"], **options)[0]
    assert "q" not in reply.choices[0].message.content


def test_async_streaming_matches_the_plain_answer_and_reports_usage(client, url):
    plain = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=16)

    async def stream():
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0) as aclient:
            chunks = await aclient.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=16, stream=True,
                                                           stream_options={"include_usage": True})
            return [chunk async for chunk in chunks]

    chunks = asyncio.run(stream())
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == plain.choices[0].message.content
    finishing = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishing == [plain.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.model_dump() == plain.usage.model_dump()
    assert all(c.usage is None for c in chunks[:-1]) and len({c.id for c in chunks}) == 1


def test_streamed_tool_call_merges_by_index_into_valid_arguments(client):
    request = dict(model=MODEL, messages=[{"role": "user", "content": "Weather in Paris?"}], max_tokens=120, tools=[WEATHER],
                   tool_choice={"type": "function", "function": {"name": "get_weather"}})
    merged: dict[int, dict] = {}
    finish = None
    for chunk in client.chat.completions.create(stream=True, **request):
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        for delta in choice.delta.tool_calls or []:
            call = merged.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
            call["id"] = delta.id or call["id"]
            call["name"] += (delta.function.name or "") if delta.function else ""
            call["arguments"] += (delta.function.arguments or "") if delta.function else ""
    assert finish == "tool_calls" and list(merged) == [0]
    call = merged[0]
    assert call["name"] == "get_weather" and call["id"].startswith("call_")
    jsonschema.validate(json.loads(call["arguments"]), WEATHER["function"]["parameters"])
    plain = client.chat.completions.create(**request).choices[0]
    assert plain.finish_reason == "tool_calls" and plain.message.content is None
    assert [(c.function.name, c.function.arguments) for c in plain.message.tool_calls] == [(call["name"], call["arguments"])]


def test_an_image_as_a_data_url_is_seen(bot, client, image_files):
    question = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(image_files[0])}},
                                             {"type": "text", "text": "What is in this picture?"}]}]
    reply = client.chat.completions.create(model=MODEL, messages=question, max_tokens=8)
    text, turn = direct(bot, [{"role": "user", "content": [{"type": "image", "image": data_url(image_files[0])},
                                                           {"type": "text", "text": "What is in this picture?"}]}], max_new_tokens=8)
    text_only = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "What is in this picture?"}],
                                               max_tokens=8)
    assert reply.choices[0].message.content == text
    assert reply.usage.prompt_tokens == turn.prompt_tokens > text_only.usage.prompt_tokens  # the image's tokens were added


def test_models_health_and_unknown_fields(client, url):
    assert [model.id for model in client.models.list()] == [MODEL] and client.models.retrieve(MODEL).id == MODEL
    assert httpx.get(f"{url}/health").json() == {"status": "ok", "model": MODEL, "running": 0, "waiting": 0}
    reply = post(url, {"model": MODEL, "messages": HELLO, "max_tokens": 3, "frequency_penalty": 0.5, "user": "u", "whatever": [1]})
    assert reply.status_code == 200 and reply.json()["choices"][0]["finish_reason"] in ("stop", "length")


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("body, status, param, words", [
    ('{"messages": [', 400, None, "JSON"),
    ({"model": MODEL}, 400, "messages", "Missing"),
    ({"messages": "hi"}, 400, "messages", "list"),
    ({"messages": HELLO, "temperature": "hot"}, 400, "temperature", "number"),
    ({"messages": HELLO, "max_tokens": "5"}, 400, "max_tokens", "integer"),
    ({"messages": HELLO, "max_tokens": 0}, 400, "max_tokens", "greater"),
    ({"messages": HELLO, "stream": "yes"}, 400, "stream", "boolean"),
    ({"messages": HELLO, "stop": 5}, 400, "stop", "string"),
    ({"messages": HELLO, "tools": [{"type": "function", "function": {"name": 3}}]}, 400, "tools[0].function.name", "string"),
    ({"messages": HELLO, "n": 2}, 400, "n", "n=2"),
    ({"messages": HELLO, "model": "gpt-4o"}, 404, "model", "gpt-4o"),
    ({"messages": HELLO, "tools": [{"type": "function", "function": {"name": "bad", "parameters": {"type": "object", "properties": {
        "x": {"type": "strin"}}}}}]}, 400, "tools[0].function.parameters", "'bad'"),
    ({"messages": HELLO, "tool_choice": "missing_tool", "tools": [WEATHER]}, 400, "tool_choice", "missing_tool"),
    ({"messages": [{"role": "user", "content": [{"type": "video_url", "video_url": "x"}]}]}, 400, "messages", "video_url"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]},
     400, "messages", "disabled"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}]}]},
     400, None, "audio"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, 400, None, "wizard"),
    ({"messages": HELLO, "max_tokens": 100000}, 400, None, "context"),
    ({"messages": HELLO, "seed": 2**64}, 400, None, "seed"),
    ({"messages": HELLO, "tools": [WEATHER] * 129}, 400, "tools", "At most 128"),
    ({"messages": HELLO, "response_format": {"type": "xml"}}, 400, "response_format", "'xml' is not supported"),
    ({"messages": HELLO, "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "strin"}}}},
     400, "response_format.json_schema.schema", "not a valid JSON Schema"),
    ({"messages": HELLO, "tools": [WEATHER], "response_format": {"type": "json_object"}}, 400, "response_format", "tools"),
    ({"messages": HELLO, "tools": [{"type": "function", "function": {"name": "huge", "parameters": {"type": "object", "properties": {
        f"p{i}": {"type": "string"} for i in range(6000)}}}}]}, 400, "tools[0].function.parameters", "characters"),
])
def test_bad_input_gets_an_openai_shaped_error_naming_the_field(url, body, status, param, words):
    response = post(url, body)
    error = error_of(response)
    assert response.status_code == status and error["param"] == param and words in error["message"]
    assert error["type"] == "invalid_request_error"


def test_values_openai_accepts_are_accepted(url):
    for extra in ({"n": None}, {"top_p": 0}, {"temperature": 1e-40}):
        response = post(url, {"messages": HELLO, "max_tokens": 3, **extra})
        assert response.status_code == 200, (extra, response.text)


def test_too_many_images_and_odd_requests_are_refused(url, image_files, bot):
    limit = bot.config.media.max_items_per_request
    parts = [{"type": "image_url", "image_url": {"url": data_url(image_files[0])}}] * (limit + 1)
    response = post(url, {"messages": [{"role": "user", "content": parts + [{"type": "text", "text": "hi"}]}]})
    assert response.status_code == 400 and "too many media" in error_of(response)["message"]
    response = post(url, json.dumps({"messages": HELLO}), headers={"content-type": "text/plain"})
    assert response.status_code == 415 and error_of(response)["code"] == "unsupported_media_type"
    for response, status in ((httpx.get(f"{url}/v1/nothing"), 404), (httpx.get(f"{url}/v1/chat/completions"), 405),
                             (httpx.get(f"{url}/v1/models/other"), 404)):
        assert response.status_code == status and error_of(response)
    assert post(url, {"messages": HELLO, "max_tokens": 2}).status_code == 200  # and the server still answers


def test_oversized_bodies_get_413_whether_declared_or_streamed(bot):
    with serve_in_thread(create_app(bot, ServerConfig(max_body_mb=0.01))) as url:  # about 10 kB
        big = json.dumps({"messages": [{"role": "user", "content": "x" * 20_000}]})
        declared = post(url, big)
        streamed = post(url, (big[i:i + 1000].encode() for i in range(0, len(big), 1000)))  # chunked: no Content-Length
        small = post(url, {"messages": HELLO, "max_tokens": 2})
    assert declared.status_code == streamed.status_code == 413
    assert error_of(declared)["code"] == error_of(streamed)["code"] == "request_too_large"
    assert small.status_code == 200


class Scripted:
    """A stand-in assistant whose generation yields ``events`` and then raises ``error`` (if any)."""

    def __init__(self, events, error: Exception | None = None) -> None:
        self.events, self.error = events, error

    def stream_events(self, *args, **kwargs):
        def generation():
            yield from self.events
            if self.error is not None:
                raise self.error

        return generation()


def test_an_internal_error_is_a_500_without_a_stack_trace():
    with serve_in_thread(create_app(Scripted([], RuntimeError("secret internals /home/user/model.py")))) as url:
        response = post(url, {"messages": HELLO})
        health = httpx.get(f"{url}/health").json()
    error = error_of(response)
    assert response.status_code == 500 and error["type"] == "server_error"
    assert "secret" not in response.text and "Traceback" not in response.text and health["running"] == 0


def test_failures_after_streaming_began_end_the_stream_with_an_error_event():
    stopped = AssistantTurn({"role": "assistant", "content": "par"}, "cancelled", 3, 1)  # not the client's doing
    for events, error in (([TextDelta("par"), stopped], None), ([TextDelta("par")], RuntimeError("secret internals"))):
        with serve_in_thread(create_app(Scripted(events, error))) as url:
            plain = post(url, {"messages": HELLO})
            raw = post(url, {"messages": HELLO, "stream": True}).text
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
            with pytest.raises(openai.APIError):
                list(client.chat.completions.create(model=MODEL, messages=HELLO, stream=True))
        assert plain.status_code == (503 if error is None else 500) and error_of(plain)["type"] == "server_error"
        assert '"content":"par"' in raw and '"error"' in raw and "[DONE]" not in raw
        assert "cancelled" not in raw + plain.text and "secret" not in raw + plain.text


def test_command_line_flags_build_the_server_config():
    from assistant.serve import build_parser, server_config
    from plugins.registry import select_plugins

    args = build_parser().parse_args(["--api-key", "a", "--api-key", "b", "--allow-image-host", "Images.Example.com.",
                                      "--plugins", "calculator,save_note", "--plugins", "caption_image",
                                      "--max-concurrent", "2", "--served-model-name", "mine"])
    config = server_config(args, environ={"MMA_API_KEYS": "c, d,"})
    assert config.api_keys == ["a", "b", "c", "d"] and config.allow_image_hosts == ["images.example.com"]
    assert config.plugins == ["calculator", "save_note", "caption_image"]
    assert (config.max_concurrent, config.max_queue, config.served_model_name) == (2, 64, "mine")
    assert server_config(build_parser().parse_args([]), environ={}) == ServerConfig()
    assert [tool.name for tool in select_plugins(config.plugins)] == config.plugins
    with pytest.raises(AssistantError, match="nope"):
        select_plugins(["calculator", "nope"])
    with pytest.raises(AssistantError, match="max_concurrent"):
        ServerConfig(max_concurrent=0)


def test_remote_image_urls_that_point_inside_are_refused_even_when_allow_listed(bot):
    with serve_in_thread(create_app(bot, ServerConfig(allow_image_hosts=["127.0.0.1", "localhost"]))) as url:
        for target in (f"{url}/health", url.replace("127.0.0.1", "localhost") + "/health", "ftp://127.0.0.1/a.png",
                       "http://169.254.169.254/latest/meta-data"):
            response = post(url, {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": target}}]}]})
            assert response.status_code == 400 and error_of(response)["param"] == "messages", target
            assert "allow-list" in response.text or "non-public" in response.text or "scheme" in response.text


def test_an_allowed_remote_image_is_fetched_through_the_fetcher(bot, image_files):
    fetched = []

    def fetch(url: str) -> bytes:
        fetched.append(url)
        return Path(image_files[1]).read_bytes()

    with serve_in_thread(create_app(bot, fetch_image=fetch)) as url:
        message = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://images.test/b.png"}}]}]
        response = post(url, {"messages": message, "max_tokens": 4})
    text, _ = direct(bot, [{"role": "user", "content": [{"type": "image", "image": Path(image_files[1]).read_bytes()}]}],
                     max_new_tokens=4)
    assert response.status_code == 200 and fetched == ["https://images.test/b.png"]
    assert response.json()["choices"][0]["message"]["content"] == text


# ---------------------------------------------------------------- keys, admission, disconnects


def test_api_keys_are_required_on_v1_but_not_on_health(bot):
    with serve_in_thread(create_app(bot, ServerConfig(api_keys=["sk-one", "sk-two"]))) as url:
        missing = httpx.get(f"{url}/v1/models")
        wrong = httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer sk-three"})
        post_without = post(url, {"messages": HELLO})
        health = httpx.get(f"{url}/health")
        keyed = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-two", max_retries=0)
        reply = keyed.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2)
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{url}/v1", api_key="sk-on", max_retries=0).models.list()
    for response in (missing, wrong, post_without):
        assert response.status_code == 401 and error_of(response)["code"] == "invalid_api_key"
    assert health.status_code == 200 and reply.choices[0].finish_reason in ("stop", "length")


def test_a_burst_beyond_the_queue_gets_429_with_retry_after_and_nothing_breaks(bot):
    with slow_steps(bot, 0.02), serve_in_thread(create_app(bot, ServerConfig(max_concurrent=1, max_queue=2))) as url:

        async def burst():
            async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=200)) as http:
                body = {"model": MODEL, "messages": HELLO, "max_tokens": 8}
                return await asyncio.gather(*[http.post(f"{url}/v1/chat/completions", json=body) for _ in range(200)])

        responses = asyncio.run(burst())
        health = httpx.get(f"{url}/health").json()
        after = post(url, {"messages": HELLO, "max_tokens": 2})
    statuses = [response.status_code for response in responses]
    refused = [response for response in responses if response.status_code == 429]
    assert set(statuses) == {200, 429} and 3 <= statuses.count(200) < 100
    assert all(r.headers["retry-after"] == "1" and error_of(r)["code"] == "rate_limit_exceeded" for r in refused)
    assert health["running"] == health["waiting"] == 0 and after.status_code == 200


def test_concurrent_requests_each_get_their_own_answer(bot, url):
    prompts = ["Hello", "Paris", "What is in this picture?", "Describe the image in detail."] * 2
    expected = {prompt: direct(bot, [{"role": "user", "content": prompt}], max_new_tokens=24)[0] for prompt in prompts}

    async def together():
        async with httpx.AsyncClient(timeout=60) as http:
            return await asyncio.gather(*[http.post(f"{url}/v1/chat/completions", json={
                "messages": [{"role": "user", "content": prompt}], "max_tokens": 24}) for prompt in prompts])

    responses = asyncio.run(together())
    assert [r.status_code for r in responses] == [200] * len(prompts)
    assert [r.json()["choices"][0]["message"]["content"] for r in responses] == [expected[p] for p in prompts]


def test_a_client_that_disconnects_mid_stream_cancels_its_generation(fresh_assistant):
    recording = Recording(fresh_assistant)
    with slow_steps(fresh_assistant, 0.02), serve_in_thread(create_app(recording)) as url:  # 300 tokens would take 6 s
        body = {"model": MODEL, "messages": HELLO, "max_tokens": 300, "stream": True}
        with httpx.Client(timeout=30) as http, http.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
            received = list(itertools.islice((line for line in response.iter_lines() if line.startswith("data:")), 4))
        assert eventually(lambda: recording.cancels[-1].is_set())
        assert eventually(lambda: httpx.get(f"{url}/health").json()["running"] == 0)  # the slot is free again
        generated = fresh_assistant.stats.generated_tokens
        time.sleep(0.3)
    assert len(received) == 4 and fresh_assistant.stats.generated_tokens == generated < 100


def test_a_client_that_gives_up_on_a_plain_answer_cancels_its_generation(fresh_assistant):
    recording = Recording(fresh_assistant)
    with slow_steps(fresh_assistant, 0.02), serve_in_thread(create_app(recording)) as url:
        with pytest.raises(httpx.ReadTimeout):
            post(url, {"messages": HELLO, "max_tokens": 300}, timeout=0.5)
        assert eventually(lambda: recording.cancels[-1].is_set())
        assert eventually(lambda: httpx.get(f"{url}/health").json()["running"] == 0)
        generated = fresh_assistant.stats.generated_tokens
        time.sleep(0.3)
    assert fresh_assistant.stats.generated_tokens == generated < 150


# ---------------------------------------------------------------- server-side plugins


def test_server_side_plugins_run_for_requests_without_tools_and_confirmation_tools_are_refused(bot):
    from plugins import plugin

    looked_up, deleted = [], []

    @plugin
    def lookup(word: Literal["paris", "rome"]) -> str:  # short values: a random model's call ends within max_tokens
        """Look a word up.

        Args:
            word: The word.
        """
        looked_up.append(word)
        return "a small town"

    @plugin(requires_confirmation=True)
    def delete_files(pattern: Literal["all", "old"]) -> str:
        """Delete files.

        Args:
            pattern: Which files.
        """
        deleted.append(pattern)
        return "deleted"

    config = ServerConfig(plugin_max_steps=1)
    with serve_in_thread(create_app(bot, config, plugin_tools=[lookup, delete_files])) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        answers = [client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Paris?"}], max_tokens=80,
                                                  tool_choice={"type": "function", "function": {"name": name}})
                   for name in ("lookup", "delete_files")]
        own_tools = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=120, tools=[WEATHER],
                                                   tool_choice="required")
    single_step = direct(bot, [{"role": "user", "content": "Paris?"}], max_new_tokens=80)[1]
    assert looked_up[0] in ("paris", "rome") and deleted == []
    for answer in answers:
        assert answer.choices[0].message.tool_calls is None and answer.choices[0].finish_reason in ("stop", "length")
        assert answer.usage.prompt_tokens > single_step.prompt_tokens  # several steps, each with the tools block
    assert [call.function.name for call in own_tools.choices[0].message.tool_calls] == ["get_weather"]  # the client's own


def test_plugin_names_are_resolved_by_launch_server_not_inside_assistant(bot):
    from assistant.serve import main

    with pytest.raises(AssistantError, match="plugin_tools"):
        create_app(bot, ServerConfig(plugins=["calculator"]))
    assert main(["--plugins", "calculator"]) == 2  # refused before any model loads; launch_server.py resolves them
    source = (Path(__file__).parents[1] / "launch_server.py").read_text()
    assert "main(resolve_plugins=select_plugins)" in source


def test_the_server_imports_no_plugins_training_or_gradio_at_module_level():
    root = Path(__file__).parents[1] / "assistant"
    for source in [root / "serve.py", *(root / "serving").glob("*.py")]:
        for node in ast.walk(ast.parse(source.read_text())):  # anywhere: launch_server.py brings the registry
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(
                node, ast.ImportFrom) else []
            assert not {name.split(".")[0] for name in names} & {"plugins", "training", "gradio"}, source
