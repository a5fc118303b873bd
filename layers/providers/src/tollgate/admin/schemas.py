"""Admin API request and response bodies.

Requests forbid unknown fields, so a typo or a mass-assignment attempt is a 400 rather than a
silently stored attribute. Responses are built from records field by field: credentials and key
hashes have no response field to land in.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from tollgate.admin.principal import Role
from tollgate.money import Money, PriceSheet
from tollgate.providers.presets import PRESETS
from tollgate.store.records import Budget

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
MODEL_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,255}$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ProviderIn(Strict):
    type: str = Field(description=f"One of: {', '.join(sorted(PRESETS))}")
    base_url: Annotated[str | None, Field(max_length=2048)] = None
    api_key: Annotated[SecretStr | None, Field(description="Write-only; stored in Secrets Manager")] = None
    region: Annotated[str | None, Field(max_length=32, pattern=r"^[a-z0-9-]+$")] = None
    enabled: bool = True
    timeout_seconds: Annotated[
        int | None,
        Field(
            ge=1,
            le=900,
            description="Seconds to wait for this provider to connect, answer and send each next chunk "
            "(a stalled stream fails after this long); default: the deployment's upstream read timeout",
        ),
    ] = None

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in PRESETS:
            raise ValueError(f"unknown provider type; expected one of {', '.join(sorted(PRESETS))}")
        return value

    @field_validator("api_key")
    @classmethod
    def _sane_key(cls, value: SecretStr | None) -> SecretStr | None:
        return _check_api_key(value)


class ProviderOut(BaseModel):
    name: str
    type: str
    base_url: str | None
    region: str | None
    enabled: bool
    has_api_key: bool
    api_key_hint: str | None
    timeout_seconds: int | None = None
    created_at: int
    updated_at: int


MAX_DEPLOYMENTS = 16
UpstreamModel = Annotated[str, Field(min_length=1, max_length=256)]


class RouteTargetIn(Strict):
    """One deployment: a configured provider (one set of credentials) and the model it knows."""

    provider: Annotated[str, Field(pattern=NAME_PATTERN)]
    upstream_model: UpstreamModel
    weight: Annotated[
        int, Field(ge=1, le=1000, description="Share of requests among deployments of one priority")
    ] = 1
    priority: Annotated[
        int, Field(ge=0, le=100, description="Lower is tried first; higher ones are fallbacks")
    ] = 0


class RouteIn(Strict):
    """Either one deployment (``provider`` and ``upstream_model``) or several (``deployments``,
    in fallback order by ``priority``), not both."""

    provider: Annotated[str | None, Field(pattern=NAME_PATTERN)] = None
    upstream_model: UpstreamModel | None = None
    deployments: Annotated[list[RouteTargetIn] | None, Field(min_length=1, max_length=MAX_DEPLOYMENTS)] = None

    @model_validator(mode="after")
    def _one_form(self) -> Self:
        single = self.provider is not None or self.upstream_model is not None
        if self.deployments is not None:
            if single:
                raise ValueError("give either provider and upstream_model, or deployments, not both")
            seen = {(target.provider, target.upstream_model) for target in self.deployments}
            if len(seen) != len(self.deployments):
                raise ValueError("each deployment (provider and upstream_model) may appear only once")
        elif self.provider is None or self.upstream_model is None:
            raise ValueError("give provider and upstream_model, or deployments")
        return self

    def targets(self) -> list[RouteTargetIn]:
        if self.deployments is not None:
            return self.deployments
        if self.provider is None or self.upstream_model is None:  # the validator ruled this out
            raise ValueError("give provider and upstream_model, or deployments")
        return [RouteTargetIn(provider=self.provider, upstream_model=self.upstream_model)]


class RouteTargetOut(BaseModel):
    provider: str
    upstream_model: str
    weight: int
    priority: int


class RouteOut(BaseModel):
    model: str
    #: The first deployment's provider and upstream model, as before routes had several.
    provider: str
    upstream_model: str
    deployments: list[RouteTargetOut]
    created_at: int
    updated_at: int


Amount = Annotated[
    str,
    Field(pattern=r"^-?\d{1,12}(\.\d{1,6})?$", description="A decimal amount, at most 6 decimals"),
]
PositiveAmount = Annotated[str, Field(pattern=r"^\d{1,12}(\.\d{1,6})?$")]


class BudgetIn(Strict):
    amount: PositiveAmount
    period: Literal["day", "week", "month"]

    def to_record(self) -> Budget:
        return Budget(amount_micros=Money.parse(self.amount).micros, period=self.period)


class BudgetOut(BaseModel):
    amount: str
    period: str

    @classmethod
    def of(cls, budget: Budget | None) -> BudgetOut | None:
        return None if budget is None else cls(amount=str(Money(budget.amount_micros)), period=budget.period)


class LimitsIn(Strict):
    rpm: Annotated[int | None, Field(ge=1, le=1_000_000)] = None
    tpm: Annotated[int | None, Field(ge=1, le=1_000_000_000)] = None
    max_concurrency: Annotated[int | None, Field(ge=1, le=100_000)] = None


class TenantIn(Strict):
    id: Annotated[str | None, Field(pattern=ID_PATTERN)] = None
    name: Annotated[str, Field(min_length=1, max_length=200)]
    budget: BudgetIn | None = None


class TenantOut(BaseModel):
    id: str
    name: str
    created_at: int
    budget: BudgetOut | None = None


class TenantUpdate(Strict):
    name: Annotated[str | None, Field(min_length=1, max_length=200)] = None
    budget: BudgetIn | None = None
    clear_budget: bool = False


class CreditIn(Strict):
    amount: Amount
    idempotency_key: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")]
    kind: Literal["topup", "adjust"] = "topup"
    note: Annotated[str | None, Field(max_length=500)] = None


class EntryOut(BaseModel):
    kind: str
    amount: str
    created_at_ms: int
    reference: str
    note: str | None = None


class BalanceOut(BaseModel):
    tenant_id: str
    available: str
    held: str
    charged_total: str
    currency: str
    starter_remaining_cap: str | None = None
    starter_expires_at: int | None = None


PriceField = Annotated[str | None, Field(pattern=r"^\d{1,12}(\.\d{1,6})?$")]


class PriceSheetIn(Strict):
    """Per million tokens (``input``, ``output``, ``cached_input``, ``cache_write``, ``embedding``)
    or per image (``image``), as decimal strings."""

    input: PriceField = None
    output: PriceField = None
    cached_input: PriceField = None
    cache_write: PriceField = None
    image: PriceField = None
    embedding: PriceField = None

    def to_sheet(self) -> PriceSheet:
        return PriceSheet.from_dict(self.model_dump(exclude_none=True))


class PriceIn(Strict):
    cost: PriceSheetIn = Field(description="What the provider charges")
    sell: PriceSheetIn | None = Field(default=None, description="Explicit selling prices")
    margin_bps: Annotated[
        int | None, Field(ge=0, le=1_000_000, description="Selling price = cost x (1 + margin); 2500 = 25%")
    ] = None
    effective_at: datetime | None = Field(
        default=None, description="When the price takes effect; default now"
    )
    force: bool = Field(default=False, description="Allow a selling price below cost")


class PriceOut(BaseModel):
    model: str
    effective_at_ms: int
    cost: dict[str, str]
    sell: dict[str, str]
    margin_bps: int | None
    created_at: int


#: Latest epoch second accepted for an expiry (the end of year 9999).
MAX_EPOCH_SECONDS = 253_402_300_799
ModelList = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=256)]] | None,
    Field(max_length=256, description="Models the key may use; null: every model (within its creator's)"),
]


class KeyIn(Strict):
    """A data-plane key (``scope: data``, the default) of a tenant, or an admin key (``scope: admin``)
    with a ``role``: a ``tenant_admin`` key belongs to one tenant, the other roles to none. Every
    field stays within the creator's own ceiling: its tenant, its models, its role and its expiry."""

    tenant_id: Annotated[str | None, Field(pattern=ID_PATTERN)] = None
    name: Annotated[str, Field(min_length=1, max_length=200)]
    scope: Literal["data", "admin"] = "data"
    role: Annotated[
        Role | None, Field(description="Admin keys only: owner, admin, viewer or tenant_admin")
    ] = None
    allowed_models: ModelList = None
    expires_at: Annotated[int | None, Field(gt=0, le=MAX_EPOCH_SECONDS, description="Epoch seconds")] = None
    budget: BudgetIn | None = None
    limits: LimitsIn | None = None

    @model_validator(mode="after")
    def _scope_fits(self) -> Self:
        if self.scope == "data":
            if self.role is not None:
                raise ValueError("role is for admin keys (scope 'admin') only")
            if self.tenant_id is None:
                raise ValueError("a data-plane key needs a tenant_id")
        else:
            if self.role is None:
                raise ValueError("an admin key needs a role")
            if (self.role == "tenant_admin") != (self.tenant_id is not None):
                raise ValueError("a tenant_admin key needs a tenant_id; other admin keys take none")
            if self.budget is not None or self.limits is not None:
                raise ValueError("budget and limits apply to data-plane keys only")
        return self


