"""The admin API (``/admin/v1``). Every route needs an admin credential (an admin table:
``tollgate.api.admin_caller``) and goes through ``AdminAccess``, which checks the caller's role and
tenant, and writes the audit log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from starlette.responses import Response

from tollgate.admin.access import AdminAccess
from tollgate.admin.schemas import (
    ID_PATTERN,
    MODEL_PATTERN,
    NAME_PATTERN,
    AuditEntryOut,
    AuditPage,
    BalanceOut,
    CreditIn,
    EntryOut,
    IssuedKeyOut,
    KeyIn,
    KeyOut,
    KeyUpdate,
    Page,
    PriceIn,
    PriceOut,
    ProviderCredentialIn,
    ProviderIn,
    ProviderOut,
    RotateKeyIn,
    RouteIn,
    RouteOut,
    SessionRevocationIn,
    SessionRevocationOut,
    TenantIn,
    TenantOut,
    TenantUpdate,
)
from tollgate.api.routes import InPath, InQuery, RouteTable
from tollgate.errors import InvalidRequestError
from tollgate.store.records import UsageRecord

admin_routes = RouteTable("admin", prefix="/admin/v1", admin=True)

ProviderName = Annotated[str, InPath(pattern=NAME_PATTERN)]
ObjectId = Annotated[str, InPath(pattern=ID_PATTERN)]
Model = Annotated[str, InPath(pattern=MODEL_PATTERN.pattern)]
Limit = Annotated[int, InQuery(ge=1, le=1000)]
#: Cursors are what a previous page returned: ids, names, numbers or base64url; ASCII, so a cursor
#: always fits a DynamoDB key (1 KB).
Cursor = Annotated[str | None, InQuery(min_length=1, max_length=1024, pattern=r"^[A-Za-z0-9._:/@+=~-]+$")]
#: Times the API accepts: from the epoch to the end of year 9998 (so "a day before" never overflows).
_EARLIEST = datetime(1970, 1, 2, tzinfo=UTC)
_LATEST = datetime(9998, 12, 31, tzinfo=UTC)


def _epoch_ms(moment: datetime, param: str) -> int:
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    try:
        in_range = _EARLIEST <= moment <= _LATEST
    except (OverflowError, ValueError):
        in_range = False
    if not in_range:
        raise InvalidRequestError(f"'{param}' must be between 1970-01-02 and 9998-12-31.", param=param)
    return int(moment.timestamp() * 1000)


# -- providers --------------------------------------------------------------------------------


@admin_routes.put("/providers/{name}", operation_id="putProvider")
def put_provider(name: ProviderName, body: ProviderIn, access: AdminAccess) -> ProviderOut:
    return access.put_provider(name, body)


@admin_routes.put("/providers/{name}/credential", operation_id="putProviderCredential")
def put_provider_credential(
    name: ProviderName, body: ProviderCredentialIn, access: AdminAccess
) -> ProviderOut:
    """Rotates a provider's credential. Write-only: the response shows a masked hint, never the value."""
    return access.put_provider_credential(name, body)


@admin_routes.get("/providers", operation_id="listProviders")
def list_providers(access: AdminAccess, limit: Limit = 100, cursor: Cursor = None) -> Page[ProviderOut]:
    return access.list_providers(limit=limit, cursor=cursor)


@admin_routes.get("/providers/{name}", operation_id="getProvider")
def get_provider(name: ProviderName, access: AdminAccess) -> ProviderOut:
    return access.get_provider(name)


# -- model routes and prices ------------------------------------------------------------------
# Price routes come before the ``{model:path}`` routes, which would otherwise swallow them.


@admin_routes.put("/models/{model:path}/prices", operation_id="putModelPrice", status_code=201)
def put_model_price(model: Model, body: PriceIn, access: AdminAccess) -> PriceOut:
    return access.put_price(model, body)


@admin_routes.get("/models/{model:path}/prices", operation_id="listModelPrices")
def list_model_prices(
    model: Model, access: AdminAccess, limit: Limit = 100, cursor: Cursor = None
) -> Page[PriceOut]:
    return access.list_prices(model, limit=limit, cursor=cursor)


