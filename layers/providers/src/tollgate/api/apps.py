"""The ASGI apps, one per Lambda function, and the all-in-one app of local mode.

Each app is the same FastAPI factory with a different set of routers, wrapped in
``RequestContext``. Settings are validated when the app is built (at cold start); ``Services``
creates its clients lazily, so building an app does no I/O.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from tollgate.api.direct import DirectRoutes, routes_of
from tollgate.api.errors import install_error_handlers
from tollgate.api.middleware import RequestContext
from tollgate.api.openapi import install_openapi
from tollgate.container import Services
from tollgate.settings import get_settings


def create_app(
    routers: Sequence[APIRouter],
    *,
    title: str,
    services: Services | None = None,
    direct: Sequence[APIRouter] = (),
) -> RequestContext:
    """The app of ``routers``; the routes of ``direct`` (some of ``routers``) are served by
    ``DirectRoutes``, without FastAPI's per-request machinery (``tollgate.api.direct``)."""
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
        app.include_router(router)
    if any(all(router is not included for included in routers) for router in direct):
        raise ValueError("every directly served router must also be one of the app's routers")
    served = DirectRoutes(app, shared, routes_of(direct)) if direct else app
    return RequestContext(served, max_body_bytes=shared.settings.max_request_bytes)


def fastapi_app(app: RequestContext) -> FastAPI:
    """The FastAPI app inside one of the apps below (for its OpenAPI document and overrides)."""
    inner = app.app
    if isinstance(inner, DirectRoutes):
        inner = inner.app
    assert isinstance(inner, FastAPI)
    return inner


def stream_app(services: Services | None = None) -> RequestContext:
    """``functions/stream``: the chat routes, served by uvicorn under the Lambda Web Adapter."""
    from tollgate.api.messages import messages_router
    from tollgate.api.public import chat_router, health_router

    return create_app(
        [chat_router, messages_router, health_router],
        title="Tollgate streaming API",
        services=services,
        direct=[chat_router, messages_router],
    )


def gateway_app(services: Services | None = None) -> RequestContext:
    """``functions/gateway``: the buffered public routes, served by Mangum."""
    from tollgate.api.public import health_router, models_router

    return create_app(
        [models_router, health_router], title="Tollgate API", services=services, direct=[models_router]
    )


def admin_app(services: Services | None = None) -> RequestContext:
    """``functions/admin``: the admin API, served by Mangum."""
    from tollgate.api.admin import router
    from tollgate.api.analytics import router as analytics_router
    from tollgate.api.public import health_router

    return create_app(
        [router, analytics_router, health_router], title="Tollgate admin API", services=services
    )


def local_app(services: Services | None = None) -> RequestContext:
    """Every route in one app, for ``make dev`` and the end-to-end tests."""
    from tollgate.api.admin import router
    from tollgate.api.analytics import router as analytics_router
    from tollgate.api.messages import messages_router
    from tollgate.api.public import chat_router, health_router, models_router

    return create_app(
        [chat_router, messages_router, models_router, router, analytics_router, health_router],
        title="Tollgate (local)",
        services=services,
        direct=[chat_router, messages_router, models_router],
    )
