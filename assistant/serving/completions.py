"""``/v1/chat/completions`` over an ``Assistant``: checks, admission, one worker per generation, replies.

A request is checked (model name, ``n``, options, tool schemas, ``tool_choice``), admitted (or
refused with 429), and then generated in a ``GenerationWorker`` thread: the thread converts the
OpenAI messages (fetching remote images when the server allows them) and iterates
``Assistant.stream_events``, or ``Assistant.run_stream`` when server-side plugins answer a request
that brought no tools of its own. Input errors surface before any answer is sent, as 400s.

The answer is one ``chat.completion`` or an SSE stream of ``chat.completion.chunk``: a role delta,
content deltas, ``tool_calls`` deltas keyed by ``index`` (the name first, then the arguments), a
chunk with the ``finish_reason``, the usage chunk with empty ``choices`` when
``stream_options.include_usage``, then ``data: [DONE]``. A client that disconnects cancels its
generation: while a plain answer is awaited through ``DisconnectWatch``, while streaming through
``EventStreamResponse``, which stops the worker however the response ends. A generation stopped by
anything else (never a client's choice) is reported as an error, never as ``finish_reason: cancelled``.
This module knows nothing about authentication or how the server is started.
"""

from __future__ import annotations

import json
import logging
from typing import Any, AsyncIterator, Callable

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from jsonschema import Draft202012Validator, SchemaError
from jsonschema.validators import validator_for

from assistant.errors import AssistantError
from assistant.openai_messages import from_openai_messages
from assistant.serving.admission import Admission, Overloaded
from assistant.serving.config import ServerConfig
from assistant.serving.disconnect import ClientGone, DisconnectWatch
from assistant.serving.errors import APIError
from assistant.serving.protocol import (
    MAX_STOP_STRINGS, AssistantMessage, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Choice,
    ChunkChoice, Usage, completion_id, now,
)
from assistant.serving.worker import GenerationWorker
from assistant.tools.events import AssistantTurn, TextDelta, ToolCallEvent
from assistant.tools.spec import parse_tool_choice, tool_specs

logger = logging.getLogger(__name__)

MAX_TOOLS = 128  # tools one request may offer
MAX_SCHEMA_CHARS = 100_000  # JSON size of one tool's parameters schema (checking a huge one takes seconds)
INTERRUPTED = "The generation was stopped before it finished (the server is shutting down or the engine dropped it); retry"


