"""Who is calling a data-plane route: the key, authenticated, with the request id and deadline.

Resolved once per request, by ``tollgate.api.direct`` and by FastAPI's ``CallerDep``
(``tollgate.api.deps``) alike. Framework-free, so the stream and gateway functions do not load FastAPI.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.types import Scope

from tollgate.container import Services
from tollgate.keys import Principal
from tollgate.routing import LAMBDA_CONTEXT_HEADER, Deadline, request_deadline


def scope_request_id(scope: Scope) -> str:
    """The id ``RequestContext`` gave the request."""
    request_id: str = scope["state"]["request_id"]
    return request_id


def presented_token(headers: Headers) -> str | None:
    """The credential from ``Authorization: Bearer ...`` or, for Anthropic clients, ``x-api-key``."""
    authorization = headers.get("authorization")
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return ""
        return token.strip()
    return headers.get("x-api-key")


def deadline_of(scope: Scope, headers: Headers, services: Services) -> Deadline:
    """The request's deadline: the Lambda function's remaining time (Mangum's ``aws.context``, or
    the Lambda Web Adapter's ``x-amzn-lambda-context`` header) less a margin, capped by
    ``request_timeout_seconds``; locally, that setting alone."""
    settings = services.settings
    return request_deadline(
        timeout=settings.request_timeout_seconds,
        margin=settings.deadline_margin_seconds,
        aws_context=scope.get("aws.context"),
        lambda_context=headers.get(LAMBDA_CONTEXT_HEADER),
    )


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling a data-plane route, and what the request may spend (time)."""

    services: Services
    principal: Principal
    request_id: str
    deadline: Deadline


async def resolve_caller(services: Services, scope: Scope, headers: Headers) -> Caller:
    """Authenticates the request's key."""
    principal = await services.keys.authenticate(presented_token(headers))
    return Caller(services, principal, scope_request_id(scope), deadline_of(scope, headers, services))
