"""The admin API as one principal may use it: role checks, tenant isolation, ceilings and the audit log.

``AdminService`` performs operations; this layer decides whether the caller may, and records what
happened. Every admin route goes through it, so the rules live in one place:

* **Roles.** ``owner`` and ``admin`` change the catalog (providers, models, prices, tenants, credits);
  ``viewer`` reads everything and changes nothing; ``tenant_admin`` reads its tenant and manages its
  tenant's keys, nothing else. A refusal is a 403 and an audit entry.
* **Isolation.** An object of another tenant is reported exactly as a missing one (404, same
  message), checked before any change, so ids neither leak nor change hands. The attempt is audited
  under the caller's tenant, never the target's.
* **Ceilings.** A key issued, updated, rotated or revoked by a principal stays within its own reach:
  its tenant, its role (``AdminPrincipal.may_mint``), and for admin keys its models and expiry.
  Rotating hands out a working secret, and an update may widen a key, so the rotated or updated key
  must fit the ceiling too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from pydantic import BaseModel

from tollgate.admin.schemas import (
    AuditEntryOut,
    AuditPage,
    AuditVerificationOut,
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
    RouteIn,
    RouteOut,
    SessionRevocationIn,
    SessionRevocationOut,
    TenantIn,
    TenantOut,
    TenantUpdate,
)
from tollgate.errors import InvalidRequestError, NotFoundError, PermissionDeniedError
from tollgate.store.audit import AuditFilter, AuditRecord, Outcome, parse_cursor

if TYPE_CHECKING:
    from tollgate.admin.audit import AdminContext
    from tollgate.admin.principal import Role
    from tollgate.container import Services
    from tollgate.store.records import UsageRecord

T = TypeVar("T")


def page(items: Sequence[T], key: Callable[[T], str], *, limit: int, cursor: str | None) -> Page[T]:
    """A page of a short, fully loaded list (providers, models, prices), in key order."""
    ordered = sorted(items, key=key)
    if cursor is not None:
        ordered = [item for item in ordered if key(item) > cursor]
    data = ordered[:limit]
    return Page(data=data, next_cursor=key(data[-1]) if len(ordered) > limit else None)


def audit_out(record: AuditRecord) -> AuditEntryOut:
    return AuditEntryOut(
        seq=record.seq,
        at_ms=record.at_ms,
        request_id=record.request_id,
        actor=record.actor,
        role=record.role,
        action=record.action,
        target=record.target,
        tenant_id=record.tenant_id,
        outcome=record.outcome,
        status=record.status,
        reason=record.reason,
        diff=json.loads(record.diff) if record.diff else None,
        prev_hash=record.prev_hash,
        hash=record.hash,
    )


class AdminAccess:
    def __init__(self, services: Services, context: AdminContext) -> None:
        self._services = services
        self._admin = services.admin
        self._audit = services.audit_trail
        self._context = context
        self._principal = context.principal

    # -- the checks ----------------------------------------------------------------------------

    def _denied(self, action: str, target: str, reason: str, *, status: int) -> None:
        self._audit.denied(
            request_id=self._context.request_id,
            actor=self._principal.actor,
            role=self._principal.role,
            tenant_id=self._principal.tenant_id,
            action=action,
            target=target,
            status=status,
            reason=reason,
        )

    def _require(self, allowed: bool, action: str, target: str, message: str) -> None:
        if not allowed:
            self._denied(action, target, message, status=403)
            raise PermissionDeniedError(message)

    def _manage_catalog(self, action: str, target: str) -> None:
        self._require(
            self._principal.manages_catalog,
            action,
            target,
            f"The {self._principal.role} role cannot do this.",
        )

    def _read_catalog(self, action: str, target: str) -> None:
        self._require(self._principal.is_global, action, target, "A tenant admin cannot read this.")

    def _write(self, action: str, target: str) -> None:
        self._require(self._principal.can_write, action, target, "The viewer role changes nothing.")

    def _tenant(self, tenant_id: str, action: str) -> TenantOut:
        """The tenant, if it exists and the caller may see it; otherwise the same 404 either way."""
        if not self._principal.sees(tenant_id):
            self._denied(action, f"tenant:{tenant_id}", "another tenant's object", status=404)
            raise NotFoundError(f"No tenant '{tenant_id}'.")
        return self._admin.get_tenant(tenant_id)

    def _key(self, key_id: str, action: str) -> KeyOut:
        key = self._admin.get_key(key_id)
        if not self._principal.sees(key.tenant_id):
            self._denied(action, f"key:{key_id}", "another tenant's object", status=404)
            raise NotFoundError(f"No key '{key_id}'.")
        return key

    def _within_ceiling(
        self, action: str, target: str, *, role: Role | None, models: list[str] | None, expires_at: int | None
    ) -> None:
        """A key the caller issues (or rotates, receiving its secret) may do no more than the caller."""
        principal = self._principal
        if role is not None:
            self._require(
                principal.may_mint(role),
                action,
                target,
                f"The {principal.role} role cannot manage keys of role {role}.",
            )
        if principal.allowed_models is not None:
            self._require(
                models is not None and set(models) <= principal.allowed_models,
                action,
                target,
                "allowed_models must be within this admin key's own allowed_models.",
            )
        if principal.expires_at is not None:
            self._require(
                expires_at is not None and expires_at <= principal.expires_at,
                action,
                target,
                "expires_at must be set, and no later than this admin key's own expiry.",
            )

    # -- providers -----------------------------------------------------------------------------

    def put_provider(self, name: str, body: ProviderIn) -> ProviderOut:
        target = f"provider:{name}"
        self._manage_catalog("provider.put", target)
        before = self._maybe(lambda: self._admin.get_provider(name))
        after = self._admin.put_provider(name, body)
        self._changed("provider.put", target, None, before, after)
        return after

    def put_provider_credential(self, name: str, body: ProviderCredentialIn) -> ProviderOut:
        target = f"provider:{name}"
        self._manage_catalog("provider.credential", target)
        before = self._admin.get_provider(name)
        after = self._admin.put_provider_credential(name, body)
        self._changed("provider.credential", target, None, before, after)
        return after

    def list_providers(self, *, limit: int, cursor: str | None) -> Page[ProviderOut]:
        self._read_catalog("provider.list", "providers")
        return page(self._admin.list_providers(), lambda p: p.name, limit=limit, cursor=cursor)

    def get_provider(self, name: str) -> ProviderOut:
        self._read_catalog("provider.get", f"provider:{name}")
        return self._admin.get_provider(name)

    # -- model routes and prices -----------------------------------------------------------------

    def put_route(self, model: str, body: RouteIn) -> RouteOut:
        target = f"model:{model}"
        self._manage_catalog("model.put", target)
        before = self._maybe(lambda: self._admin.get_route(model))
        after = self._admin.put_route(model, body)
        self._changed("model.put", target, None, before, after)
        return after

    def list_routes(self, *, limit: int, cursor: str | None) -> Page[RouteOut]:
        self._read_catalog("model.list", "models")
        return page(self._admin.list_routes(), lambda r: r.model, limit=limit, cursor=cursor)

    def get_route(self, model: str) -> RouteOut:
        self._read_catalog("model.get", f"model:{model}")
        return self._admin.get_route(model)

    def delete_route(self, model: str) -> None:
        target = f"model:{model}"
        self._manage_catalog("model.delete", target)
        before = self._maybe(lambda: self._admin.get_route(model))
        self._admin.delete_route(model)
        self._changed("model.delete", target, None, before, None)

    def put_price(self, model: str, body: PriceIn) -> PriceOut:
        target = f"model:{model}"
        self._manage_catalog("price.put", target)
        after = self._admin.put_price(model, body)
        self._changed("price.put", target, None, None, after, status=201)
        return after

    def list_prices(self, model: str, *, limit: int, cursor: str | None) -> Page[PriceOut]:
        self._read_catalog("price.list", f"model:{model}")
        return page(
            self._admin.prices(model), lambda p: f"{p.effective_at_ms:013d}", limit=limit, cursor=cursor
        )

    # -- tenants and credits -------------------------------------------------------------------

    def create_tenant(self, body: TenantIn) -> TenantOut:
        self._manage_catalog("tenant.create", f"tenant:{body.id or '(new)'}")
        after = self._admin.create_tenant(body)
        self._changed("tenant.create", f"tenant:{after.id}", after.id, None, after, status=201)
        return after

    def list_tenants(self, *, limit: int, cursor: str | None) -> Page[TenantOut]:
        if not self._principal.is_global:
            own = self._principal.tenant_id
            mine = (
                [self._admin.get_tenant(own)] if own is not None and (cursor is None or cursor < own) else []
            )
            return Page(data=mine)
        data, next_cursor = self._admin.list_tenants(limit=limit, cursor=cursor)
        return Page(data=data, next_cursor=next_cursor)

    def get_tenant(self, tenant_id: str) -> TenantOut:
        return self._tenant(tenant_id, "tenant.get")

    def update_tenant(self, tenant_id: str, body: TenantUpdate) -> TenantOut:
        before = self._tenant(tenant_id, "tenant.update")
        self._manage_catalog("tenant.update", f"tenant:{tenant_id}")
        after = self._admin.update_tenant(tenant_id, body)
        self._changed("tenant.update", f"tenant:{tenant_id}", tenant_id, before, after)
        return after

    def add_credits(self, tenant_id: str, body: CreditIn) -> tuple[EntryOut, bool]:
        self._tenant(tenant_id, "credits.add")
        self._manage_catalog("credits.add", f"tenant:{tenant_id}")
        entry, new = self._admin.add_credits(tenant_id, body, actor=self._principal.actor)
        if new:
            self._changed("credits.add", f"tenant:{tenant_id}", tenant_id, None, entry, status=201)
        return entry, new

    def balance(self, tenant_id: str) -> BalanceOut:
        self._tenant(tenant_id, "balance.get")
        return self._admin.balance(tenant_id)

    def ledger_entries(self, tenant_id: str, *, limit: int, cursor: str | None) -> Page[EntryOut]:
        self._tenant(tenant_id, "ledger.list")
        data, next_cursor = self._admin.ledger_entries(tenant_id, limit=limit, cursor=cursor)
        return Page(data=data, next_cursor=next_cursor)

    # -- keys ----------------------------------------------------------------------------------

    def issue_key(self, body: KeyIn) -> IssuedKeyOut:
        target = f"tenant:{body.tenant_id}" if body.tenant_id is not None else "admin-keys"
        if body.tenant_id is not None:
            self._tenant(body.tenant_id, "key.create")
        elif not self._principal.is_global:
            self._require(False, "key.create", target, "A tenant admin cannot issue global admin keys.")
        self._write("key.create", target)
        self._within_ceiling(
            "key.create", target, role=body.role, models=body.allowed_models, expires_at=body.expires_at
        )
        issued = self._admin.issue_key(body, created_by=self._principal.actor)
        shown = KeyOut(**issued.model_dump(exclude={"key"}))
        self._changed("key.create", f"key:{issued.id}", issued.tenant_id, None, shown, status=201)
        return issued

    def list_keys(self, tenant_id: str | None, *, limit: int, cursor: str | None) -> Page[KeyOut]:
        if tenant_id is None and not self._principal.is_global:
            tenant_id = self._principal.tenant_id
        if tenant_id is not None:
            self._tenant(tenant_id, "key.list")
        data, next_cursor = self._admin.list_keys(tenant_id, limit=limit, cursor=cursor)
        return Page(data=data, next_cursor=next_cursor)

    def get_key(self, key_id: str) -> KeyOut:
        return self._key(key_id, "key.get")

    def revoke_sessions(self, body: SessionRevocationIn) -> SessionRevocationOut:
        """Ends a signed-in user's sessions: their tokens issued until now are refused. Owners and
        admins only; nobody revokes their own (it would lock the last owner out by mistake)."""
        action, target = "session.revoke", f"sessions:{body.actor}"
        self._manage_catalog(action, target)
        if body.actor == self._principal.actor:
            self._denied(action, target, "one's own sessions", status=400)
            raise InvalidRequestError("You cannot revoke your own sessions; sign out instead.", param="actor")
        after = self._admin.revoke_sessions(body.actor, by=self._principal.actor)
        self._changed(action, target, None, None, after)
        return after

    def revoke_key(self, key_id: str) -> KeyOut:
        before = self._key(key_id, "key.revoke")
        target = f"key:{key_id}"
        self._write("key.revoke", target)
        if before.scope == "admin":
            self._within_ceiling("key.revoke", target, role=before.role, models=None, expires_at=None)
        after = self._admin.revoke_key(key_id)
        self._changed("key.revoke", target, before.tenant_id, before, after)
        return after

    def update_key(self, key_id: str, body: KeyUpdate) -> KeyOut:
        """The key as the update leaves it must fit the caller's ceiling, as an issued key does: a
        caller can narrow a wider key into its reach, never widen one (or itself) beyond it."""
        before = self._key(key_id, "key.update")
        target = f"key:{key_id}"
        self._write("key.update", target)
        given = body.model_fields_set
        self._within_ceiling(
            "key.update",
            target,
            role=before.role if before.scope == "admin" else None,
            models=body.allowed_models if "allowed_models" in given else before.allowed_models,
            expires_at=body.expires_at if "expires_at" in given else before.expires_at,
        )
        after = self._admin.update_key(key_id, body)
        self._changed("key.update", target, before.tenant_id, before, after)
        return after

    def rotate_key(self, key_id: str, *, grace_seconds: int) -> IssuedKeyOut:
        before = self._key(key_id, "key.rotate")
        target = f"key:{key_id}"
        self._write("key.rotate", target)
        role = before.role if before.scope == "admin" else None
        self._within_ceiling(
            "key.rotate", target, role=role, models=before.allowed_models, expires_at=before.expires_at
        )
        rotated = self._admin.rotate_key(key_id, grace_seconds=grace_seconds)
        shown = KeyOut(**rotated.model_dump(exclude={"key"}))
        self._changed("key.rotate", target, before.tenant_id, before, shown)
        return rotated

    # -- usage and audit -----------------------------------------------------------------------

    def usage(
        self,
        *,
        since_ms: int,
        until_ms: int,
        tenant_id: str | None,
        key_id: str | None,
        limit: int,
        cursor: str | None,
    ) -> Page[UsageRecord]:
        if tenant_id is not None:
            self._tenant(tenant_id, "usage.list")
        elif not self._principal.is_global:
            tenant_id = self._principal.tenant_id
        if key_id is not None:
            key = self._key(key_id, "usage.list")
            if tenant_id is not None and key.tenant_id != tenant_id:
                return Page(data=[])
        data, next_cursor = self._admin.usage(
            since_ms=since_ms,
            until_ms=until_ms,
            tenant_id=tenant_id,
            key_id=key_id,
            limit=limit,
            cursor=cursor,
        )
        return Page(data=data, next_cursor=next_cursor)

    def report_scope(self, action: str, *, tenant_id: str | None, key_id: str | None = None) -> str | None:
        """The tenant an analytics query is about: for a global principal ``tenant_id`` as given (None:
        every tenant; ids are plain filters there), for a tenant admin its own tenant. Another tenant,
        or a key that is missing or of another tenant, is a 404 like every other route's, and audited."""
        if self._principal.is_global:
            return tenant_id
        if tenant_id is not None and not self._principal.sees(tenant_id):
            self._denied(action, f"tenant:{tenant_id}", "another tenant's object", status=404)
            raise NotFoundError(f"No tenant '{tenant_id}'.")
        if key_id is not None:
            self._key(key_id, action)
        return self._principal.tenant_id

    def audit(
        self,
        *,
        tenant_id: str | None,
        actor: str | None,
        action: str | None,
        outcome: Outcome | None,
        since_ms: int | None,
        until_ms: int | None,
        limit: int,
        cursor: str | None,
        verify: bool,
    ) -> AuditPage:
        if not self._principal.is_global:
            if tenant_id is not None and not self._principal.sees(tenant_id):
                self._denied("audit.list", f"tenant:{tenant_id}", "another tenant's object", status=404)
                raise NotFoundError(f"No tenant '{tenant_id}'.")
            tenant_id = self._principal.tenant_id
        if verify:
            self._read_catalog("audit.verify", "audit")
        if since_ms is not None and until_ms is not None and since_ms >= until_ms:
            raise InvalidRequestError("'since' must be before 'until'.", param="since")
        where = AuditFilter(
            tenant_id=tenant_id,
            actor=actor,
            action=action,
            outcome=outcome,
            since_ms=since_ms,
            until_ms=until_ms,
        )
        log = self._services.audit_log
        records, next_seq = log.query(where, limit=limit, before_seq=parse_cursor(cursor))
        verification = None
        if verify:
            check = log.verify()
            verification = AuditVerificationOut(
                verified=check.verified,
                entries=check.entries,
                head_seq=check.head_seq,
                first_broken_seq=check.first_broken_seq,
                reason=check.reason,
            )
        return AuditPage(
            data=[audit_out(record) for record in records],
            next_cursor=str(next_seq) if next_seq is not None else None,
            verification=verification,
        )

    def audit_entry(self, seq: int) -> AuditEntryOut:
        record = self._services.audit_log.get(seq)
        if record is None or not self._principal.sees(record.tenant_id):
            if record is not None:
                self._denied("audit.get", f"audit:{seq}", "another tenant's object", status=404)
            raise NotFoundError(f"No audit entry {seq}.")
        return audit_out(record)

    # -- helpers -------------------------------------------------------------------------------

    def _changed(
        self,
        action: str,
        target: str,
        tenant_id: str | None,
        before: BaseModel | None,
        after: BaseModel | None,
        *,
        status: int = 200,
    ) -> None:
        self._audit.changed(
            self._context,
            action=action,
            target=target,
            tenant_id=tenant_id,
            before=before,
            after=after,
            status=status,
        )

    @staticmethod
    def _maybe(read: Callable[[], T]) -> T | None:
        try:
            return read()
        except NotFoundError:
            return None
