"""A deterministic provider for tests and for local mode with no provider keys.

Every answer is a pure function of the request (token counts use ``tollgate.tokens``), and every
model name says ``fake``, so nobody mistakes it for a real model. ``fake/echo`` answers
``Echo: <last user message>``; ``fake/embed`` gives unit vectors derived from a hash of each
input; ``fake/image`` returns a 1x1 PNG whose colour derives from the prompt.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
import time
import zlib
from collections.abc import AsyncIterator

from tollgate.errors import ModelNotFoundError
from tollgate.providers.base import Capability, ChatResult, EmbeddingResult, ImageResult, Usage
from tollgate.schemas.openai import ChatChunk, ChatRequest, EmbeddingRequest, ImageRequest
from tollgate.tokens import estimate_prompt_tokens, estimate_tokens

#: Model names per capability: ``fake/echo`` chats, ``fake/embed`` embeds, ``fake/image`` draws.
CHAT_MODELS = ("echo",)
EMBEDDING_MODELS = ("embed",)
IMAGE_MODELS = ("image",)
FAKE_MODELS = CHAT_MODELS + EMBEDDING_MODELS + IMAGE_MODELS
DEFAULT_DIMENSIONS = 8


def echo_text(request: ChatRequest) -> str:
    last_user = next((m for m in reversed(request.messages) if m.role == "user"), None)
    return f"Echo: {last_user.text() if last_user else ''}"


def completion_id(request: ChatRequest) -> str:
    digest = zlib.crc32(request.model_dump_json().encode())
    return f"chatcmpl-fake-{digest:08x}"


def fake_vector(text: str, dimensions: int) -> list[float]:
    """A unit vector that depends only on ``text`` (equal texts embed equally)."""
    raw: list[float] = []
    counter = 0
    while len(raw) < dimensions:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        raw.extend((byte - 127.5) / 127.5 for byte in digest)
        counter += 1
    vector = raw[:dimensions]
    norm = math.sqrt(sum(value * value for value in vector)) or 1.0
    return [round(value / norm, 6) for value in vector]


def fake_png(prompt: str) -> bytes:
    """A valid 1x1 RGB PNG whose colour comes from the prompt."""
    red, green, blue = hashlib.sha256(prompt.encode()).digest()[:3]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(bytes([0, red, green, blue]))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


class FakeProvider:
    """Deterministic chat (``echo``), embeddings (``embed``) and images (``image``)."""

    def __init__(self, name: str = "fake") -> None:
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    @property
    def capabilities(self) -> frozenset[Capability]:
        return frozenset({Capability.CHAT, Capability.STREAM, Capability.EMBEDDINGS, Capability.IMAGES})

    def _answer(self, request: ChatRequest, upstream_model: str) -> tuple[str, str, Usage]:
        if upstream_model not in CHAT_MODELS:
            raise ModelNotFoundError(f"{self._name}/{upstream_model}")
        text = echo_text(request)
        finish_reason = "stop"
        limit = request.output_limit
        if limit is not None and estimate_tokens(text) > limit:
            words = text.split(" ")[:limit]
            while len(words) > 1 and estimate_tokens(" ".join(words)) > limit:
                words.pop()
            text = " ".join(words)
            finish_reason = "length"
        usage = Usage(prompt_tokens=estimate_prompt_tokens(request), completion_tokens=estimate_tokens(text))
        return text, finish_reason, usage

    async def chat(self, request: ChatRequest, upstream_model: str) -> ChatResult:
        text, finish_reason, usage = self._answer(request, upstream_model)
        completion: ChatChunk = {
            "id": completion_id(request),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": usage.to_openai(),
        }
        return ChatResult(completion=completion, usage=usage)

    async def stream(self, request: ChatRequest, upstream_model: str) -> AsyncIterator[ChatChunk]:
        text, finish_reason, usage = self._answer(request, upstream_model)
        base = {
            "id": completion_id(request),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": request.model,
        }

        def chunk(delta: dict[str, object], finish: str | None = None) -> ChatChunk:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {**base, "choices": [choice]}

        yield chunk({"role": "assistant", "content": ""})
        words = text.split(" ")
        for position, word in enumerate(words):
            yield chunk({"content": word if position == 0 else f" {word}"})
        yield chunk({}, finish_reason)
        yield {**base, "choices": [], "usage": usage.to_openai()}

    async def embed(self, request: EmbeddingRequest, upstream_model: str) -> EmbeddingResult:
        if upstream_model not in EMBEDDING_MODELS:
            raise ModelNotFoundError(f"{self._name}/{upstream_model}")
        dimensions = request.dimensions or DEFAULT_DIMENSIONS
        texts = request.texts()
        data = [
            {"object": "embedding", "index": index, "embedding": fake_vector(text, dimensions)}
            for index, text in enumerate(texts)
        ]
        tokens = sum(max(estimate_tokens(text), 1) for text in texts)
        usage = Usage(prompt_tokens=tokens, completion_tokens=0)
        body = {
            "object": "list",
            "data": data,
            "model": request.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return EmbeddingResult(body=body, usage=usage)

    async def image(self, request: ImageRequest, upstream_model: str) -> ImageResult:
        if upstream_model not in IMAGE_MODELS:
            raise ModelNotFoundError(f"{self._name}/{upstream_model}")
        encoded = base64.b64encode(fake_png(request.prompt)).decode()
        body = {
            "created": int(time.time()),
            "data": [
                {"b64_json": encoded, "revised_prompt": f"(fake) {request.prompt}"} for _ in range(request.n)
            ],
        }
        return ImageResult(body=body, images=request.n)
