"""Admin operations. The routes in ``tollgate.api.admin`` stay thin and call these."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from tollgate.admin.schemas import (
    MODEL_PATTERN,
    BalanceOut,
    BudgetOut,
    CreditIn,
    EntryOut,
    IssuedKeyOut,
    KeyIn,
    KeyOut,
    KeyUpdate,
    LimitsIn,
    PriceIn,
    PriceOut,
    ProviderCredentialIn,
    ProviderIn,
    ProviderOut,
    RouteIn,
    RouteOut,
    RouteTargetOut,
    SessionRevocationOut,
    TenantIn,
    TenantOut,
    TenantUpdate,
)
from tollgate.errors import ConflictError, InvalidRequestError, NotFoundError
from tollgate.keys import IssuedKey, hash_secret, new_key
from tollgate.money import Money, apply_margin
from tollgate.providers.http import check_upstream_url
from tollgate.providers.presets import PRESETS, Family
from tollgate.store.records import (
    KeyLimits,
    KeyRecord,
    PriceRecord,
    ProviderRecord,
    RouteRecord,
    RouteTarget,
    TenantRecord,
    UsageRecord,
)
from tollgate.store.secrets import mask

if TYPE_CHECKING:
    from tollgate.container import Services
    from tollgate.store.ledger import Entry


def provider_out(record: ProviderRecord) -> ProviderOut:
    return ProviderOut(
        name=record.name,
        type=record.type,
        base_url=record.base_url,
        region=record.region,
        enabled=record.enabled,
        has_api_key=record.secret_id is not None,
        api_key_hint=record.api_key_hint,
        timeout_seconds=record.timeout_seconds,
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


def route_out(record: RouteRecord) -> RouteOut:
    return RouteOut(
        model=record.model,
        provider=record.primary.provider,
        upstream_model=record.primary.upstream_model,
        deployments=[RouteTargetOut(**target.model_dump()) for target in record.deployments],
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


def tenant_out(record: TenantRecord) -> TenantOut:
    return TenantOut(
        id=record.id, name=record.name, created_at=record.created_at, budget=BudgetOut.of(record.budget)
    )


def key_out(record: KeyRecord) -> KeyOut:
    return KeyOut(
        id=record.id,
        tenant_id=record.tenant_id,
        name=record.name,
        scope=record.scope,
        role=record.role,
        allowed_models=record.allowed_models,
        created_at=record.created_at,
        expires_at=record.expires_at,
        revoked_at=record.revoked_at,
        rotated_at=record.rotated_at,
        previous_valid_until=record.previous_valid_until,
        created_by=record.created_by,
        budget=BudgetOut.of(record.budget),
        limits=LimitsIn(**record.limits.model_dump()) if record.limits else None,
    )


def price_out(record: PriceRecord) -> PriceOut:
    return PriceOut(**record.model_dump())


def entry_out(entry: Entry) -> EntryOut:
    return EntryOut(
        kind=entry.kind,
        amount=str(Money(entry.amount_micros)),
        created_at_ms=entry.created_at_ms,
        reference=entry.reference,
        note=entry.note,
    )


class AdminService:
    """Blocking (boto3) operations: the admin app runs them in FastAPI's thread pool."""

    def __init__(self, services: Services, *, clock: Callable[[], float] = time.time) -> None:
        self._services = services
        self._clock = clock

    def _now(self) -> int:
        return int(self._clock())

    # -- admin sessions ------------------------------------------------------------------------

    def revoke_sessions(self, actor: str, *, by: str) -> SessionRevocationOut:
        bound = self._services.catalog.revoke_admin_sessions(actor, before=self._now(), by=by)
        self._services.admin_auth.forget_sessions(actor)
        return SessionRevocationOut(actor=actor, revoked_before=bound)

    # -- providers -----------------------------------------------------------------------------

    def put_provider(self, name: str, body: ProviderIn) -> ProviderOut:
        catalog, settings = self._services.catalog, self._services.settings
        preset = PRESETS[body.type]
        existing = catalog.get_provider(name)
        if body.base_url is not None:
            check_upstream_url(
                body.base_url,
                allow_loopback=settings.allow_loopback_upstreams,
                allow_private=settings.allow_private_upstreams,
            )
        elif preset.family not in (Family.FAKE, Family.BEDROCK) and preset.base_url is None:
            raise InvalidRequestError(f"Provider type '{body.type}' needs a base_url.", param="base_url")
        secret_id = existing.secret_id if existing else None
        hint = existing.api_key_hint if existing else None
        if body.api_key is not None:
            plain = body.api_key.get_secret_value()
            secret_id = self._services.secrets.put_provider_key(name, plain)
            hint = mask(plain)
        if preset.needs_key and secret_id is None:
            raise InvalidRequestError(f"Provider type '{body.type}' needs an api_key.", param="api_key")
        now = self._now()
        record = ProviderRecord(
            name=name,
            type=body.type,
            base_url=body.base_url,
            region=body.region,
            enabled=body.enabled,
            secret_id=secret_id,
            api_key_hint=hint,
            timeout_seconds=body.timeout_seconds,
            created_at=existing.created_at if existing else now,
            updated_at=now,
        )
        catalog.put_provider(record)
        self._services.registry.forget()
        return provider_out(record)

    def put_provider_credential(self, name: str, body: ProviderCredentialIn) -> ProviderOut:
        """Replaces a provider's credential (write-only): the new value goes to Secrets Manager."""
        existing = self._services.catalog.get_provider(name)
        if existing is None:
            raise NotFoundError(f"No provider '{name}'.")
        plain = body.api_key.get_secret_value()
        secret_id = self._services.secrets.put_provider_key(name, plain)
        record = existing.model_copy(
            update={"secret_id": secret_id, "api_key_hint": mask(plain), "updated_at": self._now()}
        )
        self._services.catalog.put_provider(record)
        self._services.registry.forget()
        return provider_out(record)

    def get_provider(self, name: str) -> ProviderOut:
        record = self._services.catalog.get_provider(name)
        if record is None:
            raise NotFoundError(f"No provider '{name}'.")
        return provider_out(record)

    def list_providers(self) -> list[ProviderOut]:
        return [provider_out(record) for record in self._services.catalog.list_providers()]

    # -- model routes --------------------------------------------------------------------------

    def put_route(self, model: str, body: RouteIn) -> RouteOut:
        if not MODEL_PATTERN.fullmatch(model):
            raise InvalidRequestError("The model name has characters that are not allowed.", param="model")
        catalog = self._services.catalog
        targets = body.targets()
        for name in dict.fromkeys(target.provider for target in targets):
            if catalog.get_provider(name) is None and name != "fake":
                param = "provider" if body.deployments is None else "deployments"
                raise InvalidRequestError(f"No provider '{name}'. Create it first.", param=param)
        existing = catalog.get_route(model)
        now = self._now()
        record = RouteRecord(
            model=model,
            deployments=[RouteTarget(**target.model_dump()) for target in targets],
            created_at=existing.created_at if existing else now,
            updated_at=now,
        )
        catalog.put_route(record)
        self._services.registry.forget()
        return route_out(record)

    def get_route(self, model: str) -> RouteOut:
        record = self._services.catalog.get_route(model)
        if record is None:
            raise NotFoundError(f"No model route '{model}'.")
        return route_out(record)

    def list_routes(self) -> list[RouteOut]:
        return [route_out(record) for record in self._services.catalog.list_routes()]

    def delete_route(self, model: str) -> None:
        self._services.catalog.delete_route(model)
        self._services.registry.forget()

    # -- tenants -------------------------------------------------------------------------------

    def create_tenant(self, body: TenantIn) -> TenantOut:
        record = TenantRecord(
            id=body.id or f"t_{secrets.token_hex(8)}",
            name=body.name,
            created_at=self._now(),
            budget=body.budget.to_record() if body.budget else None,
        )
        self._services.catalog.create_tenant(record)
        self.grant_starter_credits(record.id)
        return tenant_out(record)

    def grant_starter_credits(self, tenant_id: str) -> None:
        """Starter credits, once per tenant (the idempotency key makes a retry a no-op)."""
        settings = self._services.settings
        amount = Money.parse(settings.starter_credits)
        if settings.billing_mode != "credits" or amount.micros <= 0:
            return
        now = self._now()
        self._services.ledger.credit(
            tenant_id,
            amount.micros,
            kind="starter",
            idempotency_key=f"starter:{tenant_id}",
            now_ms=now * 1000,
            note="starter credits",
            starter_expires_at=now + settings.starter_credits_days * 86_400,
        )

    def update_tenant(self, tenant_id: str, body: TenantUpdate) -> TenantOut:
        current = self._services.catalog.get_tenant(tenant_id)
        if current is None:
            raise NotFoundError(f"No tenant '{tenant_id}'.")
        budget = None if body.clear_budget else (body.budget.to_record() if body.budget else current.budget)
        record = current.model_copy(update={"name": body.name or current.name, "budget": budget})
        self._services.catalog.update_tenant(record)
        return tenant_out(record)

    # -- credits -------------------------------------------------------------------------------

    def add_credits(self, tenant_id: str, body: CreditIn, actor: str) -> tuple[EntryOut, bool]:
        self.get_tenant(tenant_id)
        amount = Money.parse(body.amount)
        if amount.micros == 0:
            raise InvalidRequestError("amount must not be zero.", param="amount")
        if body.kind == "topup" and amount.micros < 0:
            raise InvalidRequestError(
                "A top-up must be positive; use kind 'adjust' to remove credits.", param="amount"
            )
        entry, new = self._services.ledger.credit(
            tenant_id,
            amount.micros,
            kind=body.kind,
            idempotency_key=body.idempotency_key,
            now_ms=time.time_ns() // 1_000_000,
            note=body.note,
            actor=actor,
        )
        return entry_out(entry), new

    def balance(self, tenant_id: str) -> BalanceOut:
        self.get_tenant(tenant_id)
        account = self._services.ledger.account(tenant_id)
        return BalanceOut(
            tenant_id=tenant_id,
            available=str(Money(account.available_micros)),
            held=str(Money(account.held_micros)),
            charged_total=str(Money(account.charged_micros)),
            currency=self._services.settings.currency,
            starter_remaining_cap=(
                str(Money(account.starter_granted_micros)) if account.starter_expires_at else None
            ),
            starter_expires_at=account.starter_expires_at,
        )

    def ledger_entries(
        self, tenant_id: str, *, limit: int, cursor: str | None
    ) -> tuple[list[EntryOut], str | None]:
        self.get_tenant(tenant_id)
        entries, next_cursor = self._services.ledger.entries(tenant_id, limit=limit, after=cursor)
        return [entry_out(entry) for entry in entries], next_cursor

    # -- prices --------------------------------------------------------------------------------

    def put_price(self, model: str, body: PriceIn) -> PriceOut:
        if not MODEL_PATTERN.fullmatch(model):
            raise InvalidRequestError("The model name has characters that are not allowed.", param="model")
        now_ms = time.time_ns() // 1_000_000
        effective = int(body.effective_at.timestamp() * 1000) if body.effective_at else now_ms
        if effective < now_ms - 60_000:
            raise InvalidRequestError(
                "effective_at is in the past: a price change never re-prices the past.", param="effective_at"
            )
        cost = body.cost.to_sheet()
        if cost.is_empty():
            raise InvalidRequestError("Give at least one cost price.", param="cost")
        if body.sell is not None and body.margin_bps is not None:
            raise InvalidRequestError("Give either sell prices or margin_bps, not both.", param="margin_bps")
        if body.sell is not None:
            sell = body.sell.to_sheet()
        else:
            margin = body.margin_bps or 0
            sell = cost.map(lambda price: apply_margin(price, margin))
        paid = cost.to_dict()
        below = sorted(
            name
            for name, price in sell.to_dict().items()
            if name in paid and Money.parse(price) < Money.parse(paid[name])
        )
        if below and not body.force:
            raise InvalidRequestError(
                f"Selling below cost for {', '.join(below)}. Set force to true to allow it.", param="sell"
            )
        missing = sorted(set(paid) - set(sell.to_dict()))
        if missing:
            raise InvalidRequestError(f"No selling price for {', '.join(missing)}.", param="sell")
        record = PriceRecord(
            model=model,
            effective_at_ms=effective,
            cost=cost.to_dict(),
            sell=sell.to_dict(),
            margin_bps=body.margin_bps,
            created_at=self._now(),
        )
        self._services.catalog.put_price(record)
        self._services.billing.forget_prices(model)
        return price_out(record)

    def prices(self, model: str) -> list[PriceOut]:
        return [price_out(record) for record in self._services.catalog.prices(model)]

    def get_tenant(self, tenant_id: str) -> TenantOut:
        record = self._services.catalog.get_tenant(tenant_id)
        if record is None:
            raise NotFoundError(f"No tenant '{tenant_id}'.")
        return tenant_out(record)

    def list_tenants(self, *, limit: int, cursor: str | None) -> tuple[list[TenantOut], str | None]:
        records, next_cursor = self._services.catalog.list_tenants(limit=limit, after=cursor)
        return [tenant_out(record) for record in records], next_cursor

    # -- keys ----------------------------------------------------------------------------------

    def issue_key(self, body: KeyIn, *, created_by: str | None = None) -> IssuedKeyOut:
        if body.tenant_id is not None:
            self.get_tenant(body.tenant_id)
        now = self._now()
        if body.expires_at is not None and body.expires_at <= now:
            raise InvalidRequestError("expires_at must be in the future.", param="expires_at")
        issued = new_key()
        record = KeyRecord(
            id=issued.key_id,
            tenant_id=body.tenant_id,
            name=body.name,
            secret_hash=hash_secret(self._services.secrets.pepper(), issued.key_id, issued.secret),
            allowed_models=body.allowed_models,
            created_at=now,
            expires_at=body.expires_at,
            budget=body.budget.to_record() if body.budget else None,
            limits=KeyLimits(**body.limits.model_dump()) if body.limits else None,
            scope=body.scope,
            role=body.role,
            created_by=created_by,
        )
        self._services.catalog.create_key(record)
        return IssuedKeyOut(**key_out(record).model_dump(), key=issued.token)

    def list_keys(
        self, tenant_id: str | None, *, limit: int, cursor: str | None
    ) -> tuple[list[KeyOut], str | None]:
        """A tenant's keys (data-plane and tenant_admin), or with None the global admin keys."""
        if tenant_id is not None:
            self.get_tenant(tenant_id)
        records, next_cursor = self._services.catalog.list_keys(tenant_id, limit=limit, after=cursor)
        return [key_out(record) for record in records], next_cursor

    def rotate_key(self, key_id: str, *, grace_seconds: int) -> IssuedKeyOut:
        """A new secret for the same key id; the old one keeps working for ``grace_seconds``."""
        limit = self._services.settings.key_rotation_max_grace_seconds
        if grace_seconds > limit:
            raise InvalidRequestError(
                f"grace_seconds may be at most {limit} in this deployment.", param="grace_seconds"
            )
        record = self._services.catalog.get_key(key_id)
        if record is None:
            raise NotFoundError(f"No key '{key_id}'.")
        now = self._now()
        if record.revoked_at is not None:
            raise ConflictError("A revoked key cannot be rotated.")
        if record.expires_at is not None and record.expires_at <= now:
            raise ConflictError("An expired key cannot be rotated.")
        secret = new_key().secret
        rotated = self._services.catalog.rotate_key(
            key_id,
            expected_hash=record.secret_hash,
            new_hash=hash_secret(self._services.secrets.pepper(), key_id, secret),
            previous_valid_until=now + grace_seconds,
            rotated_at=now,
        )
        self._services.keys.forget(key_id)
        token = IssuedKey(key_id=key_id, secret=secret).token
        return IssuedKeyOut(**key_out(rotated).model_dump(), key=token)

    def update_key(self, key_id: str, body: KeyUpdate) -> KeyOut:
        """Changes a live key's name, models, expiry, budget or limits; its id and secret stay.

        This process drops its cached record at once; others see the change within the key cache's
        TTL (at most 60 seconds), as with a revocation."""
        catalog = self._services.catalog
        record = catalog.get_key(key_id)
        if record is None:
            raise NotFoundError(f"No key '{key_id}'.")
        if record.revoked_at is not None:
            raise ConflictError("A revoked key cannot be changed.")
        changes = body.changes()
        if body.expires_at is not None and body.expires_at <= self._now():
            raise InvalidRequestError("expires_at must be in the future.", param="expires_at")
        if record.scope == "admin":
            for name in ("budget", "limits"):
                if changes.get(name) is not None:
                    raise InvalidRequestError(f"{name} applies to data-plane keys only.", param=name)
        if not changes:
            return key_out(record)
        updated = catalog.update_key(key_id, changes)
        self._services.keys.forget(key_id)
        return key_out(updated)

    def get_key(self, key_id: str) -> KeyOut:
        record = self._services.catalog.get_key(key_id)
        if record is None:
            raise NotFoundError(f"No key '{key_id}'.")
        return key_out(record)

    def revoke_key(self, key_id: str) -> KeyOut:
        record = self._services.catalog.revoke_key(key_id, self._now())
        self._services.keys.forget(key_id)
        return key_out(record)

    # -- usage ---------------------------------------------------------------------------------

    def usage(
        self,
        *,
        since_ms: int,
        until_ms: int,
        tenant_id: str | None,
        key_id: str | None,
        limit: int,
        cursor: str | None,
    ) -> tuple[list[UsageRecord], str | None]:
        return self._services.usage_log.query(
            since_ms=since_ms,
            until_ms=until_ms,
            tenant_id=tenant_id,
            key_id=key_id,
            limit=limit,
            cursor=cursor,
        )
