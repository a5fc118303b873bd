"""The outermost ASGI layer: a request id on every response, and a cap on body size.

Plain ASGI rather than ``BaseHTTPMiddleware``: it adds no task or copy per request, and it wraps
the whole app, so even an unexpected 500 carries ``x-request-id``.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tollgate.api.errors import error_body, internal_error
from tollgate.errors import PayloadTooLargeError, TollgateError
from tollgate.observability import logger

REQUEST_ID_HEADER = b"x-request-id"


def new_request_id() -> str:
    return f"req_{secrets.token_hex(12)}"


class RequestContext:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        scope["state"] = {**scope.get("state", {}), "request_id": request_id}
        header = (REQUEST_ID_HEADER, request_id.encode())
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await _send_error(send_with_id, _too_large(self.max_body_bytes), scope.get("path", ""))
            return
        received = 0

        async def receive_capped() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _too_large(self.max_body_bytes)
            return message

        try:
            await self.app(scope, receive_capped, send_with_id)
        except TollgateError as error:
            if started:
                raise
            await _send_error(send_with_id, error, scope.get("path", ""))
        except Exception:
            # The traceback goes to the log, never the client. Under FastAPI its error handler has
            # answered already; on the direct routes (``tollgate.api.direct``) this answers.
            if started:
                logger.exception("error after the response started", extra={"request_id": request_id})
                return
            logger.exception("unhandled error", extra={"request_id": request_id, "path": scope.get("path")})
            await _send_error(send_with_id, internal_error(), scope.get("path", ""))


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"The request body is larger than {limit} bytes.")


async def _send_error(send: Any, error: TollgateError, path: str) -> None:
    body = json.dumps(error_body(error, path)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(name.lower().encode(), value.encode()) for name, value in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
