"""The provider contract: one small Protocol every adapter implements.

Adapters translate between OpenAI's chat shape and a vendor's wire format and do the transport;
nothing else. Routing, retries, metering and billing wrap adapters from the outside. Adapters keep
no per-request state, so one instance serves every concurrent request for its provider config.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal, Protocol, runtime_checkable

from tollgate.schemas.openai import ChatChunk, ChatRequest, EmbeddingRequest, ImageRequest

#: Key an adapter puts in a synthetic final usage chunk to say its counts are estimates. The chat
#: service reads and strips it; it never reaches a client.
USAGE_SOURCE_MARKER = "x_tollgate_usage_source"

#: Where a usage record's token counts came from.
UsageSource = Literal["provider", "estimated", "partial"]


class Capability(StrEnum):
    CHAT = "chat"
    STREAM = "stream"
    TOOLS = "tools"
    VISION = "vision"
    JSON_MODE = "json_mode"
    EMBEDDINGS = "embeddings"
    IMAGES = "images"


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one request."""

    prompt_tokens: int
    completion_tokens: int
    #: Prompt tokens read from the provider's prompt cache (a subset of ``prompt_tokens``).
    cached_tokens: int = 0
    #: Prompt tokens written to the provider's prompt cache (a subset of ``prompt_tokens``).
    cache_write_tokens: int = 0
    #: Reasoning ("thinking") tokens (a subset of ``completion_tokens``).
    reasoning_tokens: int = 0
    source: UsageSource = "provider"

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def from_openai(cls, usage: dict[str, Any]) -> Usage:
        """Reads OpenAI's ``usage`` object; absent or null detail fields count as zero."""
        prompt_details = usage.get("prompt_tokens_details") or {}
        completion_details = usage.get("completion_tokens_details") or {}
        return cls(
            prompt_tokens=_count(usage.get("prompt_tokens")),
            completion_tokens=_count(usage.get("completion_tokens")),
            cached_tokens=_count(prompt_details.get("cached_tokens")),
            cache_write_tokens=_count(prompt_details.get("cache_write_tokens")),
            reasoning_tokens=_count(completion_details.get("reasoning_tokens")),
        )

    def to_openai(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }
        if self.cached_tokens or self.cache_write_tokens:
            details: dict[str, int] = {"cached_tokens": self.cached_tokens}
            if self.cache_write_tokens:
                details["cache_write_tokens"] = self.cache_write_tokens
            body["prompt_tokens_details"] = details
        if self.reasoning_tokens:
            body["completion_tokens_details"] = {"reasoning_tokens": self.reasoning_tokens}
        return body


def _count(value: Any) -> int:
    """A token count from an upstream payload: a non-negative int, anything else is 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


@dataclass(frozen=True, slots=True)
class ChatResult:
    """A finished, non-streamed completion: the ``chat.completion`` body and its usage."""

    completion: ChatChunk
    usage: Usage


@dataclass(frozen=True, slots=True)
class EmbeddingResult:
    """An OpenAI ``list`` of embeddings (``model`` set to the public name) and its usage."""

    body: dict[str, Any]
    usage: Usage


@dataclass(frozen=True, slots=True)
class ImageResult:
    """An OpenAI images response (``created``, ``data``) and how many images it holds."""

    body: dict[str, Any]
    images: int
    usage: Usage | None = None


@runtime_checkable
class Provider(Protocol):
    """A model provider, configured once (base URL, credentials) and shared across requests."""

    @property
    def name(self) -> str:
        """The provider's configured name, e.g. ``openai`` or ``fake``."""
        ...

    @property
    def capabilities(self) -> frozenset[Capability]: ...

    async def chat(self, request: ChatRequest, upstream_model: str) -> ChatResult:
        """One non-streamed completion. Raises ``tollgate.errors.TollgateError`` subclasses."""
        ...

    def stream(self, request: ChatRequest, upstream_model: str) -> AsyncIterator[ChatChunk]:
        """OpenAI ``chat.completion.chunk`` dicts, in order.

        The upstream is always asked for usage; when it gives it, the last chunk has
        ``choices == []`` and a ``usage`` object. Errors before the first chunk raise
        ``TollgateError``; errors later raise it too, and the caller turns them into an SSE
        error event.
        """
        ...

    async def embed(self, request: EmbeddingRequest, upstream_model: str) -> EmbeddingResult:
        """Embeddings, only for providers with ``Capability.EMBEDDINGS``."""
        ...

    async def image(self, request: ImageRequest, upstream_model: str) -> ImageResult:
        """Image generation, only for providers with ``Capability.IMAGES``."""
        ...
