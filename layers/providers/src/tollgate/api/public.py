"""The OpenAI-compatible data plane: chat completions (stream app); models, embeddings and
images (gateway app)."""

from __future__ import annotations

import hashlib
from typing import Annotated

from pydantic import BaseModel
from starlette.responses import Response

from tollgate.api.caller import Caller
from tollgate.api.routes import InHeader, RouteTable
from tollgate.api.streaming import EventStream
from tollgate.billing import Replay, request_hash
from tollgate.schemas.openai import ChatRequest, EmbeddingRequest, ImageRequest, ModelList

chat_routes = RouteTable("chat")
models_routes = RouteTable("models")  # the gateway function: models, embeddings, images
health_routes = RouteTable("health")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
REPLAYED = {"Idempotent-Replayed": "true"}
IdempotencyKey = Annotated[
    str | None,
    InHeader(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Retries with the same key and body replay the first response (one call, one charge)",
    ),
]


def idempotency(key: str | None, endpoint: str, body: BaseModel) -> tuple[str, str] | None:
    """The stored-response key and the body's fingerprint; the body is serialised only when the
    client sent an ``Idempotency-Key`` (most requests do not, and the dump is not free)."""
    if key is None:
        return None
    return hashlib.sha256(key.encode()).hexdigest(), request_hash(endpoint, body.model_dump_json())


def replayed(replay: Replay) -> Response:
    return Response(replay.body, media_type=replay.content_type, headers=REPLAYED)


@chat_routes.post("/v1/chat/completions", operation_id="createChatCompletion", response_model=None)
async def create_chat_completion(
    body: ChatRequest,
    caller: Caller,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    key = idempotency(idempotency_key, "chat.completions", body)
    call = await caller.services.chat.begin(
        caller.principal, body, caller.request_id, idempotency=key, deadline=caller.deadline
    )
    if call.replay is not None:
        return replayed(call.replay)
    if body.stream:
        events = await call.open_stream()
        return EventStream(events, headers=SSE_HEADERS)
    return Response(await call.complete(), media_type="application/json", headers=call.headers())


@models_routes.post("/v1/embeddings", operation_id="createEmbedding", response_model=None)
async def create_embedding(
    body: EmbeddingRequest,
    caller: Caller,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    key = idempotency(idempotency_key, "embeddings", body)
    result, headers = await caller.services.generation.embed(
        caller.principal, body, caller.request_id, idempotency=key, deadline=caller.deadline
    )
    if isinstance(result, Replay):
        return replayed(result)
    return Response(result, media_type="application/json", headers=headers)


@models_routes.post("/v1/images/generations", operation_id="createImage", response_model=None)
async def create_image(
    body: ImageRequest,
    caller: Caller,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    key = idempotency(idempotency_key, "images.generations", body)
    result, headers = await caller.services.generation.image(
        caller.principal, body, caller.request_id, idempotency=key, deadline=caller.deadline
    )
    if isinstance(result, Replay):
        return replayed(result)
    return Response(result, media_type="application/json", headers=headers)


@models_routes.get("/v1/models", operation_id="listModels", response_model=ModelList)
async def list_models(caller: Caller) -> Response:
    cards = await caller.services.registry.list_models()
    listing = ModelList(data=[card for card in cards if caller.principal.may_use(card.id)])
    return Response(listing.model_dump_json(), media_type="application/json")


@health_routes.get("/healthz", operation_id="health", include_in_schema=False)
async def health() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")