class KeyUpdate(Strict):
    """Changes to a key, merge-patch style: a field left out stays as it is, ``null`` removes it
    (every model, no expiry, no budget, no limits). The key's id, secret, tenant, scope and role never
    change; to change those, issue a new key. The key that results stays within the caller's own
    ceiling, as an issued one does."""

    name: Annotated[str | None, Field(min_length=1, max_length=200)] = None
    allowed_models: ModelList = None
    expires_at: Annotated[
        int | None, Field(gt=0, le=MAX_EPOCH_SECONDS, description="Epoch seconds; null: never expires")
    ] = None
    budget: Annotated[BudgetIn | None, Field(description="Data-plane keys only; null: no budget")] = None
    limits: Annotated[
        LimitsIn | None,
        Field(description="Data-plane keys only; replaces the key's limits as a whole; null: no limits"),
    ] = None

    @model_validator(mode="after")
    def _name_stays(self) -> Self:
        if "name" in self.model_fields_set and self.name is None:
            raise ValueError("name cannot be removed")
        return self

    def changes(self) -> dict[str, Any]:
        """The fields the request gives, as the key record stores them; ``None`` for one it removes.

        >>> KeyUpdate(name="ci", expires_at=None).changes() == {"name": "ci", "expires_at": None}
        True
        """
        values: dict[str, Any] = {}
        for name in sorted(self.model_fields_set):
            value = getattr(self, name)
            if isinstance(value, BudgetIn):
                value = value.to_record().model_dump()
            elif isinstance(value, LimitsIn):
                value = value.model_dump()
            values[name] = value
        return values


