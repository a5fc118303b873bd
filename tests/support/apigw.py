"""API Gateway (REST, proxy integration) events and a Lambda context, for driving a function's
Mangum handler in-process as API Gateway would."""

from __future__ import annotations

from typing import Any


class LambdaContext:
    """The one method of Lambda's context that Tollgate reads (the request's deadline)."""

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def rest_event(
    method: str,
    path: str,
    *,
    headers: dict[str, str],
    query: dict[str, str] | None = None,
    body: str | None = None,
    resource: str = "/{proxy+}",
) -> dict[str, Any]:
    """A REST API proxy event; a body is sent as JSON."""
    headers = {"host": "api.example.test", **headers}
    if body is not None:
        headers["content-type"] = "application/json"
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "queryStringParameters": query,
        "multiValueQueryStringParameters": {name: [value] for name, value in query.items()}
        if query
        else None,
        "requestContext": {"resourcePath": resource, "httpMethod": method, "stage": "prod"},
        "body": body,
        "isBase64Encoded": False,
    }
