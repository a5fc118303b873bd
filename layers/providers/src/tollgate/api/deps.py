"""Dependencies shared by the routers: services, the request id and the two kinds of caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from tollgate.admin.access import AdminAccess
from tollgate.admin.audit import AdminContext
from tollgate.admin.principal import AdminPrincipal
from tollgate.container import Services
from tollgate.errors import AuthenticationError, PermissionDeniedError
from tollgate.keys import Principal
from tollgate.routing import LAMBDA_CONTEXT_HEADER, Deadline, request_deadline


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def get_request_id(request: Request) -> str:
    request_id: str = request.state.request_id
    return request_id


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


def require_admin(request: Request, services: ServicesDep) -> AdminPrincipal:
    """An admin key, an OIDC token or the bootstrap key (``tollgate.admin.auth``); every refusal is
    audited. Runs in the thread pool: key lookups and a first JWKS fetch may block."""
    try:
        return services.admin_auth.authenticate(presented_token(request))
    except (AuthenticationError, PermissionDeniedError) as error:
        services.audit_trail.denied(
            request_id=get_request_id(request),
            actor=getattr(error, "actor", "anonymous"),
            role=None,
            tenant_id=None,
            action="auth.denied",
            target=f"{request.method} {request.url.path}",
            status=error.status,
            reason=error.message,
        )
        raise


AdminDep = Annotated[AdminPrincipal, Depends(require_admin)]


def get_admin_access(request: Request, services: ServicesDep, principal: AdminDep) -> AdminAccess:
    """The admin operations as this caller may use them (roles, isolation, ceilings, audit)."""
    return AdminAccess(services, AdminContext(principal=principal, request_id=get_request_id(request)))


AccessDep = Annotated[AdminAccess, Depends(get_admin_access)]


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def get_deadline(request: Request, services: ServicesDep) -> Deadline:
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
