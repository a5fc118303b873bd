"""Admission and settlement: what a request may cost, what it did cost, and who pays.

Two modes (``Settings.billing_mode``):

* **credits** (service provider): tenants prepay credits. Before any upstream call, the
  request's worst case (its prompt's upper bound plus its output limit, at the selling price)
  is held on the tenant's account; it runs only if that much is available. Afterwards the
  actual cost is charged and the rest released, in one transaction with the usage record. A
  model without a selling price is refused before any upstream call.
* **enterprise**: the organisation pays providers directly. Requests are metered at provider
  cost; optional per-key and per-tenant budgets (per UTC day, ISO week or month) are enforced
  with the same hold-then-settle; an unpriced model runs but is flagged (``priced = false``).

Per-key RPM, TPM and concurrency limits apply in both modes. A hold left behind by a process
that died is settled by ``sweep`` at its reserved worst case: Tollgate cannot know whether the
provider did the work, and it never bills zero for work that may have been done.
"""

from __future__ import annotations

import asyncio
import calendar
import hashlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING

from tollgate.cache import TTLCache
from tollgate.errors import ConflictError, InvalidRequestError, TollgateError
from tollgate.money import Money, PriceSheet, charge_for
from tollgate.observability import logger
from tollgate.store.ledger import AccountRef, Hold, LimitClaim, Settlement
from tollgate.store.records import Budget, PriceRecord, UsageRecord

if TYPE_CHECKING:
    from collections.abc import Callable

    from tollgate.keys import Principal
    from tollgate.providers.base import Usage
    from tollgate.settings import Settings
    from tollgate.store.catalog import DynamoCatalog
    from tollgate.store.ledger import DynamoLedger
    from tollgate.store.records import TenantRecord

#: Responses larger than this are not kept for idempotent replay.
REPLAY_LIMIT_BYTES = 300_000
IDEMPOTENCY_SECONDS = 24 * 3600


class IdempotencyMismatchError(InvalidRequestError):
    status = 422
    default_code = "idempotency_key_reused"


@dataclass(frozen=True, slots=True)
class Prices:
    cost: PriceSheet
    sell: PriceSheet
    effective_at_ms: int


def _parsed(record: PriceRecord) -> Prices:
    return Prices(
        cost=PriceSheet.from_dict(record.cost),
        sell=PriceSheet.from_dict(record.sell),
        effective_at_ms=record.effective_at_ms,
    )


@dataclass(frozen=True, slots=True)
class Demand:
    """A request's worst case, before it runs."""

    prompt_tokens: int
    output_tokens: int = 0
    images: int = 0
    embedding: bool = False


@dataclass(frozen=True, slots=True)
class Replay:
    """A stored response to send again for a repeated ``Idempotency-Key``."""

    content_type: str
    body: str


@dataclass
class Admission:
    """What admission reserved for one request; ``settle`` consumes it exactly once."""

    prices: Prices | None
    hold: Hold | None = None
    available_after_hold: int | None = None
    settled: bool = False


@dataclass(frozen=True, slots=True)
class Bill:
    """What a finished request cost: reported to the caller and stored in its usage record."""

    cost: Money
    charged: Money
    priced: bool
    balance: Money | None = None


def _period(budget: Budget, now: datetime) -> tuple[str, int]:
    """The budget period containing ``now``: its id and its end (epoch seconds), in UTC."""
    day = now.date()
    if budget.period == "day":
        start = day
        end = start + timedelta(days=1)
        label = start.isoformat()
    elif budget.period == "week":
        start = day - timedelta(days=day.weekday())
        end = start + timedelta(days=7)
        year, week, _ = day.isocalendar()
        label = f"{year}-W{week:02d}"
    else:
        start = day.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
        label = f"{start.year}-{start.month:02d}"
    return label, calendar.timegm(end.timetuple())


def budget_account(pk: str, budget: Budget, now: datetime) -> AccountRef:
    label, end = _period(budget, now)
    return AccountRef(
        pk=pk,
        sk=f"BUDGET#{budget.period}#{label}",
        kind="budget",
        limit_micros=budget.amount_micros,
        period_end=end,
    )


def request_hash(endpoint: str, body: str) -> str:
    return hashlib.sha256(f"{endpoint}\n{body}".encode()).hexdigest()


