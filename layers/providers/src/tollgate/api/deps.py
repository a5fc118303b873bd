"""Dependencies shared by the routers: services, the request id and the two kinds of caller."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from tollgate.admin.principal import BOOTSTRAP, AdminPrincipal
from tollgate.container import Services
from tollgate.errors import AuthenticationError
from tollgate.keys import MAX_TOKEN_LENGTH, Principal


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
    """The bootstrap admin key, compared in constant time. Runs in the thread pool (a cached read)."""
    token = presented_token(request)
    if not token or len(token) > MAX_TOKEN_LENGTH * 4:
        raise AuthenticationError("Missing or malformed admin credentials.")
    if not hmac.compare_digest(token.encode(), services.secrets.admin_key().encode()):
        raise AuthenticationError("Incorrect admin credentials.")
    return BOOTSTRAP


AdminDep = Annotated[AdminPrincipal, Depends(require_admin)]


PrincipalDep = Annotated[Principal, Depends(get_principal)]