@admin_routes.put("/models/{model:path}", operation_id="putModel")
def put_model(model: Model, body: RouteIn, access: AdminAccess) -> RouteOut:
    return access.put_route(model, body)


@admin_routes.get("/models", operation_id="listModelRoutes")
def list_model_routes(access: AdminAccess, limit: Limit = 100, cursor: Cursor = None) -> Page[RouteOut]:
    return access.list_routes(limit=limit, cursor=cursor)


@admin_routes.get("/models/{model:path}", operation_id="getModelRoute")
def get_model_route(model: Model, access: AdminAccess) -> RouteOut:
    return access.get_route(model)


@admin_routes.delete("/models/{model:path}", operation_id="deleteModelRoute", status_code=204)
def delete_model_route(model: Model, access: AdminAccess) -> Response:
    access.delete_route(model)
    return Response(status_code=204)


# -- tenants and credits ----------------------------------------------------------------------


@admin_routes.post("/tenants", operation_id="createTenant", status_code=201)
def create_tenant(body: TenantIn, access: AdminAccess) -> TenantOut:
    return access.create_tenant(body)


@admin_routes.get("/tenants", operation_id="listTenants")
def list_tenants(access: AdminAccess, limit: Limit = 100, cursor: Cursor = None) -> Page[TenantOut]:
    return access.list_tenants(limit=limit, cursor=cursor)


@admin_routes.get("/tenants/{tenant_id}", operation_id="getTenant")
def get_tenant(tenant_id: ObjectId, access: AdminAccess) -> TenantOut:
    return access.get_tenant(tenant_id)


@admin_routes.patch("/tenants/{tenant_id}", operation_id="updateTenant")
def update_tenant(tenant_id: ObjectId, body: TenantUpdate, access: AdminAccess) -> TenantOut:
    return access.update_tenant(tenant_id, body)


@admin_routes.post(
    "/tenants/{tenant_id}/credits",
    operation_id="addCredits",
    status_code=201,
    response_model=EntryOut,
    responses={200: {"model": EntryOut, "description": "A replay of an idempotency_key: no change"}},
)
def add_credits(tenant_id: ObjectId, body: CreditIn, access: AdminAccess) -> Response:
    entry, new = access.add_credits(tenant_id, body)
    return Response(  # 200 for a replay of the same idempotency_key
        entry.model_dump_json(by_alias=True), status_code=201 if new else 200, media_type="application/json"
    )


@admin_routes.get("/tenants/{tenant_id}/balance", operation_id="getBalance")
def get_balance(tenant_id: ObjectId, access: AdminAccess) -> BalanceOut:
    return access.balance(tenant_id)


@admin_routes.get("/tenants/{tenant_id}/ledger", operation_id="listLedgerEntries")
def list_ledger(
    tenant_id: ObjectId, access: AdminAccess, limit: Limit = 100, cursor: Cursor = None
) -> Page[EntryOut]:
    return access.ledger_entries(tenant_id, limit=limit, cursor=cursor)


# -- keys -------------------------------------------------------------------------------------


@admin_routes.post("/keys", operation_id="createKey", status_code=201)
def create_key(body: KeyIn, access: AdminAccess) -> IssuedKeyOut:
    """Issues a data-plane key, or an admin key (``scope: admin``, with a ``role``). Shown once."""
    return access.issue_key(body)


