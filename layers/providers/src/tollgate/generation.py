"""Embeddings and image generation: one resolved, admitted and settled provider call each, run
through the ``Router`` over the model's deployments that offer the capability."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from tollgate.billing import Bill, Demand, Replay
from tollgate.chat import bill_fields, bill_headers
from tollgate.errors import InvalidRequestError, ModelNotFoundError, TollgateError
from tollgate.metering import Meter
from tollgate.providers.base import Capability, Usage
from tollgate.routing import Deadline
from tollgate.tokens import embedding_token_bound

if TYPE_CHECKING:
    from tollgate.billing import Billing
    from tollgate.keys import Principal
    from tollgate.providers.registry import Deployment, Plan, ProviderRegistry
    from tollgate.routing import Router
    from tollgate.schemas.openai import EmbeddingRequest, ImageRequest
    from tollgate.settings import Settings

_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
T = TypeVar("T")


class GenerationService:
    def __init__(
        self, registry: ProviderRegistry, billing: Billing, settings: Settings, router: Router
    ) -> None:
        self._registry = registry
        self._billing = billing
        self._settings = settings
        self._router = router

    async def _admit(
        self,
        meter: Meter,
        capability: Capability,
        what: str,
        demand: Demand,
        idempotency: tuple[str, str] | None,
    ) -> tuple[Plan, Replay | None]:
        """Resolves the deployments able to do ``capability`` (none: a 400) and admits the request."""
        if not meter.principal.may_use(meter.model):
            raise ModelNotFoundError(meter.model)
        plan = (await self._registry.resolve(meter.model)).supporting(capability)
        if plan is None:
            raise InvalidRequestError(
                f"The model '{meter.model}' does not support {what}.", param="model", code="unsupported_model"
            )
        meter.deployment = plan.primary
        return plan, await meter.admit(demand, idempotency)

    async def _run(
        self,
        meter: Meter,
        plan: Plan,
        call: Callable[[Deployment], Awaitable[T]],
        deadline: Deadline | None,
    ) -> T:
        async def attempt(deployment: Deployment) -> T:
            meter.deployment = deployment
            return await call(deployment)

        if deadline is None:
            deadline = Deadline(self._settings.request_timeout_seconds)
        result, _ = await self._router.run(plan, attempt, deadline=deadline, request_id=meter.request_id)
        return result

    async def embed(
        self,
        principal: Principal,
        request: EmbeddingRequest,
        request_id: str,
        *,
        idempotency: tuple[str, str] | None = None,
        deadline: Deadline | None = None,
    ) -> tuple[bytes | Replay, dict[str, str]]:
        meter = Meter(self._billing, principal, request_id, model=request.model, endpoint="embeddings")
        demand = Demand(prompt_tokens=embedding_token_bound(request.input), embedding=True)
        try:
            plan, replay = await self._admit(meter, Capability.EMBEDDINGS, "embeddings", demand, idempotency)
            if replay is not None:
                return replay, {}
            result = await self._run(
                meter, plan, lambda d: d.provider.embed(request, d.upstream_model), deadline
            )
        except TollgateError as error:
            await meter.void(status=error.status, error_code=error.code)
            raise
        meter.mark_first_byte()
        bill = meter.quote(result.usage, embedding=True)
        return await self._finish(meter, result.body, result.usage, bill, images=0)

    async def image(
        self,
        principal: Principal,
        request: ImageRequest,
        request_id: str,
        *,
        idempotency: tuple[str, str] | None = None,
        deadline: Deadline | None = None,
    ) -> tuple[bytes | Replay, dict[str, str]]:
        meter = Meter(
            self._billing, principal, request_id, model=request.model, endpoint="images.generations"
        )
        demand = Demand(prompt_tokens=0, images=request.n)
        try:
            plan, replay = await self._admit(
                meter, Capability.IMAGES, "image generation", demand, idempotency
            )
            if replay is not None:
                return replay, {}
            result = await self._run(
                meter, plan, lambda d: d.provider.image(request, d.upstream_model), deadline
            )
        except TollgateError as error:
            await meter.void(status=error.status, error_code=error.code)
            raise
        meter.mark_first_byte()
        usage = result.usage or Usage(prompt_tokens=0, completion_tokens=0)
        bill = meter.quote(usage, images=result.images)
        return await self._finish(meter, result.body, usage, bill, images=result.images)

    async def _finish(
        self, meter: Meter, body: dict[str, Any], usage: Usage, bill: Bill, *, images: int
    ) -> tuple[bytes, dict[str, str]]:
        currency = self._settings.currency
        body["usage"] = {**(body.get("usage") or {}), **bill_fields(bill, currency)}
        encoded = _JSON(body)
        await meter.settle(
            status=200, usage=usage, bill=bill, images=images, replay=Replay("application/json", encoded)
        )
        return encoded.encode(), bill_headers(bill, currency)
