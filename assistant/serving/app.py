"""``create_app``: the FastAPI app of the OpenAI-compatible server over one ``Assistant``.

Routes: ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /v1/models/{id}`` (all behind the
optional API keys) and ``GET /health`` (always open). The app reads request bodies itself, so the size
limit holds whether or not a client declares ``Content-Length``, and so malformed JSON is a 400. It
wires the pieces together (config, admission queue, image fetcher, plugins, chat completions) and
knows nothing about how the model generates or how uvicorn runs it.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from assistant.errors import AssistantError
from assistant.serving.admission import Admission
from assistant.serving.completions import ChatCompletions
from assistant.serving.config import ServerConfig
from assistant.serving.errors import APIError, from_validation_error, install_error_handlers
from assistant.serving.protocol import ChatCompletionRequest, ModelCard, ModelList, now
from assistant.serving.remote_media import RemoteImageFetcher

logger = logging.getLogger(__name__)

JSON_TYPES = ("application/json",)


async def read_json_body(request: Request, limit: int) -> Any:
    """The request's JSON body, refusing bodies over ``limit`` bytes (declared or counted as they arrive).

    Raises:
        APIError: 413 (too large), 415 (not JSON) or 400 (malformed JSON).
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise APIError(413, f"The request body ({int(declared)} bytes) is over this server's limit of {limit} bytes.",
                       code="request_too_large")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in JSON_TYPES and not content_type.endswith("+json"):
        raise APIError(415, f"Send the body as JSON with 'Content-Type: application/json' (got {content_type or 'none'!r}).",
                       code="unsupported_media_type")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"The request body is over this server's limit of {limit} bytes.", code="request_too_large")
        chunks.append(chunk)
    return await run_in_threadpool(_parse_json, b"".join(chunks))  # a big body never stalls the event loop


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise APIError(400, f"We could not parse the JSON body of your request: {error}", code="invalid_json") from None


def _parse_request(data: Any) -> ChatCompletionRequest:
    try:
        return ChatCompletionRequest.model_validate(data)
    except ValidationError as error:
        raise from_validation_error(list(error.errors())) from None


def create_app(assistant: Any, config: ServerConfig | None = None, *, fetch_image: Callable[[str], bytes] | None = None,
               plugin_tools: list[Any] | None = None) -> FastAPI:
    """The server app for ``assistant``.

    Args:
        assistant: An ``Assistant`` (anything with its ``stream_events`` and ``run_stream``).
        config: Limits, keys and extras; the defaults when omitted.
        fetch_image: Fetches remote image URLs; by default a ``RemoteImageFetcher`` over
            ``config.allow_image_hosts`` when that is set, else remote image URLs are refused.
        plugin_tools: Tools run server-side for requests without tools of their own (the caller
            resolves ``config.plugins`` to tools, e.g. with ``plugins.registry.select_plugins``).

    Raises:
        AssistantError: ``config.plugins`` names plugins but no ``plugin_tools`` were given.
    """
    config = config or ServerConfig()
    if fetch_image is None and config.remote_images:
        fetch_image = RemoteImageFetcher(config.allow_image_hosts, config.image_fetch_max_bytes, config.image_fetch_timeout_s)
    if plugin_tools is None and config.plugins:
        raise AssistantError(f"config.plugins names {config.plugins}: pass those tools as plugin_tools "
                             "(assistant/ does not import the plugin registry; launch_server.py does)")
    admission = Admission(config.max_concurrent, config.max_queue)
    completions = ChatCompletions(assistant, config, admission, fetch_image, plugin_tools)
    model_card = ModelCard(id=config.served_model_name, created=now())
    keys = [key.encode() for key in config.api_keys]

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        logger.info("serving %r: at most %d generations at once, %d waiting; API keys %s; remote images %s; plugins %s",
                    config.served_model_name, config.max_concurrent, config.max_queue, "required" if keys else "off",
                    config.allow_image_hosts or "off", [tool.name for tool in completions.plugin_tools] or "off")
        yield
        for worker in list(completions.live):  # stop what is still generating
            worker.stop()

    async def require_key(request: Request) -> None:
        if not keys:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        presented = token.strip().encode() if scheme.lower() == "bearer" else b""
        matched = False
        for key in keys:  # every key is compared, in constant time
            matched |= hmac.compare_digest(presented, key)
        if not matched:
            raise APIError(401, "Incorrect or missing API key: send 'Authorization: Bearer <key>'.", code="invalid_api_key",
                           headers={"WWW-Authenticate": "Bearer"})

    app = FastAPI(title="multimodal-assistant", summary="OpenAI-compatible chat completions", lifespan=lifespan)
    install_error_handlers(app)
    app.state.completions = completions
    router = APIRouter(prefix="/v1", dependencies=[Depends(require_key)])

    # Bodies are read and parsed by at most as many requests as admission could hold, so a burst of
    # large uploads costs memory in proportion to the limits too; the rest are turned away unread.
    readers = asyncio.Semaphore(config.max_concurrent + config.max_queue)

    @router.post("/chat/completions")
    async def chat_completions(request: Request) -> Response:
        if readers.locked():
            raise APIError(429, f"The server is at capacity; retry after {config.retry_after_s} s.",
                           code="rate_limit_exceeded", headers={"Retry-After": str(config.retry_after_s)})
        async with readers:
            data = await read_json_body(request, config.max_body_bytes)
            body = await run_in_threadpool(_parse_request, data)
        return await completions.create(request, body)

    @router.get("/models")
    async def list_models() -> ModelList:
        return ModelList(data=[model_card])

    @router.get("/models/{model_id:path}")
    async def get_model(model_id: str) -> ModelCard:
        if model_id != config.served_model_name:
            raise APIError(404, f"The model {model_id!r} does not exist.", param="model", code="model_not_found")
        return model_card

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": config.served_model_name, "running": admission.running, "waiting": admission.waiting}

    app.include_router(router)
    return app
