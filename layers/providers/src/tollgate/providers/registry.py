"""Resolves a public model name to a configured provider adapter, before any network call.

A name resolves in this order:

1. a model route set through the admin API (``PUT /admin/v1/models/{model}``);
2. ``<provider>/<upstream model>``, for any enabled provider, e.g. ``openai/gpt-4o-mini``;
3. ``fake/<model>``, when the fake provider is switched on (local mode and tests).

Anything else is a 404 ``model_not_found``. Routes, provider configs and credentials are cached
for the settings' TTL, so steady-state resolution does no I/O.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tollgate.cache import TTLCache
from tollgate.errors import ModelNotFoundError
from tollgate.providers.factory import build_adapter
from tollgate.providers.fake import FAKE_MODELS, FakeProvider
from tollgate.schemas.openai import ModelCard

if TYPE_CHECKING:
    from tollgate.providers.base import Provider
    from tollgate.store.catalog import DynamoCatalog
    from tollgate.store.records import ProviderRecord, RouteRecord
    from tollgate.store.secrets import SecretStore

FAKE_PROVIDER = "fake"


@dataclass(frozen=True, slots=True)
class Deployment:
    """Where one request goes: an adapter and the model name the upstream knows."""

    provider: Provider
    provider_name: str
    upstream_model: str


class ProviderRegistry:
    def __init__(
        self,
        catalog: DynamoCatalog,
        secrets_store: SecretStore,
        http: Any,
        *,
        cache_ttl: float,
        fake_enabled: bool,
    ) -> None:
        self._catalog = catalog
        self._secrets = secrets_store
        self._http = http
        self._fake_enabled = fake_enabled
        self._routes: TTLCache[RouteRecord] = TTLCache(cache_ttl, negative_ttl=min(cache_ttl, 5.0))
        self._providers: TTLCache[tuple[ProviderRecord, Provider]] = TTLCache(cache_ttl, negative_ttl=5.0)
        self._fake = FakeProvider(FAKE_PROVIDER)

    async def resolve(self, model: str) -> Deployment:
        route = await self._route(model)
        if route is not None:
            provider = await self._provider(route.provider)
            if provider is None:
                raise ModelNotFoundError(model)
            return Deployment(provider, route.provider, route.upstream_model)
        provider_name, slash, upstream_model = model.partition("/")
        if slash and upstream_model:
            provider = await self._provider(provider_name)
            if provider is not None:
                return Deployment(provider, provider_name, upstream_model)
        raise ModelNotFoundError(model)

    async def list_models(self) -> list[ModelCard]:
        routes = await asyncio.to_thread(self._catalog.list_routes)
        now = int(time.time())
        cards = [
            ModelCard(id=route.model, created=route.created_at, owned_by=route.provider) for route in routes
        ]
        if self._fake_enabled:
            cards.extend(
                ModelCard(id=f"{FAKE_PROVIDER}/{name}", created=now, owned_by=FAKE_PROVIDER)
                for name in FAKE_MODELS
            )
        return cards

    def forget(self) -> None:
        """Drops every cached route and adapter (this process only)."""
        self._routes.invalidate()
        self._providers.invalidate()

    async def _route(self, model: str) -> RouteRecord | None:
        hit, route = self._routes.get(model)
        if not hit:
            route = await asyncio.to_thread(self._catalog.get_route, model)
            self._routes.put(model, route)
        return route

    async def _provider(self, name: str) -> Provider | None:
        hit, entry = self._providers.get(name)
        if not hit:
            entry = await asyncio.to_thread(self._load_provider, name)
            self._providers.put(name, entry)
        return entry[1] if entry else None

    def _load_provider(self, name: str) -> tuple[ProviderRecord, Provider] | None:
        record = self._catalog.get_provider(name)
        if record is None:
            if name == FAKE_PROVIDER and self._fake_enabled:
                return self._builtin_fake()
            return None
        if not record.enabled:
            return None
        return record, self._build(record)

    def _builtin_fake(self) -> tuple[ProviderRecord, Provider]:
        from tollgate.store.records import ProviderRecord

        record = ProviderRecord(name=FAKE_PROVIDER, type="fake", created_at=0, updated_at=0)
        return record, self._fake

    def _build(self, record: ProviderRecord) -> Provider:
        api_key = self._secrets.provider_key(record.secret_id) if record.secret_id else None
        return build_adapter(record, api_key, self._http)
