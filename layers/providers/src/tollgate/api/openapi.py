"""The OpenAPI document as clients see the API: errors in their real shape, and how to authenticate.

FastAPI documents a 422 in its own validation shape, which Tollgate never sends: a bad request is a
400 in OpenAI's error object (``tollgate.api.errors``), or Anthropic's on ``/v1/messages``. This
replaces it with the errors each operation can answer, declares the bearer (and ``x-api-key``)
schemes, and documents the SSE body of the streaming routes. Schemathesis checks the API against
exactly this document (``tests/functional/test_openapi_fuzz.py``).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from tollgate.api.errors import ANTHROPIC_PATH_PREFIX

#: Every status an operation may answer with an error body, and what it means.
ERROR_RESPONSES: dict[str, str] = {
    "400": "Invalid request (OpenAI's error object; `param` names the field)",
    "401": "Missing, malformed, unknown, revoked or expired credentials",
    "402": "Not enough credits for this request's worst case",
    "403": "The caller's role may not do this",
    "404": "No such object, or one the caller may not see",
    "405": "Method not allowed on this path",
    "409": "Conflicts with the current state (an existing id, a concurrent change)",
    "413": "The request body is too large",
    "429": "A rate limit or budget was reached; see Retry-After",
    "500": "Tollgate failed",
    "502": "The provider failed or sent something unusable",
    "503": "A dependency (secrets, tables, the identity provider) is unavailable",
    "504": "The provider did not answer in time",
}
#: Operations whose 200 may be a server-sent event stream (``"stream": true``).
STREAMING_OPERATIONS = frozenset({"createChatCompletion", "createMessage"})

OPENAI_ERROR_SCHEMA: dict[str, Any] = {
    "title": "ErrorResponse",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
ANTHROPIC_ERROR_SCHEMA: dict[str, Any] = {
    "title": "AnthropicErrorResponse",
    "type": "object",
    "required": ["type", "error"],
    "properties": {
        "type": {"const": "error"},
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
        },
    },
}
SECURITY_SCHEMES: dict[str, Any] = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "A Tollgate key (tg-...); on /admin: an admin key, an OIDC token or the bootstrap key",
    },
    "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key", "description": "For Anthropic clients"},
}


def complete(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` (FastAPI's document) with Tollgate's error responses and security schemes."""
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["ErrorResponse"] = OPENAI_ERROR_SCHEMA
    schemas["AnthropicErrorResponse"] = ANTHROPIC_ERROR_SCHEMA
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    components["securitySchemes"] = SECURITY_SCHEMES
    for path, item in schema.get("paths", {}).items():
        anthropic = path.startswith(ANTHROPIC_PATH_PREFIX)
        reference = "AnthropicErrorResponse" if anthropic else "ErrorResponse"
        error_content = {"application/json": {"schema": {"$ref": f"#/components/schemas/{reference}"}}}
        for operation in item.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            for status, description in ERROR_RESPONSES.items():
                responses.setdefault(status, {"description": description, "content": error_content})
            operation["security"] = [{"apiKey": []}, {"bearer": []}] if anthropic else [{"bearer": []}]
            if operation.get("operationId") in STREAMING_OPERATIONS:
                ok = responses.setdefault("200", {"description": "Successful Response"})
                content = ok.setdefault("content", {})
                content["text/event-stream"] = {
                    "schema": {"type": "string", "description": "Server-sent events, ending in [DONE]"}
                }
    return schema


def install_openapi(app: FastAPI) -> None:
    """Serves the completed document at ``/openapi.json`` (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete(
                get_openapi(
                    title=app.title, version=app.version, routes=app.routes, description=app.description
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to customise it
