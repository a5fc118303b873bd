"""The admin API (``/admin/v1``). Every route needs the admin credential; handlers are one call."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response, status

from tollgate.admin.schemas import (
    ID_PATTERN,
    NAME_PATTERN,
    BalanceOut,
    CreditIn,
    EntryOut,
    IssuedKeyOut,
    KeyIn,
    KeyOut,
    Page,
    PriceIn,
    PriceOut,
    ProviderIn,
    ProviderOut,
    RouteIn,
    RouteOut,
    TenantIn,
    TenantOut,
    TenantUpdate,
)
from tollgate.api.deps import ServicesDep, require_admin
from tollgate.store.records import UsageRecord

router = APIRouter(prefix="/admin/v1", tags=["admin"], dependencies=[Depends(require_admin)])

ProviderName = Annotated[str, Path(pattern=NAME_PATTERN)]
ObjectId = Annotated[str, Path(pattern=ID_PATTERN)]
Limit = Annotated[int, Query(ge=1, le=1000)]
Cursor = Annotated[str | None, Query(max_length=2048)]


@router.put("/providers/{name}", operation_id="putProvider")
def put_provider(name: ProviderName, body: ProviderIn, services: ServicesDep) -> ProviderOut:
    return services.admin.put_provider(name, body)


@router.get("/providers", operation_id="listProviders")
def list_providers(services: ServicesDep) -> Page[ProviderOut]:
    return Page(data=services.admin.list_providers())


@router.get("/providers/{name}", operation_id="getProvider")
def get_provider(name: ProviderName, services: ServicesDep) -> ProviderOut:
    return services.admin.get_provider(name)


# Price routes come before the ``{model:path}`` routes, which would otherwise swallow them.
@router.put("/models/{model:path}/prices", operation_id="putModelPrice", status_code=status.HTTP_201_CREATED)
def put_model_price(model: str, body: PriceIn, services: ServicesDep) -> PriceOut:
    return services.admin.put_price(model, body)


@router.get("/models/{model:path}/prices", operation_id="listModelPrices")
def list_model_prices(model: str, services: ServicesDep) -> Page[PriceOut]:
    return Page(data=services.admin.prices(model))


@router.put("/models/{model:path}", operation_id="putModel")
def put_model(model: str, body: RouteIn, services: ServicesDep) -> RouteOut:
    return services.admin.put_route(model, body)


@router.get("/models", operation_id="listModelRoutes")
def list_model_routes(services: ServicesDep) -> Page[RouteOut]:
    return Page(data=services.admin.list_routes())


@router.get("/models/{model:path}", operation_id="getModelRoute")
def get_model_route(model: str, services: ServicesDep) -> RouteOut:
    return services.admin.get_route(model)


@router.delete(
    "/models/{model:path}", operation_id="deleteModelRoute", status_code=status.HTTP_204_NO_CONTENT
)
def delete_model_route(model: str, services: ServicesDep) -> Response:
    services.admin.delete_route(model)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/tenants", operation_id="createTenant", status_code=status.HTTP_201_CREATED)
def create_tenant(body: TenantIn, services: ServicesDep) -> TenantOut:
    return services.admin.create_tenant(body)


@router.get("/tenants", operation_id="listTenants")
def list_tenants(services: ServicesDep, limit: Limit = 100, cursor: Cursor = None) -> Page[TenantOut]:
    data, next_cursor = services.admin.list_tenants(limit=limit, cursor=cursor)
    return Page(data=data, next_cursor=next_cursor)


@router.get("/tenants/{tenant_id}", operation_id="getTenant")
def get_tenant(tenant_id: ObjectId, services: ServicesDep) -> TenantOut:
    return services.admin.get_tenant(tenant_id)


@router.patch("/tenants/{tenant_id}", operation_id="updateTenant")
def update_tenant(tenant_id: ObjectId, body: TenantUpdate, services: ServicesDep) -> TenantOut:
    return services.admin.update_tenant(tenant_id, body)


@router.post("/tenants/{tenant_id}/credits", operation_id="addCredits", status_code=status.HTTP_201_CREATED)
def add_credits(tenant_id: ObjectId, body: CreditIn, services: ServicesDep, response: Response) -> EntryOut:
    entry, new = services.admin.add_credits(tenant_id, body, actor="admin")
    if not new:
        response.status_code = status.HTTP_200_OK  # a replay of the same idempotency_key
    return entry


@router.get("/tenants/{tenant_id}/balance", operation_id="getBalance")
def get_balance(tenant_id: ObjectId, services: ServicesDep) -> BalanceOut:
    return services.admin.balance(tenant_id)


@router.get("/tenants/{tenant_id}/ledger", operation_id="listLedgerEntries")
def list_ledger(
    tenant_id: ObjectId, services: ServicesDep, limit: Limit = 100, cursor: Cursor = None
) -> Page[EntryOut]:
    data, next_cursor = services.admin.ledger_entries(tenant_id, limit=limit, cursor=cursor)
    return Page(data=data, next_cursor=next_cursor)


@router.post("/keys", operation_id="createKey", status_code=status.HTTP_201_CREATED)
def create_key(body: KeyIn, services: ServicesDep) -> IssuedKeyOut:
    return services.admin.issue_key(body)


@router.get("/keys", operation_id="listKeys")
def list_keys(
    services: ServicesDep,
    tenant_id: Annotated[str, Query(pattern=ID_PATTERN)],
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[KeyOut]:
    data, next_cursor = services.admin.list_keys(tenant_id, limit=limit, cursor=cursor)
    return Page(data=data, next_cursor=next_cursor)


@router.get("/keys/{key_id}", operation_id="getKey")
def get_key(key_id: ObjectId, services: ServicesDep) -> KeyOut:
    return services.admin.get_key(key_id)


@router.delete("/keys/{key_id}", operation_id="revokeKey")
def revoke_key(key_id: ObjectId, services: ServicesDep) -> KeyOut:
    return services.admin.revoke_key(key_id)


@router.get("/usage", operation_id="listUsage")
def list_usage(
    services: ServicesDep,
    tenant_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    key_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    since: Annotated[datetime | None, Query(description="Start (inclusive); default 24 hours ago")] = None,
    until: Annotated[datetime | None, Query(description="End (exclusive); default now")] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[UsageRecord]:
    end = _utc(until) if until else datetime.now(UTC)
    start = _utc(since) if since else end - timedelta(days=1)
    data, next_cursor = services.admin.usage(
        since_ms=int(start.timestamp() * 1000),
        until_ms=int(end.timestamp() * 1000),
        tenant_id=tenant_id,
        key_id=key_id,
        limit=limit,
        cursor=cursor,
    )
    return Page(data=data, next_cursor=next_cursor)


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
