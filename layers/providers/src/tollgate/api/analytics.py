"""The analytics API (``/admin/v1/analytics``): series from rollups, quotas, and reconciliation.

Every route needs an admin credential. A tenant admin sees its own tenant only: ``tenant_id``
defaults to it, and another tenant (or another tenant's key) is reported as not found, and audited,
as on every other admin route (``AdminAccess.report_scope``).
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Literal

from tollgate.admin.access import AdminAccess
from tollgate.admin.schemas import ID_PATTERN
from tollgate.api.routes import InQuery, RouteTable
from tollgate.container import Services
from tollgate.errors import InvalidRequestError
from tollgate.reports import Filters
from tollgate.schemas.analytics import AnalyticsPage, QuotaOut, ReconcileReport

analytics_routes = RouteTable("analytics", prefix="/admin/v1/analytics", admin=True)

TenantId = Annotated[str | None, InQuery(pattern=ID_PATTERN)]
Cursor = Annotated[str | None, InQuery(max_length=2048)]
DAY_PATTERN = r"^\d{4}-\d{2}-\d{2}$"


#: Times outside these bounds are refused (400), so date arithmetic on them cannot overflow.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


def _moment(value: datetime, param: str) -> datetime:
    moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        within = EARLIEST <= moment <= LATEST
    except OverflowError:  # an offset that moves the moment past datetime's own range
        within = False
    if not within:
        raise InvalidRequestError(f"'{param}' must lie between the years 2000 and 2200.", param=param)
    return moment


def _day(value: str, param: str) -> date:
    try:
        day = date.fromisoformat(value)
    except ValueError as error:
        raise InvalidRequestError(f"'{param}' is not a valid day (YYYY-MM-DD).", param=param) from error
    if not EARLIEST.date() <= day < LATEST.date():
        raise InvalidRequestError(f"'{param}' must lie between the years 2000 and 2200.", param=param)
    return day


@analytics_routes.get("", operation_id="queryAnalytics")
def query_analytics(
    access: AdminAccess,
    services: Services,
    since: Annotated[
        datetime | None,
        InQuery(description="Start (inclusive); default 30 days (day) or 24 hours (hour) ago"),
    ] = None,
    until: Annotated[datetime | None, InQuery(description="End (exclusive); default now")] = None,
    granularity: Annotated[Literal["hour", "day"], InQuery()] = "day",
    group_by: Annotated[Literal["tenant", "key", "model", "provider"], InQuery()] = "tenant",
    tenant_id: TenantId = None,
    key_id: Annotated[str | None, InQuery(pattern=ID_PATTERN)] = None,
    model: Annotated[str | None, InQuery(max_length=256)] = None,
    provider: Annotated[str | None, InQuery(max_length=64)] = None,
    limit: Annotated[int, InQuery(ge=1, le=5000)] = 1000,
    cursor: Cursor = None,
) -> AnalyticsPage:
    """Requests, errors, tokens, cost, latency and TTFB percentiles per period and group, from rollups."""
    end = _moment(until, "until") if until else datetime.now(UTC)
    default_span = timedelta(days=30) if granularity == "day" else timedelta(days=1)
    start = _moment(since, "since") if since else end - default_span
    return services.reports.series(
        since_ms=int(start.timestamp() * 1000),
        until_ms=int(end.timestamp() * 1000),
        granularity=granularity,
        group_by=group_by,
        tenant_id=access.report_scope("analytics.query", tenant_id=tenant_id, key_id=key_id),
        filters=Filters(key_id=key_id, model=model, provider=provider),
        limit=limit,
        cursor=cursor,
    )


@analytics_routes.get("/quota", operation_id="getQuota")
def get_quota(access: AdminAccess, services: Services, tenant_id: TenantId = None) -> QuotaOut:
    """A tenant's balance, its burn rate over the last 7 days, and the days its credits last at it."""
    tenant = access.report_scope("analytics.quota", tenant_id=tenant_id)
    if tenant is None:
        raise InvalidRequestError("Name the tenant: tenant_id is required.", param="tenant_id")
    return services.reports.quota(tenant, now_ms=time.time_ns() // 1_000_000)


@analytics_routes.get("/reconcile", operation_id="reconcileUsage")
def reconcile_usage(
    access: AdminAccess,
    services: Services,
    since: Annotated[
        str | None,
        InQuery(
            pattern=DAY_PATTERN,
            description="First UTC day, YYYY-MM-DD (inclusive); default 6 days before until",
        ),
    ] = None,
    until: Annotated[
        str | None,
        InQuery(pattern=DAY_PATTERN, description="Last UTC day, YYYY-MM-DD (inclusive); default today"),
    ] = None,
    tenant_id: TenantId = None,
    limit: Annotated[int, InQuery(ge=1, le=1000, description="Tenants per page")] = 100,
    cursor: Cursor = None,
) -> ReconcileReport:
    """Per tenant and day: usage records vs ledger charge entries vs rollups, and every difference."""
    last = _day(until, "until") if until else datetime.now(UTC).date()
    first = _day(since, "since") if since else last - timedelta(days=6)
    return services.reports.reconcile(
        first_day=first.isoformat(),
        last_day=last.isoformat(),
        tenant_id=access.report_scope("analytics.reconcile", tenant_id=tenant_id),
        limit=limit,
        cursor=cursor,
    )
