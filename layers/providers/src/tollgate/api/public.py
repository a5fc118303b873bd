"""The OpenAI-compatible data plane: chat completions (stream app) and models (gateway app)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.background import BackgroundTask

from tollgate.api.deps import PrincipalDep, RequestIdDep, ServicesDep
from tollgate.schemas.openai import ChatRequest, EmbeddingRequest, ImageRequest, ModelList

chat_router = APIRouter(tags=["chat"])
models_router = APIRouter(tags=["models"])  # the gateway function: models, embeddings, images
health_router = APIRouter(tags=["health"])

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@chat_router.post("/v1/chat/completions", operation_id="createChatCompletion", response_model=None)
async def create_chat_completion(
    body: ChatRequest, principal: PrincipalDep, services: ServicesDep, request_id: RequestIdDep
) -> JSONResponse | StreamingResponse:
    call = await services.chat.begin(principal, body, request_id)
    if body.stream:
        events = await call.open_stream()
        return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)
    completion = await call.complete()
    return JSONResponse(completion, background=BackgroundTask(call.record_success))


@models_router.post("/v1/embeddings", operation_id="createEmbedding")
async def create_embedding(
    body: EmbeddingRequest, principal: PrincipalDep, services: ServicesDep, request_id: RequestIdDep
) -> JSONResponse:
    return JSONResponse(await services.generation.embed(principal, body, request_id))


@models_router.post("/v1/images/generations", operation_id="createImage")
async def create_image(
    body: ImageRequest, principal: PrincipalDep, services: ServicesDep, request_id: RequestIdDep
) -> JSONResponse:
    return JSONResponse(await services.generation.image(principal, body, request_id))


@models_router.get("/v1/models", operation_id="listModels")
async def list_models(principal: PrincipalDep, services: ServicesDep) -> ModelList:
    cards = await services.registry.list_models()
    return ModelList(data=[card for card in cards if principal.may_use(card.id)])


@health_router.get("/healthz", operation_id="health", include_in_schema=False)
async def health() -> dict[str, str]:
    return {"status": "ok"}
