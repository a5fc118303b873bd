"""Environment settings, validated once per process (at cold start, not per request).

Configuration is environment only: the same variables drive Lambda (set by the CDK stack) and
local mode (set by ``tollgate.local``). Logic receives a ``Settings`` object; it never reads
``os.environ`` itself.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TOLLGATE_", frozen=True, extra="ignore")

    catalog_table: str = Field(description="DynamoDB table of providers, model routes, tenants and keys")
    usage_table: str = Field(description="DynamoDB table of per-request usage records")
    ledger_table: str = Field(description="DynamoDB table of balances, holds, entries and rate windows")
    pepper_secret: str = Field(description="Secrets Manager id of the HMAC pepper for hub keys")
    admin_key_secret: str = Field(description="Secrets Manager id of the bootstrap admin key")
    provider_secret_prefix: str = Field(
        description="Name prefix of the per-provider credential secrets, e.g. 'tollgate/prod/providers/'"
    )
    kms_key_id: str = Field(description="Customer-managed KMS key that encrypts provider credentials")

    cache_ttl_seconds: int = Field(
        default=30, ge=1, le=60, description="How long keys, routes and secrets are cached (revocation bound)"
    )
    usage_retention_days: int = Field(default=90, ge=1, description="TTL of raw usage records")
    allow_loopback_upstreams: bool = Field(
        default=False, description="Allow provider base URLs on loopback (local mode, for Ollama)"
    )
    allow_private_upstreams: bool = Field(
        default=False, description="Allow provider base URLs on private networks"
    )
    billing_mode: Literal["enterprise", "credits"] = Field(
        default="enterprise",
        description="enterprise: meter at provider cost, optional budgets; credits: prepaid tenant credits",
    )
    currency: str = Field(default="USD", max_length=16, description="What one unit of money is called")
    starter_credits: str = Field(
        default="0", pattern=r"^\d{1,12}(\.\d{1,6})?$", description="Credits granted once to each new tenant"
    )
    starter_credits_days: int = Field(
        default=30, ge=1, description="Days until unused starter credits expire"
    )
    hold_ttl_seconds: int = Field(
        default=20 * 60,
        ge=60,
        description="Age after which the sweeper settles a hold left by a dead process",
    )
    default_max_output_tokens: int = Field(
        default=4096,
        ge=1,
        description="Worst-case output tokens held when neither request nor route sets one",
    )
    stream_drain_seconds: float = Field(
        default=30.0, ge=0, description="After a client disconnects, how long to keep reading for usage"
    )
    enable_fake_provider: bool = Field(
        default=False, description="Serve the deterministic fake/* models (local mode and tests)"
    )
    upstream_connect_timeout_seconds: float = Field(default=10.0, gt=0)
    upstream_read_timeout_seconds: float = Field(default=300.0, gt=0)
    max_request_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read from the environment on first use)."""
    return Settings()
