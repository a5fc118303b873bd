"""The admin routes refuse query parameters they do not declare.

A misspelt filter (``?tenant=acme`` for ``?tenant_id=acme``) would otherwise be ignored, and the
answer would silently cover every tenant the caller sees. So an admin request naming a parameter its
route does not declare is a 400, in OpenAI's error shape, like an unknown body field. The public data
plane does not use this: OpenAI-compatible clients send parameters an API does not define.

It runs after ``require_admin``, so a caller without credentials learns nothing about a route.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import Request
from fastapi.routing import APIRoute

from tollgate.errors import InvalidRequestError

if TYPE_CHECKING:
    from fastapi.dependencies.models import Dependant

#: Names longer than this are cut short in the error message.
MAX_NAME_SHOWN = 64


def _query_names(dependant: Dependant) -> frozenset[str]:
    names = {field.alias for field in dependant.query_params}
    for dependency in dependant.dependencies:
        names |= _query_names(dependency)
    return frozenset(names)


def declared_query_parameters(route: APIRoute) -> frozenset[str]:
    """The query parameters ``route`` declares, its dependencies' included (a walk over a handful of
    dependants: cheap enough per admin request not to cache)."""
    return _query_names(route.dependant)


async def reject_unknown_query_parameters(request: Request) -> None:
    """A router dependency: 400 for the first (in name order) query parameter the route does not declare."""
    if not request.query_params:
        return
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    unknown = sorted(set(request.query_params) - declared_query_parameters(route))
    if unknown:
        name = unknown[0][:MAX_NAME_SHOWN]
        raise InvalidRequestError(f"Unrecognized query parameter: '{name}'.", param=name)
