"""The ASGI apps, one per Lambda function, and the all-in-one app of local mode.

* The **stream**, **gateway** and **admin** functions serve their route tables
  (``tollgate.api.routes``) through ``DirectRoutes`` with ``NoRoute`` behind it (``direct_app``): no
  web framework is imported, which is ~40% of a cold start (``bench/ANALYSIS.md``).
* The **local** app of ``make dev`` and the end-to-end tests is a FastAPI app (``create_app``): it
  declares every table's endpoints to FastAPI (``fastapi_router``) for its OpenAPI document and
  interactive docs, and still serves them through ``DirectRoutes``, as the functions do.

Every app is wrapped in ``RequestContext``. Settings are validated when the app is built (at cold
start); ``Services`` creates its clients lazily, so building an app does no I/O.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any, get_args, get_type_hints

from tollgate.api.caller import Caller
from tollgate.api.direct import DirectRoutes, NoRoute, marker_of
from tollgate.api.middleware import RequestContext
from tollgate.api.routes import InHeader, InPath, InQuery, Route, RouteTable, routes_of
from tollgate.container import Services
from tollgate.settings import get_settings

if TYPE_CHECKING:
    from fastapi import APIRouter, FastAPI


def direct_app(tables: Sequence[RouteTable], *, services: Services | None = None) -> RequestContext:
    """The routes of ``tables``, served by ``DirectRoutes`` alone: no framework."""
    shared = services or Services(get_settings())
    served = DirectRoutes(NoRoute(shared), shared, routes_of(tables))
    return RequestContext(served, max_body_bytes=shared.settings.max_request_bytes)


def create_app(
    tables: Sequence[RouteTable],
    *,
    title: str,
    services: Services | None = None,
    direct: Sequence[RouteTable] = (),
) -> RequestContext:
    """A FastAPI app of ``tables``; the routes of ``direct`` (some of ``tables``) are served by
    ``DirectRoutes``, without FastAPI's per-request machinery (``tollgate.api.direct``)."""
    from fastapi import FastAPI

    from tollgate.api.errors import install_error_handlers
    from tollgate.api.openapi import install_openapi

    shared = services or Services(get_settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await shared.aclose()

    app = FastAPI(
        title=title,
        version="0.1.0",
        lifespan=lifespan,
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.services = shared
    install_error_handlers(app)
    install_openapi(app)
    for table in tables:
        app.include_router(fastapi_router(table))
    if any(all(table is not included for included in tables) for table in direct):
        raise ValueError("every directly served table must also be one of the app's tables")
    served = DirectRoutes(app, shared, routes_of(direct)) if direct else app
    return RequestContext(served, max_body_bytes=shared.settings.max_request_bytes)


def fastapi_router(table: RouteTable) -> APIRouter:
    """The table's routes declared to FastAPI: the same endpoints, their parameters annotated the
    way FastAPI reads them (``Caller`` as ``CallerDep``, ``InQuery`` as ``Query``...), an admin
    table's with the admin dependencies."""
    from fastapi import APIRouter, Depends

    dependencies = []
    if table.admin:
        from tollgate.api.admin_deps import reject_unknown_query_parameters, require_admin

        dependencies = [Depends(require_admin), Depends(reject_unknown_query_parameters)]
    router = APIRouter(tags=[table.tag], dependencies=dependencies)
    for route in table.routes:
        router.add_api_route(route.path, _fastapi_endpoint(route), methods=[route.method], **route.options)
    return router


def _fastapi_endpoint(route: Route) -> Any:
    from fastapi import Header, Path, Query

    from tollgate.api.deps import CallerDep, ServicesDep

    specials: dict[Any, Any] = {Caller: CallerDep, Services: ServicesDep}
    if route.admin:
        from tollgate.admin.access import AdminAccess
        from tollgate.api.admin_deps import AccessDep

        specials[AdminAccess] = AccessDep
    endpoint = route.endpoint
    hints = get_type_hints(endpoint, include_extras=True)
    parameters = []
    for parameter in inspect.signature(endpoint).parameters.values():
        hint = hints.get(parameter.name, parameter.annotation)
        marker = marker_of(hint)
        if any(hint is special for special in specials):
            hint = specials[hint]
        elif marker is not None:
            description = marker.description or None
            if isinstance(marker, InHeader):
                where = Header(alias=marker.alias, description=description, **marker.constraints())
            elif isinstance(marker, InPath):
                where = Path(description=description, **marker.constraints())
            else:
                assert isinstance(marker, InQuery)
                where = Query(description=description, **marker.constraints())
            hint = Annotated[get_args(hint)[0], where]
        parameters.append(parameter.replace(annotation=hint))
    assigned = ("__module__", "__name__", "__qualname__", "__doc__")
    if inspect.iscoroutinefunction(endpoint):

        @functools.wraps(endpoint, assigned=assigned, updated=())
        async def call(**arguments: Any) -> Any:
            return await endpoint(**arguments)

    else:  # FastAPI runs it in the thread pool, as the direct path does

        @functools.wraps(endpoint, assigned=assigned, updated=())
        def call(**arguments: Any) -> Any:
            return endpoint(**arguments)

    call.__signature__ = inspect.Signature(parameters, return_annotation=hints.get("return"))  # type: ignore[attr-defined]
    return call


def fastapi_app(app: RequestContext) -> FastAPI:
    """The FastAPI app inside one of the FastAPI apps below (for its OpenAPI document and overrides)."""
    from fastapi import FastAPI

    inner = app.app
    if isinstance(inner, DirectRoutes):
        inner = inner.app
    assert isinstance(inner, FastAPI)
    return inner


def stream_app(services: Services | None = None) -> RequestContext:
    """``functions/stream``: the chat routes, served by uvicorn under the Lambda Web Adapter."""
    from tollgate.api.messages import messages_routes
    from tollgate.api.public import chat_routes, health_routes

    return direct_app([chat_routes, messages_routes, health_routes], services=services)


def gateway_app(services: Services | None = None) -> RequestContext:
    """``functions/gateway``: the buffered public routes, served by Mangum."""
    from tollgate.api.public import health_routes, models_routes

    return direct_app([models_routes, health_routes], services=services)


def admin_app(services: Services | None = None) -> RequestContext:
    """``functions/admin``: the admin API, served by Mangum."""
    from tollgate.api.admin import admin_routes
    from tollgate.api.analytics import analytics_routes
    from tollgate.api.public import health_routes

    return direct_app([admin_routes, analytics_routes, health_routes], services=services)


def local_app(services: Services | None = None) -> RequestContext:
    """Every route in one app, for ``make dev`` and the end-to-end tests."""
    from tollgate.api.admin import admin_routes
    from tollgate.api.analytics import analytics_routes
    from tollgate.api.messages import messages_routes
    from tollgate.api.public import chat_routes, health_routes, models_routes

    tables = [chat_routes, messages_routes, models_routes, admin_routes, analytics_routes, health_routes]
    return create_app(tables, title="Tollgate (local)", services=services, direct=tables)
