"""The services one process shares, built once from ``Settings`` on first use (never at import).

This is the composition root: the only place that creates AWS clients and wires stores into
services. Handlers and routes receive a ``Services`` object and never build anything themselves.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cache, cached_property
from typing import TYPE_CHECKING, Any

from tollgate.settings import Settings

if TYPE_CHECKING:
    from tollgate.admin.audit import AuditTrail
    from tollgate.admin.auth import AdminAuthenticator
    from tollgate.admin.service import AdminService
    from tollgate.billing import Billing
    from tollgate.chat import ChatService
    from tollgate.generation import GenerationService
    from tollgate.keys import KeyAuthenticator
    from tollgate.providers.registry import ProviderRegistry
    from tollgate.reports import AnalyticsService
    from tollgate.rollup import Rollup
    from tollgate.routing import Router
    from tollgate.store.analytics import DynamoAnalytics
    from tollgate.store.audit import DynamoAuditLog
    from tollgate.store.catalog import DynamoCatalog
    from tollgate.store.dynamo_http import DynamoTransport
    from tollgate.store.ledger import DynamoLedger
    from tollgate.store.secrets import SecretStore
    from tollgate.store.usage import DynamoUsageLog


_session_lock = threading.Lock()


@cache
def _boto_session() -> Any:
    import boto3

    return boto3.session.Session()


def aws_client(service: str) -> Any:
    """A low-level boto3 client with short timeouts and standard retries.

    Endpoints come from the environment (``AWS_ENDPOINT_URL`` in local mode), so there is no
    "if local" branch anywhere. Clients share one session, so service models load once per process;
    creating clients from a session is not thread-safe, hence the lock.
    """
    from botocore.config import Config

    config = Config(
        connect_timeout=2,
        read_timeout=5,
        retries={"mode": "standard", "max_attempts": 3},
        max_pool_connections=64,
    )
    with _session_lock:
        return _boto_session().client(service, config=config)


@dataclass
class Services:
    settings: Settings

    @cached_property
    def dynamodb(self) -> Any:
        return aws_client("dynamodb")

    @cached_property
    def catalog(self) -> DynamoCatalog:
        from tollgate.store.catalog import DynamoCatalog

        return DynamoCatalog(self.dynamodb, self.settings.catalog_table)

    @cached_property
    def usage_log(self) -> DynamoUsageLog:
        from tollgate.store.usage import DynamoUsageLog

        return DynamoUsageLog(
            self.dynamodb, self.settings.usage_table, retention_days=self.settings.usage_retention_days
        )

    @cached_property
    def ledger(self) -> DynamoLedger:
        from tollgate.store.ledger import DynamoLedger

        return DynamoLedger(
            self.dynamodb,
            self.settings.ledger_table,
            usage_table=self.settings.usage_table,
            usage_retention_days=self.settings.usage_retention_days,
            transport=self.ledger_transport,
        )

    @cached_property
    def ledger_transport(self) -> DynamoTransport:
        """The ledger's hot path to DynamoDB (``store.dynamo_http``): the same endpoint, region and
        credential chain as ``dynamodb``, without botocore's per-call cost or a thread hop."""
        from tollgate.store.dynamo_http import HttpDynamo, ThreadedDynamo

        if self.settings.ledger_transport == "boto":
            return ThreadedDynamo(self.dynamodb)
        return HttpDynamo(self.dynamodb, _boto_session())

    @cached_property
    def analytics(self) -> DynamoAnalytics:
        from tollgate.store.analytics import DynamoAnalytics

        return DynamoAnalytics(self.dynamodb, self.settings.analytics_table)

    @cached_property
    def rollup(self) -> Rollup:
        from tollgate.rollup import Rollup

        return Rollup(
            self.usage_log, self.analytics, lateness_ms=self.settings.rollup_lateness_minutes * 60_000
        )

    @cached_property
    def reports(self) -> AnalyticsService:
        from tollgate.reports import AnalyticsService

        return AnalyticsService(self.settings, self.analytics, self.usage_log, self.ledger, self.catalog)

    @cached_property
    def billing(self) -> Billing:
        from tollgate.billing import Billing

        return Billing(self.settings, self.catalog, self.ledger)

    @cached_property
    def secrets(self) -> SecretStore:
        from tollgate.store.secrets import SecretStore

        return SecretStore(
            aws_client("secretsmanager"),
            pepper_secret=self.settings.pepper_secret,
            admin_key_secret=self.settings.admin_key_secret,
            provider_prefix=self.settings.provider_secret_prefix,
            kms_key_id=self.settings.kms_key_id,
            max_age=self.settings.cache_ttl_seconds,
        )

    @cached_property
    def http(self) -> Any:
        from tollgate.providers.http import HttpClient

        return HttpClient(
            allow_loopback=self.settings.allow_loopback_upstreams,
            allow_private=self.settings.allow_private_upstreams,
            connect_timeout=self.settings.upstream_connect_timeout_seconds,
            read_timeout=self.settings.upstream_read_timeout_seconds,
        )

    @cached_property
    def keys(self) -> KeyAuthenticator:
        from tollgate.keys import KeyAuthenticator

        return KeyAuthenticator(self.catalog, self.secrets, cache_ttl=self.settings.cache_ttl_seconds)

    @cached_property
    def registry(self) -> ProviderRegistry:
        from tollgate.providers.registry import ProviderRegistry

        return ProviderRegistry(
            self.catalog,
            self.secrets,
            self.http,
            cache_ttl=self.settings.cache_ttl_seconds,
            fake_enabled=self.settings.enable_fake_provider,
        )

    @cached_property
    def router(self) -> Router:
        """Retries and fallback; its circuit breaker's state lives as long as this process."""
        from tollgate.routing import CircuitBreaker, RetryPolicy, Router

        settings = self.settings
        policy = RetryPolicy(
            max_retries=settings.upstream_max_retries,
            base=settings.retry_base_seconds,
            cap=settings.retry_cap_seconds,
            jitter=settings.retry_jitter,
        )
        breaker = CircuitBreaker(
            threshold=settings.breaker_failure_threshold, open_seconds=settings.breaker_open_seconds
        )
        return Router(policy, breaker)

    @cached_property
    def chat(self) -> ChatService:
        from tollgate.chat import ChatService

        return ChatService(self.registry, self.billing, self.settings, self.router)

    @cached_property
    def generation(self) -> GenerationService:
        from tollgate.generation import GenerationService

        return GenerationService(self.registry, self.billing, self.settings, self.router)

    @cached_property
    def admin(self) -> AdminService:
        from tollgate.admin.service import AdminService

        return AdminService(self)

    @cached_property
    def audit_log(self) -> DynamoAuditLog:
        from tollgate.store.audit import DynamoAuditLog

        return DynamoAuditLog(self.dynamodb, self.settings.audit_table)

    @cached_property
    def audit_trail(self) -> AuditTrail:
        from tollgate.admin.audit import AuditTrail

        return AuditTrail(self.audit_log)

    @cached_property
    def admin_auth(self) -> AdminAuthenticator:
        """Admin keys, OIDC tokens (when an issuer is configured) and the bootstrap key. Building it
        fetches nothing: the issuer's keys are read on the first token."""
        from tollgate.admin.auth import AdminAuthenticator
        from tollgate.admin.oidc import OidcVerifier

        return AdminAuthenticator(
            keys=self.keys,
            secrets=self.secrets,
            oidc=OidcVerifier.from_settings(self.settings),
            catalog=self.catalog,
            cache_ttl=self.settings.cache_ttl_seconds,
        )

    async def aclose(self) -> None:
        if "http" in self.__dict__:
            await self.http.close()
        if "ledger_transport" in self.__dict__:
            await self.ledger_transport.close()
