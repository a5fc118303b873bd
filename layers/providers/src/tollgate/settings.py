"""Environment settings, validated once per process (at cold start, not per request).

Configuration is environment only: the same variables drive Lambda (set by the CDK stack) and
local mode (set by ``tollgate.local``). Logic receives a ``Settings`` object; it never reads
``os.environ`` itself.

Each field ``name`` is read from ``TOLLGATE_<NAME>`` (any case), as text that pydantic converts and
checks like any other input; the structured ones (``oidc_role_groups``) are JSON. This is all that
was used of ``pydantic-settings``, whose import (sources for dotenv files, CLIs and cloud secret
stores) cost every function ~15 ms of its cold start.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Literal, Self, get_origin

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tollgate.admin.principal import Role

#: The groups the CDK stack creates in its Cognito user pool (``infra/auth.py``), one per role.
DEFAULT_ROLE_GROUPS: dict[str, Role] = {
    "tollgate-owner": "owner",
    "tollgate-admin": "admin",
    "tollgate-viewer": "viewer",
    "tollgate-tenant-admin": "tenant_admin",
}


#: A Cognito user pool's issuer URL.
COGNITO_ISSUER = re.compile(r"https://cognito-idp\.[a-z0-9-]+\.amazonaws\.com/[A-Za-z0-9-]+_[A-Za-z0-9]+")


#: Where every setting's variable name starts.
ENV_PREFIX = "TOLLGATE_"


class SettingsError(ValueError):
    """A ``TOLLGATE_*`` variable that cannot be read at all (a wrong value is a ``ValidationError``)."""


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    catalog_table: str = Field(description="DynamoDB table of providers, model routes, tenants and keys")
    usage_table: str = Field(description="DynamoDB table of per-request usage records")
    ledger_table: str = Field(description="DynamoDB table of balances, holds, entries and rate windows")
    audit_table: str = Field(description="DynamoDB table of the append-only, hash-chained admin audit log")
    analytics_table: str = Field(description="DynamoDB table of usage rollups (hour and day buckets)")
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
    ledger_transport: Literal["http", "boto"] = Field(
        default="http",
        description="How the ledger's two hot-path writes reach DynamoDB: its JSON API on the event loop "
        "(http), or boto3 in a worker thread (boto: for in-process moto in tests)",
    )
    rollup_lateness_minutes: int = Field(
        default=60,
        ge=30,
        le=12 * 60,
        description="How far back every rollup run re-folds usage records, so records settled late "
        "(long streams, swept holds) are picked up; must exceed the longest settle delay",
    )
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
    upstream_read_timeout_seconds: float = Field(
        default=300.0,
        gt=0,
        description="Idle bound on an upstream answer (first byte, then each next chunk); a provider's "
        "timeout_seconds overrides it",
    )
    request_timeout_seconds: float = Field(
        default=600.0,
        gt=0,
        le=900,
        description="Longest a request may spend getting its answer (a stream: its first chunk), "
        "retries and fallbacks included. On Lambda the function's remaining time bounds it further",
    )
    deadline_margin_seconds: float = Field(
        default=2.0,
        ge=0,
        description="Time kept back from the Lambda deadline to settle and answer when it runs out",
    )
    upstream_max_retries: int = Field(
        default=2, ge=0, le=2, description="Retries of a retryable failure on one deployment"
    )
    retry_base_seconds: float = Field(
        default=0.25, ge=0, description="First retry's backoff ceiling; it doubles per retry"
    )
    retry_cap_seconds: float = Field(
        default=4.0,
        ge=0,
        description="Longest backoff; an upstream Retry-After above it fails over instead of waiting",
    )
    retry_jitter: float = Field(default=0.5, ge=0, le=1, description="Random share of each backoff")
    breaker_failure_threshold: int = Field(
        default=5, ge=1, description="Consecutive failures that take a deployment out of service"
    )
    breaker_open_seconds: float = Field(
        default=30.0, gt=0, description="How long a failing deployment stays out before one trial request"
    )
    max_request_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)

    # -- admin sign-in (OIDC / OAuth 2.0 bearer JWTs); unset issuer: admin keys only -------------
    oidc_issuer: str | None = Field(
        default=None,
        description="Issuer ('iss') of admin JWTs, e.g. https://cognito-idp.<region>.amazonaws.com/<pool id>",
    )
    oidc_audience: str | None = Field(
        default=None, description="Audience ('aud') admin JWTs must carry: the app client id"
    )
    oidc_cognito: bool | None = Field(
        default=None,
        description="The issuer is a Cognito user pool: its ID tokens must say token_use 'id', and its "
        "access tokens (no 'aud') are accepted with token_use 'access' and client_id the app client. "
        "Default: detected from the issuer URL (https://cognito-idp.<region>.amazonaws.com/<pool id>)",
    )
    oidc_jwks_url: str | None = Field(
        default=None, description="The issuer's JWKS URL; default: jwks_uri of its discovery document"
    )
    oidc_groups_claim: str = Field(
        default="groups", description="Claim listing the user's groups (Cognito: cognito:groups)"
    )
    oidc_role_groups: dict[str, Role] = Field(
        default_factory=lambda: dict(DEFAULT_ROLE_GROUPS),
        description="Group name -> role (JSON); a user with several mapped groups gets the strongest role",
    )
    oidc_tenant_claim: str = Field(
        default="tenant_id", description="Claim naming a tenant_admin's tenant (Cognito: custom:tenant_id)"
    )
    oidc_jwks_cache_seconds: int = Field(
        default=3600, ge=60, le=86_400, description="How long the issuer's signing keys are cached"
    )
    oidc_jwks_min_refresh_seconds: int = Field(
        default=60,
        ge=1,
        le=3600,
        description="Least time between two JWKS fetches: an unknown key id triggers at most one per period",
    )
    oidc_leeway_seconds: int = Field(
        default=30, ge=0, le=300, description="Clock skew allowed on exp, nbf and iat"
    )
    oidc_allow_insecure_issuer: bool = Field(
        default=False,
        description="TESTS ONLY: accept an http:// issuer and JWKS on loopback. Never set in a deployment",
    )
    key_rotation_max_grace_seconds: int = Field(
        default=7 * 86_400, ge=0, description="Longest grace period a key rotation may give the old secret"
    )

    @classmethod
    def from_environment(cls, environment: Mapping[str, str] | None = None) -> Settings:
        """The settings the ``TOLLGATE_*`` variables of ``environment`` (default: this process's) give.

        A required variable that is missing, or a value out of its range, raises pydantic's
        ``ValidationError`` naming each field; an unreadable JSON value raises ``SettingsError``
        naming its variable (never the value, which could be anything).
        """
        values: dict[str, object] = {}
        for variable, text in (os.environ if environment is None else environment).items():
            if variable[: len(ENV_PREFIX)].upper() != ENV_PREFIX:
                continue
            name = variable[len(ENV_PREFIX) :].lower()
            if name not in cls.model_fields:
                continue
            if name in _JSON_FIELDS:
                try:
                    values[name] = json.loads(text)
                except ValueError:
                    raise SettingsError(f"{ENV_PREFIX}{name.upper()} is not valid JSON") from None
            else:
                values[name] = text
        return cls.model_validate(values)

    @property
    def oidc_is_cognito(self) -> bool:
        """Whether admin JWTs come from a Cognito user pool (``oidc_cognito``, or the issuer's URL)."""
        if self.oidc_cognito is not None:
            return self.oidc_cognito
        return self.oidc_issuer is not None and COGNITO_ISSUER.fullmatch(self.oidc_issuer) is not None

    @model_validator(mode="after")
    def _oidc_is_complete_and_secure(self) -> Self:
        """Fails at cold start, not on the first sign-in: an issuer needs an audience, and https."""
        if self.oidc_issuer is None:
            return self
        if not self.oidc_audience:
            raise ValueError("TOLLGATE_OIDC_AUDIENCE is required with TOLLGATE_OIDC_ISSUER")
        from tollgate.admin.oidc import check_issuer_url

        for url in (self.oidc_issuer, self.oidc_jwks_url):
            if url is not None:
                check_issuer_url(url, allow_insecure=self.oidc_allow_insecure_issuer)
        return self


#: The settings whose variables hold JSON, not text: those typed as maps or lists.
_JSON_FIELDS = frozenset(
    name for name, field in Settings.model_fields.items() if get_origin(field.annotation) in (dict, list)
)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read from the environment on first use)."""
    return Settings.from_environment()
