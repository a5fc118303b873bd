"""Dependencies shared by the routers: services, the request id and the two kinds of caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from tollgate.container import Services
from tollgate.keys import Principal
from tollgate.routing import LAMBDA_CONTEXT_HEADER, Deadline, request_deadline


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def request_id_of(request: Request) -> str:
    request_id: str = request.state.request_id
    return request_id


async def get_request_id(request: Request) -> str:
    return request_id_of(request)


def presented_token(request: Request) -> str | None:
    """The credential from ``Authorization: Bearer ...`` or, for Anthropic clients, ``x-api-key``."""
    authorization = request.headers.get("authorization")
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return ""
        return token.strip()
    return request.headers.get("x-api-key")


ServicesDep = Annotated[Services, Depends(get_services)]
RequestIdDep = Annotated[str, Depends(get_request_id)]


async def get_principal(request: Request, services: ServicesDep) -> Principal:
    return await services.keys.authenticate(presented_token(request))


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def get_deadline(request: Request, services: ServicesDep) -> Deadline:
    """The request's deadline: the Lambda function's remaining time (Mangum's ``aws.context``, or
    the Lambda Web Adapter's ``x-amzn-lambda-context`` header) less a margin, capped by
    ``request_timeout_seconds``; locally, that setting alone."""
    settings = services.settings
    return request_deadline(
        timeout=settings.request_timeout_seconds,
        margin=settings.deadline_margin_seconds,
        aws_context=request.scope.get("aws.context"),
        lambda_context=request.headers.get(LAMBDA_CONTEXT_HEADER),
    )


DeadlineDep = Annotated[Deadline, Depends(get_deadline)]