class Answer:
    """What the events of one request add up to, and the deltas a stream sends for each event."""

    def __init__(self, surface_calls: bool) -> None:
        self.surface_calls = surface_calls  # False: the calls were the server's own plugins
        self.text: list[str] = []
        self.calls: list[dict[str, Any]] = []
        self.usage = Usage()
        self.turn: AssistantTurn | None = None

    def add(self, event: Any) -> list[dict[str, Any]]:
        if isinstance(event, TextDelta) and event.text:
            self.text.append(event.text)
            return [{"content": event.text}]
        if isinstance(event, ToolCallEvent) and self.surface_calls:
            if event.call.error:  # e.g. cut off by max_tokens: nothing a client could run
                logger.info("dropping a tool call no client could run: %s", event.call.error)
                return []
            call, index = event.call.to_openai(), len(self.calls)
            self.calls.append(call)
            return [{"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                                     "function": {"name": call["function"]["name"], "arguments": ""}}]},
                    {"tool_calls": [{"index": index, "function": {"arguments": call["function"]["arguments"]}}]}]
        if isinstance(event, AssistantTurn):
            self.turn = event
            self.usage.add(event.prompt_tokens, event.completion_tokens)
        return []

    @property
    def interrupted(self) -> bool:
        return self.turn is None or self.turn.finish_reason == "cancelled"

    @property
    def finish_reason(self) -> str:
        reason = self.turn.finish_reason if self.turn is not None else "stop"
        return "stop" if reason == "tool_calls" and not self.calls else reason

    def message(self) -> AssistantMessage:
        text = "".join(self.text)
        return AssistantMessage(content=text or (None if self.calls else ""), tool_calls=self.calls or None)


class EventStreamResponse(StreamingResponse):
    """An SSE response that runs ``on_close`` however it ends: finished, failed or the client gone."""

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[str], on_close: Callable[[], None]) -> None:
        super().__init__(content, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._on_close = on_close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()
            await self.body_iterator.aclose()


class ChatCompletions:
    """Serves chat completions for one assistant under one server config."""

    def __init__(self, assistant: Any, config: ServerConfig, admission: Admission,
                 fetch_image: Callable[[str], bytes] | None = None, plugin_tools: list[Any] | None = None) -> None:
        self.assistant = assistant
        self.config = config
        self.admission = admission
        self.fetch_image = fetch_image
        self.plugin_tools = list(plugin_tools or [])
        self._plugin_specs = tool_specs(self.plugin_tools)
        self.live: set[GenerationWorker] = set()

    async def create(self, request: Request, body: ChatCompletionRequest) -> Response:
        self._check_options(body)
        tools = await run_in_threadpool(self._checked_tools, body)  # schema checks never stall the event loop
        server_side = bool(self.plugin_tools) and not tools and body.reply_schema() is None  # a JSON reply calls no plugin
        choice = body.tool_choice if body.tool_choice is not None else "auto"
        try:
            parse_tool_choice(choice, self._plugin_specs if server_side else tool_specs(tools))
        except AssistantError as error:
            raise APIError(400, str(error), param="tool_choice") from None
        answer = Answer(surface_calls=not server_side)
        worker, streaming = None, False
        async with DisconnectWatch(request.receive) as watch:
            try:
                await self._admit(watch)
                worker = self._start_worker(self._starter(body, tools, choice, server_side))
                watch.on_disconnect = worker.stop
                first = await watch.wait(worker.next())  # input errors arrive here, before any answer is sent
                if not body.stream:
                    return await self._complete(first, worker, watch, answer)
                streaming = True
            except ClientGone:
                logger.info("client disconnected before its answer; generation cancelled")
                return Response(status_code=499)
            except AssistantError as error:
                raise APIError(400, str(error)) from None
            finally:
                if worker is not None and not streaming:
                    worker.stop()
        return EventStreamResponse(self._chunks(first, worker, body, answer), on_close=worker.stop)

    # ------------------------------------------------------------ checks

    def _check_options(self, body: ChatCompletionRequest) -> None:
        if body.model is not None and body.model != self.config.served_model_name:
            raise APIError(404, f"The model {body.model!r} does not exist; this server serves {self.config.served_model_name!r}.",
                           param="model", code="model_not_found")
        if body.n not in (None, 1):
            raise APIError(400, f"n={body.n} is not supported: this server returns exactly one choice (n=1).", param="n",
                           code="unsupported_value")
        if body.logprobs:
            raise APIError(400, "logprobs are not supported by this server.", param="logprobs", code="unsupported_value")
        if body.response_format is not None and body.response_format.type not in ("text", "json_object", "json_schema"):
            raise APIError(400, f"response_format {body.response_format.type!r} is not supported; use 'text', 'json_object' "
                                "or 'json_schema'.", param="response_format", code="unsupported_value")
        stops = body.stop_strings()
        if len(stops) > MAX_STOP_STRINGS or not all(stops):
            raise APIError(400, f"stop takes at most {MAX_STOP_STRINGS} non-empty strings.", param="stop", code="invalid_value")

    def _checked_tools(self, body: ChatCompletionRequest) -> list[dict[str, Any]]:
        """The request's tools as OpenAI function dicts, each schema checked as JSON Schema (and so is a
        ``response_format`` schema, which goes without tools)."""
        schema = body.reply_schema()
        if schema is not None:
            where = "response_format.json_schema.schema"
            if len(json.dumps(schema)) > MAX_SCHEMA_CHARS:
                raise APIError(400, f"{where} is over {MAX_SCHEMA_CHARS} characters of JSON.", param=where, code="invalid_value")
            try:
                validator_for(schema, default=Draft202012Validator).check_schema(schema)
            except SchemaError as error:
                raise APIError(400, f"{where} is not a valid JSON Schema: {error.message}", param=where, code="invalid_value") from None
            if body.tools:
                raise APIError(400, "response_format json_object/json_schema cannot be combined with tools: the reply is "
                                    "either one JSON value or tool calls.", param="response_format", code="unsupported_value")
        if len(body.tools or []) > MAX_TOOLS:
            raise APIError(400, f"At most {MAX_TOOLS} tools may be offered in one request.", param="tools", code="invalid_value")
        tools = []
        for index, tool in enumerate(body.tools or []):
            schema = tool.function.parameters
            if schema is not None and len(json.dumps(schema)) > MAX_SCHEMA_CHARS:
                raise APIError(400, f"tools[{index}] ({tool.function.name!r}): parameters is over {MAX_SCHEMA_CHARS} characters "
                                    "of JSON.", param=f"tools[{index}].function.parameters", code="invalid_tool_schema")
            if schema is not None:
                try:
                    validator_for(schema, default=Draft202012Validator).check_schema(schema)
                except SchemaError as error:
                    raise APIError(400, f"tools[{index}] ({tool.function.name!r}): parameters is not a valid JSON Schema: "
                                        f"{error.message}", param=f"tools[{index}].function.parameters",
                                   code="invalid_tool_schema") from None
            tools.append(tool.openai())
        try:
            tool_specs(tools)
        except AssistantError as error:
            raise APIError(400, str(error), param="tools") from None
        return tools

    # ------------------------------------------------------------ generation

    async def _admit(self, watch: DisconnectWatch) -> None:
        try:
            await watch.wait(self.admission.acquire(), undo=lambda _: self.admission.release())
        except Overloaded as error:
            raise APIError(429, f"The server is at capacity ({error}); retry after {self.config.retry_after_s} s.",
                           code="rate_limit_exceeded", headers={"Retry-After": str(self.config.retry_after_s)}) from None

    def _start_worker(self, start: Callable[[Any], Any]) -> GenerationWorker:
        worker: GenerationWorker | None = None

        def finished() -> None:
            self.live.discard(worker)
            self.admission.release()

        try:
            worker = GenerationWorker(start, on_finish=finished)
            self.live.add(worker)
            return worker.start()
        except BaseException:
            finished()
            raise

    def _starter(self, body: ChatCompletionRequest, tools: list[dict[str, Any]], choice: Any, server_side: bool):
        """The function the worker thread runs: convert the messages, then start the generation."""
        sampling = {
            "max_new_tokens": body.max_completion_tokens or body.max_tokens or self.config.default_max_tokens,
            "temperature": body.temperature if body.temperature is not None else self.config.default_temperature,
            "top_p": 1.0 if body.top_p is None else max(body.top_p, 1e-9),  # OpenAI allows 0: the top token alone
            "stop": body.stop_strings() or None,
            "seed": body.seed,
        }
        parallel = body.parallel_tool_calls

        def start(cancel: Any) -> Any:
            try:
                messages = from_openai_messages(body.messages, fetch_image=self.fetch_image)
            except AssistantError as error:
                raise APIError(400, str(error), param="messages") from None
            if server_side:
                return self.assistant.run_stream(messages, self.plugin_tools, choice, self.config.plugin_max_steps, None,
                                                 parallel_tool_calls=parallel, cancel=cancel, **sampling)
            reply_schema = body.reply_schema()
            schema = {"response_schema": reply_schema} if reply_schema is not None else {}
            return self.assistant.stream_events(messages, tools=tools or None, tool_choice=choice, parallel_tool_calls=parallel,
                                                cancel=cancel, **schema, **sampling)

        return start

    # ------------------------------------------------------------ answers

    async def _complete(self, event: Any, worker: GenerationWorker, watch: DisconnectWatch, answer: Answer) -> JSONResponse:
        while event is not None:
            answer.add(event)
            event = await watch.wait(worker.next())
        if answer.interrupted:
            raise APIError(503, INTERRUPTED, type="server_error", code="generation_interrupted")
        completion = ChatCompletion(id=completion_id(), created=now(), model=self.config.served_model_name,
                                    choices=[Choice(message=answer.message(), finish_reason=answer.finish_reason)],
                                    usage=answer.usage)
        return JSONResponse(completion.model_dump(exclude_none=False))

    async def _chunks(self, event: Any, worker: GenerationWorker, body: ChatCompletionRequest, answer: Answer) -> AsyncIterator[str]:
        identity = {"id": completion_id(), "created": now(), "model": self.config.served_model_name}
        usage = body.include_usage

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> str:
            data = ChatCompletionChunk(**identity, choices=[ChunkChoice(delta=delta, finish_reason=finish_reason)])
            return _sse(data.model_dump(exclude=None if usage else {"usage"}))

        try:
            yield chunk({"role": "assistant", "content": ""})
            while event is not None:
                for delta in answer.add(event):
                    yield chunk(delta)
                event = await worker.next()
            if answer.interrupted:
                yield _sse(APIError(503, INTERRUPTED, type="server_error", code="generation_interrupted").body())
                return
            yield chunk({}, answer.finish_reason)
            if usage:
                yield _sse(ChatCompletionChunk(**identity, choices=[], usage=answer.usage).model_dump())
            yield "data: [DONE]\n\n"
        except (AssistantError, APIError) as error:
            problem = error if isinstance(error, APIError) else APIError(400, str(error))
            yield _sse(problem.body())
        except Exception:
            logger.exception("a streamed generation failed")
            yield _sse(APIError(500, "The server had an internal error while generating.", type="server_error").body())
        finally:
            worker.stop()


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"
