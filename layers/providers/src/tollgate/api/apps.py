"""The ASGI apps, one per Lambda function, and the all-in-one app of local mode.

* The **stream** and **gateway** functions serve data-plane routes only (``tollgate.api.routes``),
  through ``DirectRoutes`` with ``NoRoute`` behind it: no web framework is imported, which is ~40% of
  their cold start (``bench/ANALYSIS.md``).
* The **admin** function, and the **local** app of ``make dev`` and the end-to-end tests, are FastAPI
  apps (``create_app``). The local app declares the data-plane endpoints to FastAPI as well
  (``fastapi_router``), for its OpenAPI document, and still serves them through ``DirectRoutes``.

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
from tollgate.api.direct import DirectRoutes, NoRoute, header_of
from tollgate.api.middleware import RequestContext
from tollgate.api.routes import Route, RouteTable, routes_of
from tollgate.container import Services
from tollgate.settings import get_settings

if TYPE_CHECKING:
    from fastapi import APIRouter, FastAPI


def data_plane_app(tables: Sequence[RouteTable], *, services: Services | None = None) -> RequestContext:
    """The routes of ``tables``, served by ``DirectRoutes`` alone: no framework."""
    shared = services or Services(get_settings())
    routes = routes_of(tables)
    served = DirectRoutes(NoRoute(shared, routes), shared, routes)
    return RequestContext(served, max_body_bytes=shared.settings.max_request_bytes)


def create_app(
    routers: Sequence[APIRouter | RouteTable],
    *,
    title: str,
    services: Services | None = None,
    direct: Sequence[RouteTable] = (),
) -> RequestContext:
    """A FastAPI app of ``routers``; the routes of ``direct`` (some of ``routers``) are served by
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
    for router in routers:
        app.include_router(fastapi_router(router) if isinstance(router, RouteTable) else router)
    if any(all(table is not included for included in routers) for table in direct):
        raise ValueError("every directly served table must also be one of the app's routers")
    served = DirectRoutes(app, shared, routes_of(direct)) if direct else app
    return RequestContext(served, max_body_bytes=shared.settings.max_request_bytes)


def fastapi_router(table: RouteTable) -> APIRouter:
    """The table's routes declared to FastAPI: the same endpoints, their parameters annotated the
    way FastAPI reads them (``Caller`` as ``CallerDep``, ``InHeader`` as ``Header``)."""
    from fastapi import APIRouter

    router = APIRouter(tags=[table.tag])
    for route in table.routes:
        router.add_api_route(route.path, _fastapi_endpoint(route), methods=[route.method], **route.options)
    return router


def _fastapi_endpoint(route: Route) -> Any:
    from fastapi import Header

    from tollgate.api.deps import CallerDep

    endpoint = route.endpoint
    hints = get_type_hints(endpoint, include_extras=True)
    parameters = []
    for parameter in inspect.signature(endpoint).parameters.values():
        hint = hints.get(parameter.name, parameter.annotation)
        header = header_of(hint)
        if hint is Caller:
            hint = CallerDep
        elif header is not None:
            bounds = Header(
                alias=header.alias,
                description=header.description or None,
                min_length=header.min_length,
                max_length=header.max_length,
            )
            hint = Annotated[get_args(hint)[0], bounds]
        parameters.append(parameter.replace(annotation=hint))

    @functools.wraps(endpoint, assigned=("__module__", "__name__", "__qualname__", "__doc__"), updated=())
    async def call(**arguments: Any) -> Any:
        return await endpoint(**arguments)

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

    return data_plane_app([chat_routes, messages_routes, health_routes], services=services)


def gateway_app(services: Services | None = None) -> RequestContext:
    """``functions/gateway``: the buffered public routes, served by Mangum."""
    from tollgate.api.public import health_routes, models_routes

    return data_plane_app([models_routes, health_routes], services=services)


def admin_app(services: Services | None = None) -> RequestContext:
    """``functions/admin``: the admin API, served by Mangum."""
    from tollgate.api.admin import router
    from tollgate.api.analytics import router as analytics_router
    from tollgate.api.public import health_routes

    return create_app(
        [router, analytics_router, health_routes], title="Tollgate admin API", services=services
    )


def local_app(services: Services | None = None) -> RequestContext:
    """Every route in one app, for ``make dev`` and the end-to-end tests."""
    from tollgate.api.admin import router
    from tollgate.api.analytics import router as analytics_router
    from tollgate.api.messages import messages_routes
    from tollgate.api.public import chat_routes, health_routes, models_routes

    return create_app(
        [chat_routes, messages_routes, models_routes, router, analytics_router, health_routes],
        title="Tollgate (local)",
        services=services,
        direct=[chat_routes, messages_routes, models_routes],
    )
