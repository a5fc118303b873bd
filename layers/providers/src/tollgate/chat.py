"""Chat completions: resolve the model, call the provider, meter the result.

``ChatService.begin`` does everything that can fail with a clean HTTP error (access, model
resolution) before a response starts. A ``ChatCall`` then runs the request either way:

* ``complete()`` returns the finished ``chat.completion`` body;
* ``open_stream()`` waits for the provider's first chunk (so an upstream failure is still an
  HTTP error), then returns the SSE byte stream. A failure after that first byte becomes an SSE
  error event followed by ``data: [DONE]``.

Every call ends in exactly one usage record, whatever happened.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from tollgate import sse
from tollgate.errors import ModelNotFoundError, TollgateError, UpstreamError
from tollgate.observability import logger
from tollgate.providers.base import Usage, UsageSource
from tollgate.store.records import UsageRecord
from tollgate.tokens import estimate_prompt_tokens, estimate_tokens

if TYPE_CHECKING:
    from tollgate.keys import Principal
    from tollgate.providers.registry import Deployment, ProviderRegistry
    from tollgate.schemas.openai import ChatChunk, ChatRequest
    from tollgate.store.usage import DynamoUsageLog

#: Key an adapter puts in a synthetic usage chunk to say its counts are estimates; never sent on.
USAGE_SOURCE_MARKER = "x_tollgate_usage_source"
#: HTTP status recorded when the client went away before the response finished (nginx's convention).
CLIENT_CLOSED_REQUEST = 499


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class ChatService:
    def __init__(
        self,
        registry: ProviderRegistry,
        usage_log: DynamoUsageLog,
        *,
        clock_ms: Callable[[], int] = _now_ms,
    ) -> None:
        self._registry = registry
        self._usage_log = usage_log
        self._clock_ms = clock_ms

    async def begin(self, principal: Principal, request: ChatRequest, request_id: str) -> ChatCall:
        call = ChatCall(self._usage_log, principal, request, request_id, created_at_ms=self._clock_ms())
        try:
            if not principal.may_use(request.model):
                raise ModelNotFoundError(request.model)
            call.deployment = await self._registry.resolve(request.model)
        except TollgateError as error:
            await call.record_failure(error)
            raise
        return call


@dataclass
class ChatCall:
    usage_log: DynamoUsageLog
    principal: Principal
    request: ChatRequest
    request_id: str
    created_at_ms: int
    deployment: Deployment | None = None
    started: float = field(default_factory=time.perf_counter)
    first_byte: float | None = None
    usage: Usage | None = None
    delivered_text: list[str] = field(default_factory=list)

    # -- non-streamed ------------------------------------------------------------------------

    async def complete(self) -> ChatChunk:
        deployment = self._deployment()
        try:
            result = await deployment.provider.chat(self.request, deployment.upstream_model)
        except TollgateError as error:
            await self.record_failure(error)
            raise
        self.first_byte = time.perf_counter()
        self.usage = result.usage
        return result.completion

    async def record_success(self) -> None:
        await self._record(status=200)

    # -- streamed ----------------------------------------------------------------------------

    async def open_stream(self) -> AsyncIterator[bytes]:
        deployment = self._deployment()
        chunks = deployment.provider.stream(self.request, deployment.upstream_model)
        try:
            first = await anext(chunks)
        except StopAsyncIteration:
            error = UpstreamError("The provider ended the stream before sending anything.")
            await self.record_failure(error)
            raise error from None
        except TollgateError as error:
            await self.record_failure(error)
            raise
        self.first_byte = time.perf_counter()
        return self._events(first, chunks)

    async def _events(self, first: ChatChunk, chunks: AsyncIterator[ChatChunk]) -> AsyncIterator[bytes]:
        status, error_code = 200, None
        try:
            chunk: ChatChunk | None = first
            while chunk is not None:
                encoded = self._take(chunk)
                if encoded is not None:
                    yield encoded
                chunk = await anext(chunks, None)
            yield sse.DONE
        except TollgateError as error:
            status, error_code = error.status, error.code
            logger.warning("stream failed after first byte", extra={"request_id": self.request_id, "code": error.code})
            yield sse.encode_error(error)
            yield sse.DONE
        except (asyncio.CancelledError, GeneratorExit):
            status, error_code = CLIENT_CLOSED_REQUEST, "client_disconnected"
            raise
        finally:
            await _close(chunks)
            # Shielded: a client disconnect cancels this generator, but never the usage record.
            await asyncio.shield(self._record(status=status, error_code=error_code))

    def _take(self, chunk: ChatChunk) -> bytes | None:
        """Tracks one chunk's text and usage; returns its SSE bytes, or ``None`` to hold it back."""
        usage = chunk.get("usage")
        if usage and not chunk.get("choices"):
            source: UsageSource = chunk.pop(USAGE_SOURCE_MARKER, "provider")
            self.usage = Usage.from_openai(usage)
            if source != "provider":
                self.usage = replace(self.usage, source=source)
            if not self.request.wants_usage_chunk:
                return None
        else:
            for choice in chunk.get("choices") or ():
                content = (choice.get("delta") or {}).get("content")
                if isinstance(content, str):
                    self.delivered_text.append(content)
        return sse.encode_event(chunk)

    # -- metering ----------------------------------------------------------------------------

    def _deployment(self) -> Deployment:
        if self.deployment is None:
            raise RuntimeError("ChatCall used before ChatService.begin resolved it")
        return self.deployment

    def _final_usage(self, status: int) -> Usage:
        if self.usage is not None:
            return self.usage
        if status == 200 or self.first_byte is not None:
            # The provider answered but gave no usage: bill what was delivered, labelled as such.
            return Usage(
                prompt_tokens=estimate_prompt_tokens(self.request),
                completion_tokens=estimate_tokens("".join(self.delivered_text)),
                source="partial",
            )
        return Usage(prompt_tokens=0, completion_tokens=0, source="estimated")

    async def record_failure(self, error: TollgateError) -> None:
        await self._record(status=error.status, error_code=error.code)

    async def _record(self, *, status: int, error_code: str | None = None) -> None:
        usage = self._final_usage(status)
        now = time.perf_counter()
        record = UsageRecord(
            request_id=self.request_id,
            tenant_id=self.principal.tenant_id,
            key_id=self.principal.key_id,
            model=self.request.model,
            provider=self.deployment.provider_name if self.deployment else None,
            upstream_model=self.deployment.upstream_model if self.deployment else None,
            endpoint="chat.completions",
            stream=self.request.stream,
            status=status,
            error_code=error_code,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            usage_source=usage.source,
            latency_ms=round((now - self.started) * 1000),
            ttfb_ms=round((self.first_byte - self.started) * 1000) if self.first_byte else None,
            created_at_ms=self.created_at_ms,
        )
        try:
            await asyncio.to_thread(self.usage_log.put, record)
        except Exception:  # a lost analytics record must not fail the caller's request; it is logged
            logger.exception("usage record not written", extra={"request_id": self.request_id})


async def _close(chunks: AsyncIterator[ChatChunk]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:  # closing a broken upstream stream must not mask the original outcome
            logger.debug("upstream stream close failed")
