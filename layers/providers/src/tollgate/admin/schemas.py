"""Admin API request and response bodies.

Requests forbid unknown fields, so a typo or a mass-assignment attempt is a 400 rather than a
silently stored attribute. Responses are built from records field by field: credentials and key
hashes have no response field to land in.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

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

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in PRESETS:
            raise ValueError(f"unknown provider type; expected one of {', '.join(sorted(PRESETS))}")
        return value

    @field_validator("api_key")
    @classmethod
    def _sane_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            secret = value.get_secret_value()
            if not 1 <= len(secret) <= 4096 or any(ch in secret for ch in "\r\n\x00"):
                raise ValueError("api_key must be 1 to 4096 characters on one line")
        return value


class ProviderOut(BaseModel):
    name: str
    type: str
    base_url: str | None
    region: str | None
    enabled: bool
    has_api_key: bool
    api_key_hint: str | None
    created_at: int
    updated_at: int


class RouteIn(Strict):
    provider: Annotated[str, Field(pattern=NAME_PATTERN)]
    upstream_model: Annotated[str, Field(min_length=1, max_length=256)]


class RouteOut(BaseModel):
    model: str
    provider: str
    upstream_model: str
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


class KeyIn(Strict):
    tenant_id: Annotated[str, Field(pattern=ID_PATTERN)]
    name: Annotated[str, Field(min_length=1, max_length=200)]
    allowed_models: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=256)]] | None, Field(max_length=256)
    ] = None
    expires_at: Annotated[int | None, Field(gt=0, description="Epoch seconds")] = None
    budget: BudgetIn | None = None
    limits: LimitsIn | None = None


class KeyOut(BaseModel):
    id: str
    tenant_id: str
    name: str
    allowed_models: list[str] | None
    created_at: int
    expires_at: int | None
    revoked_at: int | None
    budget: BudgetOut | None = None
    limits: LimitsIn | None = None


class IssuedKeyOut(KeyOut):
    key: str = Field(description="The full key. It is shown once and cannot be recovered.")


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    data: list[T]
    next_cursor: str | None = None
