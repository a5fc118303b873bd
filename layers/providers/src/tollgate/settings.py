"""Environment settings, validated once per process (at cold start, not per request).

Configuration is environment only: the same variables drive Lambda (set by the CDK stack) and
local mode (set by ``tollgate.local``). Logic receives a ``Settings`` object; it never reads
``os.environ`` itself.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TOLLGATE_", frozen=True, extra="ignore")

    catalog_table: str = Field(description="DynamoDB table of providers, model routes, tenants and keys")
    usage_table: str = Field(description="DynamoDB table of per-request usage records")
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
