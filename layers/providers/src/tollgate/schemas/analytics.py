"""Response bodies of the analytics API (``/admin/v1/analytics``).

Money is a decimal string of the account currency, as everywhere in the admin API; timings are
integer milliseconds, percentiles from mergeable histograms (within 1.6 %, see
``tollgate.analytics``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from tollgate.admin.schemas import Page


class TokensOut(BaseModel):
    prompt: int
    completion: int
    cached: int
    cache_write: int
    reasoning: int
    total: int


class TimingOut(BaseModel):
    """Milliseconds; ``None`` when nothing was measured."""

    count: int
    mean: int | None
    p50: int | None
    p90: int | None
    p95: int | None
    p99: int | None
    max: int | None


class UsageSourcesOut(BaseModel):
    """How many requests' token counts came from the provider, from an estimate, or were partial."""

    provider: int
    estimated: int
    partial: int


class AnalyticsRow(BaseModel):
    period: str = Field(description="The UTC hour (2024-05-01T13) or day (2024-05-01)")
    start: datetime = Field(description="When the period starts (UTC)")
    group: str = Field(description="The tenant, key, model or provider this row is about")
    requests: int
    errors: int = Field(description="Requests that ended with status >= 400, except client disconnects")
    server_errors: int = Field(description="Requests that ended with status >= 500 (ours or the provider's)")
    disconnects: int = Field(description="Streams whose client went away before the end (status 499)")
    streamed: int
    tokens: TokensOut
    images: int
    cost: str = Field(description="What the providers charge")
    charged: str = Field(description="What was charged (credits in credit mode; cost in enterprise mode)")
    currency: str
    unpriced: int = Field(description="Requests of a model that had no price")
    usage_source: UsageSourcesOut
    latency_ms: TimingOut
    ttfb_ms: TimingOut


class AnalyticsPage(Page[AnalyticsRow]):
    granularity: Literal["hour", "day"]
    group_by: Literal["tenant", "key", "model", "provider"]
    since: datetime
    until: datetime
    rollup_watermark: datetime | None = Field(
        description="Rollups hold every request that arrived before this moment (less late ones)"
    )


class BudgetQuotaOut(BaseModel):
    """One enterprise budget in its current UTC period: how much is left, and how long it lasts."""

    scope: Literal["tenant", "key"]
    key_id: str | None = Field(description="The key this budget caps (scope 'key')")
    period: Literal["day", "week", "month"]
    period_id: str = Field(description="The UTC period: 2024-05-01 (day), 2024-W18 (ISO week), 2024-05")
    period_start: datetime
    period_end: datetime = Field(description="When the budget starts over")
    limit: str
    spent: str = Field(description="Settled spending (at cost) in this period, from the ledger")
    remaining: str = Field(description="limit - spent; requests in flight hold part of it until they settle")
    burn_rate_per_day: str = Field(description="spent / the time elapsed in this period")
    days_left: float = Field(
        description="How long the remainder lasts at the burn rate, to 0.01 day, at most until period_end"
    )
    runs_out_at: datetime | None = Field(description="When it runs out, if before period_end")


class QuotaOut(BaseModel):
    tenant_id: str
    currency: str
    billing_mode: Literal["enterprise", "credits"]
    available: str = Field(description="Credits available now (the ledger account)")
    held: str = Field(description="Credits held by requests in flight")
    window_days: int
    spent_in_window: str = Field(description="Charged over the last window_days days (from rollups)")
    burn_rate_per_day: str
    days_left: float | None = Field(
        description="available / burn rate, to 0.1 day; null when nothing was spent or not in credit mode"
    )
    runs_out_at: datetime | None
    budgets: list[BudgetQuotaOut] = Field(
        default_factory=list,
        description="Enterprise mode: the tenant's budget and its keys' budgets, in their current periods",
    )


class ReconcileRow(BaseModel):
    """One tenant's day, three ways: the usage records, the ledger's charge entries and the rollups."""

    tenant_id: str
    day: str
    usage_requests: int
    rollup_requests: int
    usage_charged: str
    ledger_charged: str | None = Field(description="Sum of charge entries (credit mode only)")
    rollup_charged: str
    usage_charges: int = Field(description="Usage records with a charge")
    ledger_charges: int | None = Field(description="Charge entries (credit mode only)")
    usage_cost: str
    rollup_cost: str
    usage_tokens: int
    rollup_tokens: int
    differences: list[str] = Field(description="What disagrees; empty when all three agree")


class ReconcileReport(Page[ReconcileRow]):
    since: str = Field(description="First day (UTC), inclusive")
    until: str = Field(description="Last day (UTC), inclusive")
    billing_mode: Literal["enterprise", "credits"]
    ok: bool = Field(description="No row of this page has a difference")
    rows_with_differences: int
