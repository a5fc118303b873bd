"""FastAPI's dependencies: the services, the request id and the data-plane caller.

The data-plane routes take one dependency, ``CallerDep``: the services, the authenticated key, the
request id and the deadline, resolved together (``tollgate.api.caller``). FastAPI solves each
declared dependency with its own machinery (signature analysis, a cache lookup, a sub-solve); four of
them on the hottest route cost more than the work they did.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from tollgate.api.caller import Caller, resolve_caller, scope_request_id
from tollgate.container import Services


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def get_services(request: Request) -> Services:
    return services_of(request)


def request_id_of(request: Request) -> str:
    return scope_request_id(request.scope)


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_caller(request: Request) -> Caller:
    return await resolve_caller(services_of(request), request.scope, request.headers)


CallerDep = Annotated[Caller, Depends(get_caller)]
