"""What Tollgate stores: one frozen model per kind of item.

Records are storage shapes. The admin API renders them through its own response models, so a
stored field such as ``secret_hash`` can never reach a response by accident.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from tollgate.providers.base import UsageSource


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class ProviderRecord(Record):
    name: str
    type: str
    base_url: str | None = None
    region: str | None = None
    enabled: bool = True
    #: Secrets Manager id of the credential, when one was stored. The value itself is never here.
    secret_id: str | None = None
    #: A masked hint of the stored credential, e.g. ``sk-...Wxyz``.
    api_key_hint: str | None = None
    created_at: int
    updated_at: int


class RouteRecord(Record):
    """A public model name and the deployment that serves it."""

    model: str
    provider: str
    upstream_model: str
    created_at: int
    updated_at: int


class Budget(Record):
    """A spending cap per calendar period (UTC), in micro-units of the account currency."""

    amount_micros: int
    period: Literal["day", "week", "month"]


class KeyLimits(Record):
    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None

    def any(self) -> bool:
        return any(value is not None for value in (self.rpm, self.tpm, self.max_concurrency))


class TenantRecord(Record):
    id: str
    name: str
    created_at: int
    budget: Budget | None = None


class PriceRecord(Record):
    """One effective-dated price of a model: what the provider costs and what Tollgate sells at.

    Prices are per million tokens (or per image) as decimal strings; never edited, only superseded
    by a record with a later ``effective_at_ms``.
    """

    model: str
    effective_at_ms: int
    cost: dict[str, str]
    sell: dict[str, str]
    margin_bps: int | None = None
    created_at: int


class KeyRecord(Record):
    id: str
    tenant_id: str
    name: str
    #: HMAC-SHA256 of the key's secret, keyed with the pepper. The secret itself is never stored.
    secret_hash: str
    allowed_models: list[str] | None = None
    created_at: int
    expires_at: int | None = None
    revoked_at: int | None = None
    budget: Budget | None = None
    limits: KeyLimits | None = None


class UsageRecord(Record):
    request_id: str
    tenant_id: str
    key_id: str
    model: str
    provider: str | None = None
    upstream_model: str | None = None
    endpoint: str
    stream: bool
    status: int
    error_code: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    usage_source: UsageSource
    latency_ms: int
    ttfb_ms: int | None = None
    #: Epoch milliseconds at which the request arrived.
    created_at_ms: int
    cache_write_tokens: int = 0
    images: int = 0
    #: What the provider charges for this request (enterprise mode's cost), in micro-units.
    cost_micros: int = 0
    #: What the tenant was charged in credits (credit mode), in micro-units.
    charged_micros: int = 0
    #: False when no price existed for the model: the request was not silently free, it was flagged.
    priced: bool = True
