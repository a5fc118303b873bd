"""Admin API request and response bodies.

Requests forbid unknown fields, so a typo or a mass-assignment attempt is a 400 rather than a
silently stored attribute. Responses are built from records field by field: credentials and key
hashes have no response field to land in.
"""

from __future__ import annotations

import re
from typing import Annotated, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from tollgate.providers.presets import PRESETS

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


class TenantIn(Strict):
    id: Annotated[str | None, Field(pattern=ID_PATTERN)] = None
    name: Annotated[str, Field(min_length=1, max_length=200)]


class TenantOut(BaseModel):
    id: str
    name: str
    created_at: int


class KeyIn(Strict):
    tenant_id: Annotated[str, Field(pattern=ID_PATTERN)]
    name: Annotated[str, Field(min_length=1, max_length=200)]
    allowed_models: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=256)]] | None, Field(max_length=256)
    ] = None
    expires_at: Annotated[int | None, Field(gt=0, description="Epoch seconds")] = None


class KeyOut(BaseModel):
    id: str
    tenant_id: str
    name: str
    allowed_models: list[str] | None
    created_at: int
    expires_at: int | None
    revoked_at: int | None


class IssuedKeyOut(KeyOut):
    key: str = Field(description="The full key. It is shown once and cannot be recovered.")


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    data: list[T]
    next_cursor: str | None = None