class Billing:
    def __init__(
        self,
        settings: Settings,
        catalog: DynamoCatalog,
        ledger: DynamoLedger,
    ) -> None:
        self._settings = settings
        self._catalog = catalog
        self._ledger = ledger
        ttl = settings.cache_ttl_seconds
        self._prices: TTLCache[tuple[Prices, ...]] = TTLCache(ttl)  # parsed once per fetch
        self._tenants: TTLCache[TenantRecord] = TTLCache(ttl, negative_ttl=min(ttl, 5.0))

    @property
    def credits(self) -> bool:
        return self._settings.billing_mode == "credits"

    # -- prices ------------------------------------------------------------------------------------

    async def prices(self, model: str, at_ms: int) -> Prices | None:
        history = await self._prices.load(model, partial(self._price_history, model))
        current = None
        for prices in history or ():
            if prices.effective_at_ms <= at_ms:
                current = prices
        return current

    def _price_history(self, model: str) -> tuple[Prices, ...]:
        return tuple(_parsed(record) for record in self._catalog.prices(model))

    def forget_prices(self, model: str | None = None) -> None:
        self._prices.invalidate(model)

    # -- admission ---------------------------------------------------------------------------------

    async def admit(
        self,
        principal: Principal,
        *,
        request_id: str,
        model: str,
        endpoint: str,
        stream: bool,
        demand: Demand,
        created_at_ms: int,
        provider: str | None,
        upstream_model: str | None,
        idempotency: tuple[str, str] | None = None,
    ) -> Admission | Replay:
        """Reserves the request's worst case, or raises (402, 429, 503, or 400 for no price)."""
        prices = await self.prices(model, created_at_ms)
        sheet = self._billed_sheet(prices)
        worst = Money(0)
        if sheet is not None:
            try:
                worst = self._charge(sheet, demand)
            except LookupError:
                sheet = None
        if sheet is None and self.credits:
            raise InvalidRequestError(
                f"The model '{model}' has no price, so it cannot be billed. Ask the operator to price it.",
                param="model",
                code="model_not_priced",
            )
        if sheet is None:
            logger.warning("unpriced model used", extra={"model": model, "request_id": request_id})

        key_hash: str | None = None
        if idempotency is not None:
            key_hash, body_hash = idempotency
            replay = await self._claim_idempotency(principal, key_hash, body_hash, request_id, created_at_ms)
            if replay is not None:
                return replay

        try:
            return await self._reserve(
                principal,
                prices=prices,
                worst=worst,
                request_id=request_id,
                model=model,
                endpoint=endpoint,
                stream=stream,
                demand=demand,
                created_at_ms=created_at_ms,
                provider=provider,
                upstream_model=upstream_model,
                key_hash=key_hash,
            )
        except TollgateError:
            if key_hash is not None:
                await asyncio.to_thread(
                    self._ledger.release_idempotency, principal.tenant_id, key_hash, request_id
                )
            raise

    async def _claim_idempotency(
        self, principal: Principal, key_hash: str, body_hash: str, request_id: str, created_at_ms: int
    ) -> Replay | None:
        earlier = await asyncio.to_thread(
            self._ledger.claim_idempotency,
            principal.tenant_id,
            key_hash,
            request_hash=body_hash,
            request_id=request_id,
            expires_at=created_at_ms // 1000 + IDEMPOTENCY_SECONDS,
        )
        if earlier is None:
            return None
        if earlier.request_hash != body_hash:
            raise IdempotencyMismatchError(
                "This Idempotency-Key was already used with a different request body.",
                param="Idempotency-Key",
            )
        if earlier.status == "complete" and earlier.body is not None and earlier.content_type:
            return Replay(content_type=earlier.content_type, body=earlier.body)
        if earlier.status == "complete":
            raise ConflictError(
                "The request with this Idempotency-Key finished, but its response was too large to keep.",
                code="idempotency_response_unavailable",
            )
        raise ConflictError(
            "A request with this Idempotency-Key is still running. Retry shortly.",
            code="idempotency_in_progress",
            headers={"Retry-After": "1"},
        )

    async def _reserve(
        self,
        principal: Principal,
        *,
        prices: Prices | None,
        worst: Money,
        request_id: str,
        model: str,
        endpoint: str,
        stream: bool,
        demand: Demand,
        created_at_ms: int,
        provider: str | None,
        upstream_model: str | None,
        key_hash: str | None,
    ) -> Admission:
        now = datetime.fromtimestamp(created_at_ms / 1000, tz=UTC)
        accounts: list[AccountRef] = []
        if self.credits:
            accounts.append(AccountRef.credits(principal.tenant_id))
        else:
            tenant = await self._tenant(principal.tenant_id)
            if tenant is not None and tenant.budget is not None:
                accounts.append(budget_account(f"TENANT#{principal.tenant_id}", tenant.budget, now))
            if principal.budget is not None:
                accounts.append(budget_account(f"KEY#{principal.key_id}", principal.budget, now))
        limits = principal.limits if principal.limits is not None and principal.limits.any() else None
        if not accounts and limits is None and key_hash is None:
            return Admission(prices=prices)  # nothing to reserve: settlement writes the usage record alone

        hold = Hold(
            request_id=request_id,
            tenant_id=principal.tenant_id,
            key_id=principal.key_id,
            model=model,
            amount_micros=worst.micros,
            created_at_ms=created_at_ms,
            expires_at_ms=created_at_ms + self._settings.hold_ttl_seconds * 1000,
            accounts=tuple(accounts),
            inflight=limits is not None and limits.max_concurrency is not None,
            idempotency=key_hash,
            provider=provider,
            upstream_model=upstream_model,
            endpoint=endpoint,
            stream=stream,
            cost_micros=self._cost_estimate(prices, demand),
        )
        if limits is not None:
            claim = LimitClaim(
                key_id=principal.key_id,
                window=created_at_ms // 60_000,
                tokens=demand.prompt_tokens + demand.output_tokens,
                rpm=limits.rpm,
                tpm=limits.tpm,
                max_concurrency=limits.max_concurrency,
            )
            await asyncio.to_thread(self._ledger.claim_limits, claim, now_s=created_at_ms // 1000)
        held: list[AccountRef] = []
        available: int | None = None
        try:
            for account in accounts:
                left = await self._ledger.hold_account_async(account, hold, now_ms=created_at_ms)
                held.append(account)
                if account.kind == "credits":
                    available = left
        except TollgateError:
            await asyncio.to_thread(self._undo, hold, held)
            raise
        return Admission(prices=prices, hold=hold, available_after_hold=available)

    def _undo(self, hold: Hold, held: list[AccountRef]) -> None:
        for account in held:
            self._ledger.release_account(account, hold)
        if hold.inflight:
            self._ledger.release_limits(hold.key_id)

    # -- settlement --------------------------------------------------------------------------------

    def bill(
        self, admission: Admission, usage: Usage | None, *, images: int = 0, embedding: bool = False
    ) -> Bill:
        """What ``usage`` costs under the admitted prices (pure: no I/O)."""
        prices = admission.prices
        sheet = self._billed_sheet(prices)
        if prices is None or sheet is None or (usage is None and not images):
            return Bill(cost=Money(0), charged=Money(0), priced=prices is not None)
        try:
            cost = charge_for(prices.cost, usage, images=images, embedding=embedding)
        except LookupError:
            cost = Money(0)
        try:
            charged = charge_for(sheet, usage, images=images, embedding=embedding) if self.credits else cost
        except LookupError:
            return Bill(cost=cost, charged=Money(0), priced=False)
        balance = None
        if self.credits and admission.available_after_hold is not None and admission.hold is not None:
            balance = Money(admission.available_after_hold + admission.hold.amount_micros - charged.micros)
        return Bill(cost=cost, charged=charged, priced=True, balance=balance)

    async def settle(
        self, admission: Admission, record: UsageRecord, bill: Bill, *, replay: Replay | None = None
    ) -> None:
        """Charges ``bill`` (0 voids the hold) and writes ``record``, exactly once."""
        if admission.settled:
            return
        admission.settled = True
        record = replace_record(record, bill)
        hold = admission.hold
        response = None
        if replay is not None and len(replay.body) <= REPLAY_LIMIT_BYTES:
            response = (replay.content_type, replay.body)
        elif replay is not None:
            response = (replay.content_type, "")
        settlement = Settlement(
            hold=hold,
            charge_micros=bill.charged.micros,
            usage=record,
            entry=self.credits and hold is not None,
            idempotency_response=response if record.status == 200 else None,
        )
        settled = await self._ledger.settle_async(settlement)
        if not settled:
            logger.warning(
                "settlement found the request already settled", extra={"request_id": record.request_id}
            )

    # -- sweeping ----------------------------------------------------------------------------------

    def sweep(
        self, now_ms: int | None = None, *, on_settled: Callable[[Hold], None] | None = None
    ) -> dict[str, int]:
        """Settles holds their processes left behind, and expires unused starter credits.

        Blocking; runs in the scheduled function (and on a timer locally). Idempotent: running it
        twice, or twice at once, settles nothing twice. ``on_settled`` hears of each hold this run
        settled (the rollup re-folds the hours their usage records landed in).
        """
        now_ms = now_ms if now_ms is not None else time.time_ns() // 1_000_000
        seen: set[str] = set()
        counts = {"holds_settled": 0, "holds_already_settled": 0, "starter_expired": 0}
        for account in self._ledger.accounts_with_holds():
            for name, value in account.items():
                if not name.startswith("hold_") or not isinstance(value, dict):
                    continue
                hold = Hold.from_value(value)
                if hold.expires_at_ms > now_ms or hold.request_id in seen:
                    continue
                seen.add(hold.request_id)
                if self._settle_abandoned(hold):
                    counts["holds_settled"] += 1
                    if on_settled is not None:
                        on_settled(hold)
                else:
                    counts["holds_already_settled"] += 1
            if account.get("sk") == "ACCOUNT" and self._expire_starter(account, now_ms):
                counts["starter_expired"] += 1
        return counts

    def _settle_abandoned(self, hold: Hold) -> bool:
        worst = hold.amount_micros
        record = UsageRecord(
            request_id=hold.request_id,
            tenant_id=hold.tenant_id,
            key_id=hold.key_id,
            model=hold.model,
            provider=hold.provider,
            upstream_model=hold.upstream_model,
            endpoint=hold.endpoint,
            stream=hold.stream,
            status=500,
            error_code="abandoned_settled_at_hold",
            usage_source="estimated",
            latency_ms=0,
            created_at_ms=hold.created_at_ms,
            cost_micros=hold.cost_micros if self.credits else worst,
            charged_micros=worst if self.credits else 0,
        )
        settlement = Settlement(
            hold=hold, charge_micros=worst, usage=record, entry=self.credits and bool(hold.accounts)
        )
        return self._ledger.settle(settlement)

    def _expire_starter(self, account: dict[str, object], now_ms: int) -> bool:
        expires = account.get("starter_expires_at")
        if not account.get("starter_open") or not isinstance(expires, int) or expires * 1000 > now_ms:
            return False
        granted = _int(account.get("starter_granted"))
        charged = _int(account.get("charged_total"))
        baseline = _int(account.get("starter_baseline"))
        unused = max(0, granted - (charged - baseline))
        amount = min(unused, max(0, _int(account.get("available"))))
        tenant_id = str(account.get("pk", "")).removeprefix("TENANT#")
        return self._ledger.expire_starter(
            tenant_id, amount_micros=amount, seen_charged=charged, now_ms=now_ms
        )

    # -- helpers -----------------------------------------------------------------------------------

    def _billed_sheet(self, prices: Prices | None) -> PriceSheet | None:
        if prices is None:
            return None
        sheet = prices.sell if self.credits else prices.cost
        return None if sheet.is_empty() else sheet

    @staticmethod
    def _charge(sheet: PriceSheet, demand: Demand) -> Money:
        if demand.images:
            return charge_for(sheet, None, images=demand.images)
        from tollgate.providers.base import Usage

        usage = Usage(prompt_tokens=demand.prompt_tokens, completion_tokens=demand.output_tokens)
        return charge_for(sheet, usage, embedding=demand.embedding)

    def _cost_estimate(self, prices: Prices | None, demand: Demand) -> int:
        if prices is None or prices.cost.is_empty():
            return 0
        try:
            return self._charge(prices.cost, demand).micros
        except LookupError:
            return 0

    async def _tenant(self, tenant_id: str) -> TenantRecord | None:
        return await self._tenants.load(tenant_id, partial(self._catalog.get_tenant, tenant_id))


def replace_record(record: UsageRecord, bill: Bill) -> UsageRecord:
    return record.model_copy(
        update={"cost_micros": bill.cost.micros, "charged_micros": bill.charged.micros, "priced": bill.priced}
    )


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


__all__ = [
    "Admission",
    "Bill",
    "Billing",
    "Demand",
    "IdempotencyMismatchError",
    "Prices",
    "Replay",
    "budget_account",
    "request_hash",
]
