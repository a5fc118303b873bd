"""What Tollgate stores: one frozen model per kind of item.

Records are storage shapes. The admin API renders them through its own response models, so a
stored field such as ``secret_hash`` can never reach a response by accident.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

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
    #: Bound on connecting and on each read of an answer (first byte, then between chunks), in
    #: seconds; None uses the process default (``upstream_read_timeout_seconds``).
    timeout_seconds: int | None = None
    created_at: int
    updated_at: int


class RouteTarget(Record):
    """One deployment of a public model: a configured provider and the model name it knows.

    Deployments of lower ``priority`` are tried first; ``weight`` spreads requests across the
    deployments of one priority.
    """

    provider: str
    upstream_model: str
    weight: int = 1
    priority: int = 0


class RouteRecord(Record):
    """A public model name and the deployments that serve it, in fallback order."""

    model: str
    deployments: list[RouteTarget]
    created_at: int
    updated_at: int

    @model_validator(mode="before")
    @classmethod
    def _single_deployment_form(cls, data: Any) -> Any:
        """Reads a record written before routes had several deployments (``provider`` and
        ``upstream_model`` at the top) as a one-deployment route."""
        if isinstance(data, dict) and "deployments" not in data and "provider" in data:
            target = {"provider": data["provider"], "upstream_model": data.get("upstream_model")}
            return {**data, "deployments": [target]}
        return data

    @property
    def primary(self) -> RouteTarget:
        return self.deployments[0]


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
    #: The tenant a data-plane (or tenant_admin) key belongs to; None for a global admin key.
    tenant_id: str | None = None
    name: str
    #: HMAC-SHA256 of the key's secret, keyed with the pepper. The secret itself is never stored.
    secret_hash: str
    allowed_models: list[str] | None = None
    created_at: int
    expires_at: int | None = None
    revoked_at: int | None = None
    budget: Budget | None = None
    limits: KeyLimits | None = None
    #: ``data`` keys call the public API only; ``admin`` keys call the admin API only, with ``role``.
    scope: Literal["data", "admin"] = "data"
    role: Literal["owner", "admin", "viewer", "tenant_admin"] | None = None
    #: After a rotation: the previous secret's hash, accepted until ``previous_valid_until`` (epoch s).
    previous_secret_hash: str | None = None
    previous_valid_until: int | None = None
    rotated_at: int | None = None
    #: The admin actor that issued the key (``bootstrap``, ``key:<id>``, ``oidc:...``).
    created_by: str | None = None


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
