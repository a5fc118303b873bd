"""Resolves a public model name to its plan: configured provider adapters, before any network call.

A name resolves in this order:

1. a model route set through the admin API (``PUT /admin/v1/models/{model}``): its deployments;
2. ``<provider>/<upstream model>``, for any enabled provider, e.g. ``openai/gpt-4o-mini``;
3. ``fake/<model>``, when the fake provider is switched on (local mode and tests).

Anything else is a 404 ``model_not_found``. Routes, provider configs and credentials are cached
for the settings' TTL, so steady-state resolution does no I/O.

A route's deployments are ordered for each request: lower ``priority`` first; within one priority,
a random order weighted by ``weight`` (so weights 3 and 1 put the first one first three times in
four). The ``Router`` (``tollgate.routing``) then tries them in that order. A deployment whose
provider is missing, disabled or not buildable is left out of the plan; when none is left the
route is a 404 (or the provider's 503).
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from tollgate.cache import TTLCache
from tollgate.errors import ModelNotFoundError, TollgateError
from tollgate.providers.factory import build_adapter
from tollgate.providers.fake import FAKE_MODELS, FakeProvider
from tollgate.schemas.openai import ModelCard

if TYPE_CHECKING:
    from tollgate.providers.base import Capability, Provider
    from tollgate.store.catalog import DynamoCatalog
    from tollgate.store.records import ProviderRecord, RouteRecord, RouteTarget
    from tollgate.store.secrets import SecretStore

FAKE_PROVIDER = "fake"


@dataclass(frozen=True, slots=True)
class Deployment:
    """Where one request goes: an adapter and the model name the upstream knows."""

    provider: Provider
    provider_name: str
    upstream_model: str

    @property
    def key(self) -> tuple[str, str]:
        """What the circuit breaker tracks: one provider config serving one upstream model."""
        return self.provider_name, self.upstream_model


@dataclass(frozen=True, slots=True)
class Plan:
    """A public model's deployments for one request, in the order to try them (never empty)."""

    model: str
    deployments: tuple[Deployment, ...]

    @property
    def primary(self) -> Deployment:
        return self.deployments[0]

    def supporting(self, capability: Capability) -> Plan | None:
        """The deployments whose provider offers ``capability``, or None when none does."""
        able = tuple(d for d in self.deployments if capability in d.provider.capabilities)
        return Plan(self.model, able) if able else None


def order_targets(targets: Sequence[RouteTarget], rng: random.Random) -> list[RouteTarget]:
    """``targets`` by priority (lower first), each priority in a random order weighted by ``weight``
    (drawn without replacement, so every target appears once)."""
    ordered: list[RouteTarget] = []
    for priority in sorted({target.priority for target in targets}):
        pool = [target for target in targets if target.priority == priority]
        while len(pool) > 1:
            (index,) = rng.choices(range(len(pool)), weights=[max(target.weight, 1) for target in pool])
            ordered.append(pool.pop(index))
        ordered.extend(pool)
    return ordered


class ProviderRegistry:
    def __init__(
        self,
        catalog: DynamoCatalog,
        secrets_store: SecretStore,
        http: Any,
        *,
        cache_ttl: float,
        fake_enabled: bool,
        rng: random.Random | None = None,
    ) -> None:
        self._catalog = catalog
        self._secrets = secrets_store
        self._http = http
        self._fake_enabled = fake_enabled
        self._rng = rng or random.Random()  # noqa: S311 - load spreading, not a secret
        self._route_list: TTLCache[list[RouteRecord]] = TTLCache(cache_ttl)
        self._routes: TTLCache[RouteRecord] = TTLCache(cache_ttl, negative_ttl=min(cache_ttl, 5.0))
        self._providers: TTLCache[tuple[ProviderRecord, Provider]] = TTLCache(cache_ttl, negative_ttl=5.0)
        #: Providers whose adapter could not be built (no credential...), so a route that lists one
        #: beside healthy ones does not fetch its secret again on every request.
        self._broken: TTLCache[TollgateError] = TTLCache(5.0)
        self._fake = FakeProvider(FAKE_PROVIDER)

    async def resolve(self, model: str) -> Plan:
        """The plan for ``model``; a 404 ``model_not_found`` when nothing serves it."""
        route = await self._route(model)
        if route is not None:
            deployments: list[Deployment] = []
            problem: TollgateError | None = None
            for target in order_targets(route.deployments, self._rng):
                try:
                    provider = await self._provider(target.provider)
                except TollgateError as error:  # this provider cannot be built; the others may serve
                    problem = problem or error
                    continue
                if provider is not None:
                    deployments.append(Deployment(provider, target.provider, target.upstream_model))
            if deployments:
                return Plan(model, tuple(deployments))
            if problem is not None:
                raise problem
            raise ModelNotFoundError(model)
        provider_name, slash, upstream_model = model.partition("/")
        if slash and upstream_model:
            provider = await self._provider(provider_name)
            if provider is not None:
                return Plan(model, (Deployment(provider, provider_name, upstream_model),))
        raise ModelNotFoundError(model)

    async def list_models(self) -> list[ModelCard]:
        routes = await self._route_list.load("all", self._catalog.list_routes) or []
        now = int(time.time())
        cards = [
            ModelCard(id=route.model, created=route.created_at, owned_by=route.primary.provider)
            for route in routes
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
        self._route_list.invalidate()
        self._providers.invalidate()
        self._broken.invalidate()

    async def _route(self, model: str) -> RouteRecord | None:
        return await self._routes.load(model, partial(self._catalog.get_route, model))

    async def _provider(self, name: str) -> Provider | None:
        hit, entry = self._providers.get(name)
        if not hit:
            broken, error = self._broken.get(name)
            if broken and error is not None:
                raise error.with_traceback(None)
            try:
                entry = await self._providers.load(name, partial(self._load_provider, name))
            except TollgateError as failure:
                self._broken.put(name, failure)
                raise
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
