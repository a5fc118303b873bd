"""Embeddings and image generation: one resolved provider call each, metered like chat."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tollgate.errors import InvalidRequestError, ModelNotFoundError, TollgateError
from tollgate.metering import Meter
from tollgate.providers.base import Capability, Usage

if TYPE_CHECKING:
    from tollgate.keys import Principal
    from tollgate.providers.registry import Deployment, ProviderRegistry
    from tollgate.schemas.openai import EmbeddingRequest, ImageRequest
    from tollgate.store.usage import DynamoUsageLog

_NO_USAGE = Usage(prompt_tokens=0, completion_tokens=0, source="estimated")


class GenerationService:
    def __init__(self, registry: ProviderRegistry, usage_log: DynamoUsageLog) -> None:
        self._registry = registry
        self._usage_log = usage_log

    async def _resolve(self, meter: Meter, capability: Capability, what: str) -> Deployment:
        if not meter.principal.may_use(meter.model):
            raise ModelNotFoundError(meter.model)
        deployment = await self._registry.resolve(meter.model)
        if capability not in deployment.provider.capabilities:
            raise InvalidRequestError(
                f"The model '{meter.model}' does not support {what}.", param="model", code="unsupported_model"
            )
        meter.deployment = deployment
        return deployment

    async def embed(self, principal: Principal, request: EmbeddingRequest, request_id: str) -> dict[str, Any]:
        meter = Meter(self._usage_log, principal, request_id, model=request.model, endpoint="embeddings")
        try:
            deployment = await self._resolve(meter, Capability.EMBEDDINGS, "embeddings")
            result = await deployment.provider.embed(request, deployment.upstream_model)
        except TollgateError as error:
            await meter.record(status=error.status, usage=_NO_USAGE, error_code=error.code)
            raise
        meter.mark_first_byte()
        await meter.record(status=200, usage=result.usage)
        return result.body

    async def image(self, principal: Principal, request: ImageRequest, request_id: str) -> dict[str, Any]:
        meter = Meter(
            self._usage_log, principal, request_id, model=request.model, endpoint="images.generations"
        )
        try:
            deployment = await self._resolve(meter, Capability.IMAGES, "image generation")
            result = await deployment.provider.image(request, deployment.upstream_model)
        except TollgateError as error:
            await meter.record(status=error.status, usage=_NO_USAGE, error_code=error.code)
            raise
        meter.mark_first_byte()
        await meter.record(status=200, usage=result.usage or Usage(prompt_tokens=0, completion_tokens=0))
        return result.body
