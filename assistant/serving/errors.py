"""Every error the server sends, in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

``APIError`` is raised by the server's own checks (``from_validation_error`` makes one of a
pydantic validation error). ``install_error_handlers`` turns it, FastAPI's validation errors,
Starlette's HTTP errors, ``AssistantError`` (bad input found by the assistant) and any other
exception (a 500 that is logged and never shows a stack trace) into that shape. This module knows
nothing about chat completions.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from assistant.errors import AssistantError

logger = logging.getLogger(__name__)

ERROR_TYPES = {429: "rate_limit_error"}  # otherwise invalid_request_error below 500, server_error from 500 on


class APIError(Exception):
    """An error response: HTTP status, message and OpenAI's ``type``, ``param`` and ``code``."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def from_validation_error(errors: list[dict[str, Any]], skip_prefix: tuple[str, ...] = ()) -> APIError:
    """A 400 naming the first invalid field, e.g. ``Invalid value for 'temperature': ...``.

    Args:
        errors: pydantic's ``errors()`` list.
        skip_prefix: location parts to drop (FastAPI puts ``"body"`` first).
    """
    first = errors[0]
    location = [part for part in first.get("loc", ()) if part not in skip_prefix]
    param = location_name(location)
    kind = str(first.get("type", ""))
    if kind == "json_invalid":
        return APIError(400, f"The request body is not valid JSON: {first.get('ctx', {}).get('error', first.get('msg'))}",
                        code="invalid_json")
    if kind == "missing":
        return APIError(400, f"Missing required parameter: {param!r}.", param=param, code="missing_required_parameter")
    code = "invalid_type" if kind.endswith("_type") else "invalid_value"
    same = [e for e in errors if location_name([p for p in e.get("loc", ()) if p not in skip_prefix]) == param]
    reasons = " or ".join(dict.fromkeys(str(e.get("msg", "invalid")) for e in same))  # a union lists each branch
    others = len(errors) - len(same)
    more = f" (and {others} more problem{'s' if others > 1 else ''})" if others else ""
    return APIError(400, f"Invalid value for {param!r}: {reasons}{more}.", param=param, code=code)


def location_name(location: list[Any]) -> str:
    """``["messages", 0, "content"]`` -> ``"messages[0].content"``; union branch names are dropped."""
    name = ""
    for part in location:
        if isinstance(part, int):
            name += f"[{part}]"
        elif isinstance(part, str) and ("[" in part or "-" in part or part in ("str", "int", "float", "bool", "dict", "list")):
            continue  # a pydantic union branch such as "list[str]" or "function-after[...]"
        else:
            name += f".{part}" if name else str(part)
    return name or "body"


def install_error_handlers(app: FastAPI) -> None:
    """Make every error response of ``app`` OpenAI-shaped."""

    async def api_error(_: Request, error: APIError) -> JSONResponse:
        return error.response()

    async def request_validation(_: Request, error: RequestValidationError) -> JSONResponse:
        return from_validation_error(list(error.errors()), skip_prefix=("body", "query", "path", "header")).response()

    async def http_error(_: Request, error: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(error.status_code)
        return APIError(error.status_code, str(error.detail), code=code, headers=dict(error.headers or {})).response()

    async def assistant_error(_: Request, error: AssistantError) -> JSONResponse:
        return APIError(400, str(error)).response()

    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.error("internal error serving %s %s", request.method, request.url.path, exc_info=error)
        return APIError(500, "The server had an internal error while processing the request.", type="server_error").response()

    app.add_exception_handler(APIError, api_error)
    app.add_exception_handler(RequestValidationError, request_validation)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(AssistantError, assistant_error)
    app.add_exception_handler(Exception, unexpected)