@admin_routes.get("/keys", operation_id="listKeys")
def list_keys(
    access: AdminAccess,
    tenant_id: Annotated[
        str | None,
        InQuery(
            pattern=ID_PATTERN,
            description="A tenant's keys; without it, the global admin keys "
            "(a tenant admin: its own tenant's keys)",
        ),
    ] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[KeyOut]:
    return access.list_keys(tenant_id, limit=limit, cursor=cursor)


@admin_routes.get("/keys/{key_id}", operation_id="getKey")
def get_key(key_id: ObjectId, access: AdminAccess) -> KeyOut:
    return access.get_key(key_id)


@admin_routes.patch("/keys/{key_id}", operation_id="updateKey")
def update_key(key_id: ObjectId, body: KeyUpdate, access: AdminAccess) -> KeyOut:
    """Changes a key's name, models, expiry, budget or limits: a field left out stays, ``null``
    removes it. The id and secret stay; every process sees the change within 60 seconds."""
    return access.update_key(key_id, body)


@admin_routes.post("/sessions/revoke", operation_id="revokeAdminSessions")
def revoke_admin_sessions(body: SessionRevocationIn, access: AdminAccess) -> SessionRevocationOut:
    """Ends a signed-in admin's sessions (OIDC): every token of that user issued until now is refused,
    everywhere within 60 seconds; signing in again issues tokens that work. Owners and admins only."""
    return access.revoke_sessions(body)


@admin_routes.delete("/keys/{key_id}", operation_id="revokeKey")
def revoke_key(key_id: ObjectId, access: AdminAccess) -> KeyOut:
    """Revokes a key: refused everywhere within 60 seconds (the key cache's bound)."""
    return access.revoke_key(key_id)


@admin_routes.post("/keys/{key_id}/rotate", operation_id="rotateKey")
def rotate_key(key_id: ObjectId, body: RotateKeyIn, access: AdminAccess) -> IssuedKeyOut:
    """A new secret for the same key id, shown once; the old secret works for ``grace_seconds`` more."""
    return access.rotate_key(key_id, grace_seconds=body.grace_seconds)


# -- usage and audit --------------------------------------------------------------------------


@admin_routes.get("/usage", operation_id="listUsage")
def list_usage(
    access: AdminAccess,
    tenant_id: Annotated[str | None, InQuery(pattern=ID_PATTERN)] = None,
    key_id: Annotated[str | None, InQuery(pattern=ID_PATTERN)] = None,
    since: Annotated[datetime | None, InQuery(description="Start (inclusive); default 24 hours ago")] = None,
    until: Annotated[datetime | None, InQuery(description="End (exclusive); default now")] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[UsageRecord]:
    until_ms = _epoch_ms(until, "until") if until else int(datetime.now(UTC).timestamp() * 1000)
    since_ms = (
        _epoch_ms(since, "since") if since else until_ms - int(timedelta(days=1).total_seconds() * 1000)
    )
    return access.usage(
        since_ms=since_ms, until_ms=until_ms, tenant_id=tenant_id, key_id=key_id, limit=limit, cursor=cursor
    )


@admin_routes.get("/audit", operation_id="listAuditEntries")
def list_audit(
    access: AdminAccess,
    tenant_id: Annotated[str | None, InQuery(pattern=ID_PATTERN)] = None,
    actor: Annotated[str | None, InQuery(min_length=1, max_length=512)] = None,
    action: Annotated[str | None, InQuery(min_length=1, max_length=64)] = None,
    outcome: Annotated[Literal["ok", "denied"] | None, InQuery()] = None,
    since: Annotated[datetime | None, InQuery(description="Entries at or after")] = None,
    until: Annotated[datetime | None, InQuery(description="Entries before")] = None,
    verify: Annotated[
        bool, InQuery(description="Also check the whole hash chain and report its first broken link")
    ] = False,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> AuditPage:
    """The audit log, newest first: every admin change and every denied admin attempt."""
    return access.audit(
        tenant_id=tenant_id,
        actor=actor,
        action=action,
        outcome=outcome,
        since_ms=_epoch_ms(since, "since") if since else None,
        until_ms=_epoch_ms(until, "until") if until else None,
        limit=limit,
        cursor=cursor,
        verify=verify,
    )


@admin_routes.get("/audit/{seq}", operation_id="getAuditEntry")
def get_audit_entry(seq: Annotated[int, InPath(ge=1, le=10**15)], access: AdminAccess) -> AuditEntryOut:
    return access.audit_entry(seq)
