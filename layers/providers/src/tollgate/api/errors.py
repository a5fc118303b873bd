"""Renders every failure with the right status, in its route's wire shape. The only place that does.

Errors use OpenAI's error object, except on the Anthropic-compatible routes (``/v1/messages...``),
whose clients expect Anthropic's: ``{"type": "error", "error": {"type", "message"}}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from tollgate.errors import InvalidRequestError, NotFoundError, TollgateError
from tollgate.messages import anthropic_error_body
from tollgate.observability import logger

if TYPE_CHECKING:
    from fastapi import FastAPI

_HTTP_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error"}
#: Paths whose clients speak Anthropic's Messages API.
ANTHROPIC_PATH_PREFIX = "/v1/messages"


def error_body(error: TollgateError, path: str = "") -> dict[str, Any]:
    """The one choice of an error's wire shape: Anthropic's on its routes, OpenAI's everywhere else."""
    if path.startswith(ANTHROPIC_PATH_PREFIX):
        return anthropic_error_body(error)
    return error.body()


def error_response(error: TollgateError, path: str = "") -> JSONResponse:
    return JSONResponse(error_body(error, path), status_code=error.status, headers=error.headers or None)


def internal_error() -> TollgateError:
    """What a caller learns of a bug: that there was one (the traceback goes to the log)."""
    return TollgateError("The server had an error while processing your request.")


class HTTPStatusError(TollgateError):
    """A failure Starlette raised itself (405 and the like), with its status."""

    def __init__(self, message: str, *, status: int, headers: dict[str, str] | None) -> None:
        super().__init__(message, headers=headers)
        self.status = status

    def body(self) -> dict[str, Any]:
        body = super().body()
        body["error"]["type"] = _HTTP_TYPES.get(self.status, "invalid_request_error")
        return body


def validation_error(problems: Sequence[Mapping[str, Any]]) -> InvalidRequestError:
    """The first problem of a bad body (pydantic's error list, with FastAPI's locations), named the
    way OpenAI names it (``messages``, ``model``...)."""
    if not problems:
        return InvalidRequestError("The request is not valid.")
    first = problems[0]
    if first.get("type") == "json_invalid":
        return InvalidRequestError(
            "We could not parse the JSON body of your request. Send valid JSON.", code="invalid_json"
        )
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path", "header")]
    param = ".".join(location) or None
    message = str(first.get("msg", "invalid value"))
    if first.get("type") == "missing":
        text = f"Missing required parameter: '{param}'." if param else "The request body is missing."
    elif first.get("type") == "extra_forbidden":
        text = f"Unrecognized request argument supplied: '{param}'."
    else:
        text = f"Invalid value for '{param}': {message}." if param else f"Invalid request: {message}."
    return InvalidRequestError(text, param=param)


def not_found(method: str, path: str) -> NotFoundError:
    return NotFoundError(f"Unknown request URL: {method} {path}.")


def install_error_handlers(app: FastAPI) -> None:
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    async def on_tollgate_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, TollgateError)
        return error_response(exc, request.url.path)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(validation_error(exc.errors()), request.url.path)

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        path = request.url.path
        if exc.status_code == 404:
            return error_response(not_found(request.method, path), path)
        headers = dict(exc.headers) if exc.headers else None
        error = HTTPStatusError(str(exc.detail), status=exc.status_code, headers=headers)
        return error_response(error, path)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error", extra={"path": request.url.path})
        return error_response(internal_error(), request.url.path)

    app.add_exception_handler(TollgateError, on_tollgate_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
