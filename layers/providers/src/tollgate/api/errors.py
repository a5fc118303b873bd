"""Renders every failure as OpenAI's error object, with the right status. The only place that does."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tollgate.errors import InvalidRequestError, NotFoundError, TollgateError
from tollgate.observability import logger

_HTTP_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error"}


def error_response(error: TollgateError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers or None)


def validation_error(exc: RequestValidationError) -> InvalidRequestError:
    """The first problem of a bad body, named the way OpenAI names it (``messages``, ``model``...)."""
    problems = exc.errors()
    if not problems:
        return InvalidRequestError("The request is not valid.")
    first: dict[str, Any] = problems[0]
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


def install_error_handlers(app: FastAPI) -> None:
    async def on_tollgate_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, TollgateError)
        return error_response(exc)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(validation_error(exc))

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            return error_response(NotFoundError(f"Unknown request URL: {request.method} {request.url.path}."))
        error = TollgateError(str(exc.detail))
        error.status = exc.status_code
        body = error.body()
        body["error"]["type"] = _HTTP_TYPES.get(exc.status_code, "invalid_request_error")
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error", extra={"path": request.url.path})
        return error_response(TollgateError("The server had an error while processing your request."))

    app.add_exception_handler(TollgateError, on_tollgate_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
