"""Dependencies shared by the routers: services, the request id, the deadline and the data-plane caller.

The data-plane routes take one dependency, ``CallerDep``: the services, the authenticated key, the
request id and the deadline, resolved together. FastAPI solves each declared dependency with its own
machinery (signature analysis, a cache lookup, a sub-solve); four of them on the hottest route cost
more than the work they did.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from starlette.datastructures import Headers
from starlette.types import Scope

from tollgate.container import Services
from tollgate.keys import Principal
from tollgate.routing import LAMBDA_CONTEXT_HEADER, Deadline, request_deadline


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def get_services(request: Request) -> Services:
    return services_of(request)


def request_id_of(request: Request) -> str:
    return scope_request_id(request.scope)


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


ServicesDep = Annotated[Services, Depends(get_services)]


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
    """Authenticates the request's key; shared by FastAPI's dependency and ``api.direct``."""
    principal = await services.keys.authenticate(presented_token(headers))
    return Caller(services, principal, scope_request_id(scope), deadline_of(scope, headers, services))


async def get_caller(request: Request) -> Caller:
    return await resolve_caller(services_of(request), request.scope, request.headers)


CallerDep = Annotated[Caller, Depends(get_caller)]