class KeyOut(BaseModel):
    id: str
    tenant_id: str | None
    name: str
    scope: Literal["data", "admin"] = "data"
    role: Role | None = None
    allowed_models: list[str] | None
    created_at: int
    expires_at: int | None
    revoked_at: int | None
    rotated_at: int | None = None
    previous_valid_until: Annotated[
        int | None, Field(description="After a rotation: the old secret works until then (epoch seconds)")
    ] = None
    created_by: str | None = None
    budget: BudgetOut | None = None
    limits: LimitsIn | None = None


class IssuedKeyOut(KeyOut):
    key: str = Field(description="The full key. It is shown once and cannot be recovered.")


class RotateKeyIn(Strict):
    grace_seconds: Annotated[
        int,
        Field(
            ge=0,
            le=30 * 86_400,
            description="How long the old secret keeps working (the deployment may cap it lower)",
        ),
    ] = 0


def _check_api_key(value: SecretStr | None) -> SecretStr | None:
    if value is not None:
        secret = value.get_secret_value()
        if not 1 <= len(secret) <= 4096 or any(ch in secret for ch in "\r\n\x00"):
            raise ValueError("api_key must be 1 to 4096 characters on one line")
    return value


class ProviderCredentialIn(Strict):
    """A new credential for a provider: write-only, never shown again (reads give a masked hint)."""

    api_key: Annotated[SecretStr, Field(description="Write-only; stored in Secrets Manager")]

    @field_validator("api_key")
    @classmethod
    def _sane_key(cls, value: SecretStr) -> SecretStr:
        _check_api_key(value)
        return value


class AuditEntryOut(BaseModel):
    seq: int
    at_ms: int
    request_id: str
    actor: str
    role: str | None
    action: str
    target: str
    tenant_id: str | None
    outcome: Literal["ok", "denied"]
    status: int
    reason: str | None
    diff: dict[str, list[Any]] | None = Field(
        description="{field: [before, after]} for a change; secrets never appear"
    )
    prev_hash: str
    hash: str


class AuditVerificationOut(BaseModel):
    verified: bool
    entries: int
    head_seq: int
    first_broken_seq: int | None = Field(description="The first entry whose link or hash does not hold")
    reason: str | None


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    data: list[T]
    next_cursor: str | None = None


class AuditPage(Page[AuditEntryOut]):
    verification: AuditVerificationOut | None = Field(
        default=None, description="With verify=true: the whole chain, checked link by link"
    )


class SessionRevocationIn(Strict):
    """Whose admin sessions to end: the ``actor`` the audit log shows for them."""

    #: Python's engine for the pattern: pydantic's default (Rust) engine compiles the bounded
    #: Unicode repeat ``\S{1,2048}`` into an automaton that took ~35 ms of every admin cold start.
    #: The value is stripped first (``Strict``), so ``$`` cannot match before a trailing newline.
    model_config = ConfigDict(regex_engine="python-re")

    actor: str = Field(
        pattern=r"^oidc:\S{1,2048}#\S{1,256}$",
        max_length=2400,
        description="'oidc:<issuer>#<subject>', as in the audit log's actor field",
    )


class SessionRevocationOut(BaseModel):
    actor: str
    #: Tokens of this user issued at or before this time (epoch seconds) are refused.
    revoked_before: int
