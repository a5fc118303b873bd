"""Analytics queries, quotas and reconciliation: what ``/admin/v1/analytics`` answers.

* ``series`` answers from **rollups only** (the analytics table), never from raw usage records:
  a 30-day daily query reads 30 day buckets per cell, however many requests they hold, and keeps
  working after the records expire.
* ``quota`` combines the tenant's ledger account with its burn rate over the last 7 days of
  hour buckets. In enterprise mode it also reports each budget (the tenant's, and each active
  key's) in its current UTC period: the budget account's settled spending over the time elapsed
  in the period is its burn rate, and the remainder at that rate is how long it lasts.
* ``reconcile`` is the one place that reads raw records: it adds up, per tenant and day, the usage
  records, the ledger's charge entries and the day buckets, and reports every disagreement.
  Records expire after ``usage_retention_days``, so older days cannot be reconciled.

Blocking (boto3): the routes run in FastAPI's thread pool.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from tollgate.analytics import (
    DAY_MS,
    EMPTY,
    Bucket,
    Cell,
    Granularity,
    GroupBy,
    group,
    period_length_ms,
    period_of,
    period_start_ms,
    periods_between,
)
from tollgate.billing import budget_account
from tollgate.errors import InvalidRequestError, NotFoundError
from tollgate.money import Money
from tollgate.schemas.analytics import (
    AnalyticsPage,
    AnalyticsRow,
    BudgetQuotaOut,
    QuotaOut,
    ReconcileReport,
    ReconcileRow,
    TimingOut,
    TokensOut,
    UsageSourcesOut,
)

if TYPE_CHECKING:
    from tollgate.settings import Settings
    from tollgate.store.analytics import DynamoAnalytics
    from tollgate.store.catalog import DynamoCatalog
    from tollgate.store.ledger import DynamoLedger
    from tollgate.store.records import Budget
    from tollgate.store.usage import DynamoUsageLog

#: The most periods one query may span: a year of days, a month of hours.
MAX_PERIODS: dict[Granularity, int] = {"day": 366, "hour": 31 * 24}
MAX_RECONCILE_DAYS = 31
QUOTA_WINDOW_DAYS = 7
#: Beyond this, "runs out at" is left out (it would be centuries away, past what a datetime holds).
FOREVER_MS = 100 * 366 * DAY_MS
_PERCENTILES = {"p50": 500, "p90": 900, "p95": 950, "p99": 990}


@dataclass(frozen=True, slots=True)
class Filters:
    key_id: str | None = None
    model: str | None = None
    provider: str | None = None

    def admit(self, cell: Cell) -> bool:
        return (
            (self.key_id is None or cell.key_id == self.key_id)
            and (self.model is None or cell.model == self.model)
            and (self.provider is None or cell.provider == self.provider)
        )


def _encode_cursor(state: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(state, separators=(",", ":")).encode()).decode()


def _decode_cursor(cursor: str, *fields: str) -> dict[str, str]:
    try:
        state = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidRequestError("The cursor is not valid.", param="cursor") from error
    if not isinstance(state, dict) or not all(isinstance(state.get(name), str) for name in fields):
        raise InvalidRequestError("The cursor is not valid.", param="cursor")
    return {name: state[name] for name in fields}


def _utc(epoch_ms: int) -> datetime:
    """The moment ``epoch_ms``, exact to the millisecond (no float rounding)."""
    return datetime.fromtimestamp(epoch_ms // 1000, tz=UTC) + timedelta(milliseconds=epoch_ms % 1000)


def _budget_period_start(budget: Budget, now: datetime) -> datetime:
    """The start of the UTC day, ISO week (Monday) or month holding ``now``: the budget's period."""
    day = datetime(now.year, now.month, now.day, tzinfo=UTC)
    if budget.period == "day":
        return day
    if budget.period == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def budget_quota(
    budget: Budget, spent_micros: int, *, now_ms: int, key_id: str | None = None
) -> BudgetQuotaOut:
    """One budget in the period holding ``now_ms``, given what was spent in it.

    The burn rate is ``spent`` over the time elapsed in the period; ``days_left`` is how long the
    remainder lasts at that rate, capped at the end of the period (the budget starts over then).
    """
    now = _utc(now_ms)
    account = budget_account("", budget, now)
    start_ms = int(_budget_period_start(budget, now).timestamp()) * 1000
    end_ms = account.period_end * 1000
    elapsed_ms = max(now_ms - start_ms, 1)
    remaining = max(budget.amount_micros - spent_micros, 0)
    runs_out_at: datetime | None = None
    left_ms = end_ms - now_ms
    if spent_micros > 0:
        lasts_ms = remaining * elapsed_ms // spent_micros
        if lasts_ms < left_ms:
            left_ms, runs_out_at = lasts_ms, _utc(now_ms + lasts_ms)
    return BudgetQuotaOut(
        scope="tenant" if key_id is None else "key",
        key_id=key_id,
        period=budget.period,
        period_id=account.sk.rsplit("#", 1)[1],
        period_start=_utc(start_ms),
        period_end=_utc(end_ms),
        limit=str(Money(budget.amount_micros)),
        spent=str(Money(spent_micros)),
        remaining=str(Money(remaining)),
        burn_rate_per_day=str(Money(spent_micros * DAY_MS // elapsed_ms)),
        days_left=max(left_ms, 0) * 100 // DAY_MS / 100,
        runs_out_at=runs_out_at,
    )


def timing(bucket: Bucket, *, ttfb: bool) -> TimingOut:
    """Latency (or TTFB) of a bucket: count, mean, nearest-rank percentiles and maximum."""
    count = bucket.ttfb_count if ttfb else bucket.requests
    total = bucket.ttfb_sum_ms if ttfb else bucket.latency_sum_ms
    percentile = bucket.ttfb_percentile if ttfb else bucket.latency_percentile
    if count == 0:
        return TimingOut(count=0, mean=None, p50=None, p90=None, p95=None, p99=None, max=None)
    return TimingOut(
        count=count,
        mean=total // count,
        max=bucket.ttfb_max_ms if ttfb else bucket.latency_max_ms,
        **{name: percentile(permille) for name, permille in _PERCENTILES.items()},
    )


def analytics_row(period: str, name: str, bucket: Bucket, currency: str) -> AnalyticsRow:
    return AnalyticsRow(
        period=period,
        start=_utc(period_start_ms(period)),
        group=name,
        requests=bucket.requests,
        errors=bucket.errors,
        server_errors=bucket.server_errors,
        disconnects=bucket.disconnects,
        streamed=bucket.streamed,
        tokens=TokensOut(
            prompt=bucket.prompt_tokens,
            completion=bucket.completion_tokens,
            cached=bucket.cached_tokens,
            cache_write=bucket.cache_write_tokens,
            reasoning=bucket.reasoning_tokens,
            total=bucket.total_tokens,
        ),
        images=bucket.images,
        cost=str(Money(bucket.cost_micros)),
        charged=str(Money(bucket.charged_micros)),
        currency=currency,
        unpriced=bucket.unpriced,
        usage_source=UsageSourcesOut(
            provider=bucket.source_provider, estimated=bucket.source_estimated, partial=bucket.source_partial
        ),
        latency_ms=timing(bucket, ttfb=False),
        ttfb_ms=timing(bucket, ttfb=True),
    )


@dataclass
class _DayTotals:
    requests: int = 0
    charged: int = 0
    charges: int = 0
    cost: int = 0
    tokens: int = 0

    def any(self) -> bool:
        return bool(self.requests or self.charged or self.charges or self.cost or self.tokens)


class AnalyticsService:
    def __init__(
        self,
        settings: Settings,
        analytics: DynamoAnalytics,
        usage: DynamoUsageLog,
        ledger: DynamoLedger,
        catalog: DynamoCatalog,
    ) -> None:
        self._settings = settings
        self._analytics = analytics
        self._usage = usage
        self._ledger = ledger
        self._catalog = catalog

    # -- series ----------------------------------------------------------------------------------

    def series(
        self,
        *,
        since_ms: int,
        until_ms: int,
        granularity: Granularity,
        group_by: GroupBy,
        tenant_id: str | None,
        filters: Filters,
        limit: int,
        cursor: str | None,
    ) -> AnalyticsPage:
        """Rows of (period, group), oldest period first, groups sorted; from rollups only."""
        if since_ms >= until_ms:
            raise InvalidRequestError("'since' must be before 'until'.", param="since")
        length = period_length_ms(granularity)
        if (until_ms - 1) // length - since_ms // length >= MAX_PERIODS[granularity]:
            raise InvalidRequestError(
                f"A {granularity} query may span at most {MAX_PERIODS[granularity]} {granularity}s.",
                param="since",
            )
        periods = periods_between(since_ms, until_ms, granularity)
        after: tuple[str, str] | None = None
        first = 0
        if cursor:
            state = _decode_cursor(cursor, "period", "group")
            if state["period"] not in periods:
                raise InvalidRequestError("The cursor does not belong to this query.", param="cursor")
            after = (state["period"], state["group"])
            first = periods.index(state["period"])

        def buckets() -> Iterator[tuple[str, Cell, Bucket]]:
            if tenant_id is not None:
                found = self._analytics.tenant_buckets(tenant_id, granularity, periods[first], periods[-1])
            else:
                found = (
                    entry
                    for period in periods[first:]
                    for entry in self._analytics.period_buckets(granularity, period)
                )
            return (entry for entry in found if filters.admit(entry[1]))

        rows: list[AnalyticsRow] = []
        next_cursor = None
        currency = self._settings.currency
        for period, name, bucket in group(buckets(), group_by):
            if after is not None and (period, name) <= after:
                continue
            if len(rows) == limit:
                last = rows[-1]
                next_cursor = _encode_cursor({"period": last.period, "group": last.group})
                break
            rows.append(analytics_row(period, name, bucket, currency))
        watermark = self._analytics.watermark()
        return AnalyticsPage(
            data=rows,
            next_cursor=next_cursor,
            granularity=granularity,
            group_by=group_by,
            since=_utc(since_ms),
            until=_utc(until_ms),
            rollup_watermark=_utc(watermark) if watermark is not None else None,
        )

    # -- quota -----------------------------------------------------------------------------------

    def quota(self, tenant_id: str, *, now_ms: int) -> QuotaOut:
        """The balance, the burn rate over the last 7 days of rollups, and how long it lasts; in
        enterprise mode, each budget in its current period as well."""
        tenant = self._catalog.get_tenant(tenant_id)
        if tenant is None:
            raise NotFoundError(f"No tenant '{tenant_id}'.")
        account = self._ledger.account(tenant_id)
        window_ms = QUOTA_WINDOW_DAYS * DAY_MS
        spent = sum(
            bucket.charged_micros
            for _, _, bucket in self._analytics.tenant_buckets(
                tenant_id, "hour", period_of(now_ms - window_ms, "hour"), period_of(now_ms, "hour")
            )
        )
        credits = self._settings.billing_mode == "credits"
        available = account.available_micros
        days_left: float | None = None
        runs_out_at: datetime | None = None
        if credits and spent > 0:
            # available / (spent / 7 days), in integers: tenths of a day, and milliseconds.
            days_left = max(available, 0) * 10 * QUOTA_WINDOW_DAYS // spent / 10
            lasts_ms = max(available, 0) * window_ms // spent
            runs_out_at = _utc(now_ms + lasts_ms) if lasts_ms <= FOREVER_MS else None
        return QuotaOut(
            tenant_id=tenant_id,
            currency=self._settings.currency,
            billing_mode=self._settings.billing_mode,
            available=str(Money(available)),
            held=str(Money(account.held_micros)),
            window_days=QUOTA_WINDOW_DAYS,
            spent_in_window=str(Money(spent)),
            burn_rate_per_day=str(Money(spent // QUOTA_WINDOW_DAYS)),
            days_left=days_left,
            runs_out_at=runs_out_at,
            budgets=[] if credits else self._budgets(tenant_id, tenant.budget, now_ms=now_ms),
        )

    def _budgets(self, tenant_id: str, budget: Budget | None, *, now_ms: int) -> list[BudgetQuotaOut]:
        """The tenant's budget, then its usable keys' budgets (by key id), in their current periods."""
        now = _utc(now_ms)
        capped: list[tuple[str, str | None, Budget]] = []
        if budget is not None:
            capped.append((f"TENANT#{tenant_id}", None, budget))
        after: str | None = None
        while True:
            keys, after = self._catalog.list_keys(tenant_id, limit=500, after=after)
            capped.extend(
                (f"KEY#{key.id}", key.id, key.budget)
                for key in keys
                if key.budget is not None
                and key.revoked_at is None
                and (key.expires_at is None or key.expires_at * 1000 > now_ms)
            )
            if after is None:
                break
        return [
            budget_quota(
                capped_by,
                self._ledger.budget_spent(budget_account(pk, capped_by, now)),
                now_ms=now_ms,
                key_id=key_id,
            )
            for pk, key_id, capped_by in capped
        ]

    # -- reconciliation --------------------------------------------------------------------------

    def reconcile(
        self, *, first_day: str, last_day: str, tenant_id: str | None, limit: int, cursor: str | None
    ) -> ReconcileReport:
        """Per tenant and day: usage records vs ledger charge entries vs day buckets.

        Pages by tenant (``limit`` tenants a page); tenants come from the catalog and the rollups.
        """
        try:
            since_ms, until_ms = period_start_ms(first_day), period_start_ms(last_day) + DAY_MS
        except ValueError as error:
            raise InvalidRequestError("Days are YYYY-MM-DD.", param="since") from error
        if not 0 < until_ms - since_ms <= MAX_RECONCILE_DAYS * DAY_MS:
            raise InvalidRequestError(
                f"Reconcile 1 to {MAX_RECONCILE_DAYS} days at a time ('since' <= 'until').", param="since"
            )
        days = periods_between(since_ms, until_ms, "day")
        if tenant_id is not None:
            tenants = [tenant_id]
        else:
            tenants = sorted(self._all_tenants() | self._rollup_tenants(days))
        if cursor:
            after = _decode_cursor(cursor, "tenant")["tenant"]
            tenants = [tenant for tenant in tenants if tenant > after]
        page, more = tenants[:limit], len(tenants) > limit

        credits = self._settings.billing_mode == "credits"
        rows: list[ReconcileRow] = []
        for tenant in page:
            usage = self._usage_totals(tenant, since_ms, until_ms)
            ledger = self._ledger_totals(tenant, since_ms, until_ms) if credits else {}
            rollup = self._rollup_totals(tenant, first_day, last_day)
            for day in days:
                row = _reconcile_row(
                    tenant,
                    day,
                    usage.get(day, _DayTotals()),
                    ledger.get(day, _DayTotals()) if credits else None,
                    rollup.get(day, _DayTotals()),
                )
                if row is not None:
                    rows.append(row)
        differing = sum(1 for row in rows if row.differences)
        return ReconcileReport(
            data=rows,
            next_cursor=_encode_cursor({"tenant": page[-1]}) if more and page else None,
            since=first_day,
            until=last_day,
            billing_mode=self._settings.billing_mode,
            ok=differing == 0,
            rows_with_differences=differing,
        )

    def _all_tenants(self) -> set[str]:
        found: set[str] = set()
        after: str | None = None
        while True:
            records, after = self._catalog.list_tenants(limit=500, after=after)
            found.update(record.id for record in records)
            if after is None:
                return found

    def _rollup_tenants(self, days: list[str]) -> set[str]:
        return {cell.tenant_id for day in days for _, cell, _ in self._analytics.period_buckets("day", day)}

    def _usage_totals(self, tenant_id: str, since_ms: int, until_ms: int) -> dict[str, _DayTotals]:
        totals: dict[str, _DayTotals] = {}
        for record in self._usage.records_between(since_ms, until_ms, tenant_id=tenant_id):
            day = totals.setdefault(period_of(record.created_at_ms, "day"), _DayTotals())
            day.requests += 1
            day.charged += record.charged_micros
            day.charges += int(record.charged_micros != 0)
            day.cost += record.cost_micros
            day.tokens += record.prompt_tokens + record.completion_tokens
        return totals

    def _ledger_totals(self, tenant_id: str, since_ms: int, until_ms: int) -> dict[str, _DayTotals]:
        """Charge entries of ``[since, until)``, read newest first from just below ``until``."""
        totals: dict[str, _DayTotals] = {}
        after: str | None = f"ENTRY#{until_ms:013d}"
        while after is not None:
            entries, after = self._ledger.entries(tenant_id, limit=500, after=after)
            for entry in entries:
                if entry.created_at_ms < since_ms:
                    return totals
                if entry.kind == "charge":
                    day = totals.setdefault(period_of(entry.created_at_ms, "day"), _DayTotals())
                    day.charged += -entry.amount_micros
                    day.charges += 1
        return totals

    def _rollup_totals(self, tenant_id: str, first_day: str, last_day: str) -> dict[str, _DayTotals]:
        buckets: dict[str, Bucket] = {}
        for day, _, bucket in self._analytics.tenant_buckets(
            tenant_id, "day", first_day, last_day, consistent=True
        ):
            buckets[day] = buckets.get(day, EMPTY).merge(bucket)
        return {
            day: _DayTotals(
                requests=bucket.requests,
                charged=bucket.charged_micros,
                cost=bucket.cost_micros,
                tokens=bucket.total_tokens,
            )
            for day, bucket in buckets.items()
        }


def _reconcile_row(
    tenant_id: str, day: str, usage: _DayTotals, ledger: _DayTotals | None, rollup: _DayTotals
) -> ReconcileRow | None:
    if not (usage.any() or rollup.any() or (ledger is not None and ledger.any())):
        return None
    differences = [
        name
        for name, differs in (
            ("rollup_requests", rollup.requests != usage.requests),
            ("rollup_charged", rollup.charged != usage.charged),
            ("rollup_cost", rollup.cost != usage.cost),
            ("rollup_tokens", rollup.tokens != usage.tokens),
            ("ledger_charged", ledger is not None and ledger.charged != usage.charged),
            ("ledger_charges", ledger is not None and ledger.charges != usage.charges),
        )
        if differs
    ]
    return ReconcileRow(
        tenant_id=tenant_id,
        day=day,
        usage_requests=usage.requests,
        rollup_requests=rollup.requests,
        usage_charged=str(Money(usage.charged)),
        ledger_charged=str(Money(ledger.charged)) if ledger is not None else None,
        rollup_charged=str(Money(rollup.charged)),
        usage_charges=usage.charges,
        ledger_charges=ledger.charges if ledger is not None else None,
        usage_cost=str(Money(usage.cost)),
        rollup_cost=str(Money(rollup.cost)),
        usage_tokens=usage.tokens,
        rollup_tokens=rollup.tokens,
        differences=differences,
    )
