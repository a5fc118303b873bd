"""The ASGI apps, one per Lambda function, and the all-in-one app of local mode.

Each app is the same FastAPI factory with a different set of routers, wrapped in
``RequestContext``. Settings are validated when the app is built (at cold start); ``Services``
creates its clients lazily, so building an app does no I/O.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from tollgate.api.errors import install_error_handlers
from tollgate.api.middleware import RequestContext
from tollgate.api.openapi import install_openapi
from tollgate.container import Services
from tollgate.settings import get_settings


def create_app(
    routers: Sequence[APIRouter], *, title: str, services: Services | None = None
) -> RequestContext:
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
    return RequestContext(app, max_body_bytes=shared.settings.max_request_bytes)


def stream_app(services: Services | None = None) -> RequestContext:
    """``functions/stream``: the chat routes, served by uvicorn under the Lambda Web Adapter."""
    from tollgate.api.messages import messages_router
    from tollgate.api.public import chat_router, health_router

    return create_app(
        [chat_router, messages_router, health_router], title="Tollgate streaming API", services=services
    )


def gateway_app(services: Services | None = None) -> RequestContext:
    """``functions/gateway``: the buffered public routes, served by Mangum."""
    from tollgate.api.public import health_router, models_router

    return create_app([models_router, health_router], title="Tollgate API", services=services)


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
    )
