"""Embeddings and image generation: one resolved, admitted and settled provider call each."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from tollgate.billing import Bill, Demand, Replay
from tollgate.chat import bill_fields, bill_headers
from tollgate.errors import InvalidRequestError, ModelNotFoundError, TollgateError
from tollgate.metering import Meter
from tollgate.providers.base import Capability, Usage
from tollgate.tokens import embedding_token_bound

if TYPE_CHECKING:
    from tollgate.billing import Billing
    from tollgate.keys import Principal
    from tollgate.providers.registry import ProviderRegistry
    from tollgate.schemas.openai import EmbeddingRequest, ImageRequest
    from tollgate.settings import Settings

_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class GenerationService:
    def __init__(self, registry: ProviderRegistry, billing: Billing, settings: Settings) -> None:
        self._registry = registry
        self._billing = billing
        self._settings = settings

    async def _admit(
        self,
        meter: Meter,
        capability: Capability,
        what: str,
        demand: Demand,
        idempotency: tuple[str, str] | None,
    ) -> Replay | None:
        if not meter.principal.may_use(meter.model):
            raise ModelNotFoundError(meter.model)
        deployment = await self._registry.resolve(meter.model)
        if capability not in deployment.provider.capabilities:
            raise InvalidRequestError(
                f"The model '{meter.model}' does not support {what}.", param="model", code="unsupported_model"
            )
        meter.deployment = deployment
        return await meter.admit(demand, idempotency)

    async def embed(
        self,
        principal: Principal,
        request: EmbeddingRequest,
        request_id: str,
        *,
        idempotency: tuple[str, str] | None = None,
    ) -> tuple[bytes | Replay, dict[str, str]]:
        meter = Meter(self._billing, principal, request_id, model=request.model, endpoint="embeddings")
        demand = Demand(prompt_tokens=embedding_token_bound(request.input), embedding=True)
        try:
            replay = await self._admit(meter, Capability.EMBEDDINGS, "embeddings", demand, idempotency)
            if replay is not None:
                return replay, {}
            assert meter.deployment is not None
            result = await meter.deployment.provider.embed(request, meter.deployment.upstream_model)
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
    ) -> tuple[bytes | Replay, dict[str, str]]:
        meter = Meter(
            self._billing, principal, request_id, model=request.model, endpoint="images.generations"
        )
        demand = Demand(prompt_tokens=0, images=request.n)
        try:
            replay = await self._admit(meter, Capability.IMAGES, "image generation", demand, idempotency)
            if replay is not None:
                return replay, {}
            assert meter.deployment is not None
            result = await meter.deployment.provider.image(request, meter.deployment.upstream_model)
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
