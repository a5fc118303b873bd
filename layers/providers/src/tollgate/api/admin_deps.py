"""FastAPI's dependencies for the admin routes of the local app (``tollgate.api.admin_caller`` does
the work), apart so the data-plane functions never import the admin package."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from fastapi.routing import APIRoute

from tollgate.admin.access import AdminAccess
from tollgate.admin.principal import AdminPrincipal
from tollgate.api.admin_caller import admin_access, authenticate_admin, refuse_unknown_query
from tollgate.api.deps import ServicesDep

if TYPE_CHECKING:
    from fastapi.dependencies.models import Dependant


def require_admin(request: Request, services: ServicesDep) -> AdminPrincipal:
    """Runs in the thread pool: key lookups and a first JWKS fetch may block."""
    return authenticate_admin(services, request.scope, request.headers)


AdminDep = Annotated[AdminPrincipal, Depends(require_admin)]


def get_admin_access(request: Request, services: ServicesDep, principal: AdminDep) -> AdminAccess:
    return admin_access(services, request.scope, principal)


AccessDep = Annotated[AdminAccess, Depends(get_admin_access)]


def _query_names(dependant: Dependant) -> frozenset[str]:
    names = {field.alias for field in dependant.query_params}
    for dependency in dependant.dependencies:
        names |= _query_names(dependency)
    return frozenset(names)


async def reject_unknown_query_parameters(request: Request) -> None:
    """A router dependency, after ``require_admin``: ``refuse_unknown_query`` for the route."""
    route = request.scope.get("route")
    if request.query_params and isinstance(route, APIRoute):
        refuse_unknown_query(set(request.query_params), _query_names(route.dependant))
