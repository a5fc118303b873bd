"""A deterministic provider for tests and for local mode with no provider keys.

Every answer is a pure function of the request (token counts use ``tollgate.tokens``), and every model name says ``fake``, so nobody
mistakes it for a real model. ``fake/echo`` answers ``Echo: <last user message>``.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import AsyncIterator

from tollgate.errors import ModelNotFoundError
from tollgate.providers.base import Capability, ChatResult, Usage
from tollgate.schemas.openai import ChatChunk, ChatRequest
from tollgate.tokens import estimate_prompt_tokens, estimate_tokens

FAKE_MODELS = ("echo",)


def echo_text(request: ChatRequest) -> str:
    last_user = next((m for m in reversed(request.messages) if m.role == "user"), None)
    return f"Echo: {last_user.text() if last_user else ''}"


def completion_id(request: ChatRequest) -> str:
    digest = zlib.crc32(request.model_dump_json().encode())
    return f"chatcmpl-fake-{digest:08x}"


class FakeProvider:
    """``fake/echo``: echoes the last user message back, word by word when streamed."""

    def __init__(self, name: str = "fake") -> None:
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    @property
    def capabilities(self) -> frozenset[Capability]:
        return frozenset({Capability.CHAT, Capability.STREAM})

    def _answer(self, request: ChatRequest, upstream_model: str) -> tuple[str, str, Usage]:
        if upstream_model not in FAKE_MODELS:
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
