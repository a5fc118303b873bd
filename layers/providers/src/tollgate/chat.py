"""Chat completions: resolve the model, call the provider, meter the result.

``ChatService.begin`` does everything that can fail with a clean HTTP error (access, model
resolution) before a response starts. A ``ChatCall`` then runs the request either way:

* ``complete()`` returns the finished ``chat.completion`` body;
* ``open_stream()`` waits for the provider's first chunk (so an upstream failure is still an
  HTTP error), then returns the encoded byte stream. A failure after that first byte becomes an
  error event in the client's wire format.

Every call ends in exactly one usage record, whatever happened.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol

from tollgate import sse
from tollgate.errors import ModelNotFoundError, TollgateError, UpstreamError
from tollgate.metering import Meter
from tollgate.observability import logger
from tollgate.providers.base import USAGE_SOURCE_MARKER, Usage, UsageSource
from tollgate.tokens import estimate_prompt_tokens, estimate_tokens

if TYPE_CHECKING:
    from tollgate.keys import Principal
    from tollgate.providers.registry import Deployment, ProviderRegistry
    from tollgate.schemas.openai import ChatChunk, ChatRequest
    from tollgate.store.usage import DynamoUsageLog

#: HTTP status recorded when the client went away before the response finished (nginx's convention).
CLIENT_CLOSED_REQUEST = 499


class StreamEncoder(Protocol):
    """Turns one stream's chunks into a client's wire format. One instance per stream."""

    def chunk(self, chunk: ChatChunk) -> bytes | None:
        """The bytes for one chunk, or ``None`` to send nothing for it."""
        ...

    def finish(self, usage: Usage) -> bytes:
        """The closing bytes, once the provider's stream ended normally."""
        ...

    def error(self, error: TollgateError) -> bytes:
        """The closing bytes when the stream failed after its first byte."""
        ...


class OpenAIStreamEncoder:
    """OpenAI's SSE: one ``data:`` event per chunk, the usage chunk only when the client asked for
    it (``stream_options.include_usage``), then ``data: [DONE]``; a late error is an error event
    followed by ``[DONE]``."""

    def __init__(self, include_usage: bool) -> None:
        self._include_usage = include_usage

    def chunk(self, chunk: ChatChunk) -> bytes | None:
        if not self._include_usage and "usage" in chunk and not chunk.get("choices"):
            return None
        return sse.encode_event(chunk)

    def finish(self, usage: Usage) -> bytes:
        return sse.DONE

    def error(self, error: TollgateError) -> bytes:
        return sse.encode_error(error) + sse.DONE


class ChatService:
    def __init__(self, registry: ProviderRegistry, usage_log: DynamoUsageLog) -> None:
        self._registry = registry
        self._usage_log = usage_log

    async def begin(self, principal: Principal, request: ChatRequest, request_id: str) -> ChatCall:
        meter = Meter(
            self._usage_log,
            principal,
            request_id,
            model=request.model,
            endpoint="chat.completions",
            stream=request.stream,
        )
        call = ChatCall(meter, request)
        try:
            if not principal.may_use(request.model):
                raise ModelNotFoundError(request.model)
            meter.deployment = await self._registry.resolve(request.model)
        except TollgateError as error:
            await call.record_failure(error)
            raise
        return call


@dataclass
class ChatCall:
    meter: Meter
    request: ChatRequest
    usage: Usage | None = None
    delivered_text: list[str] = field(default_factory=list)

    @property
    def deployment(self) -> Deployment:
        if self.meter.deployment is None:
            raise RuntimeError("ChatCall used before ChatService.begin resolved it")
        return self.meter.deployment

    # -- non-streamed ------------------------------------------------------------------------

    async def complete(self) -> ChatChunk:
        deployment = self.deployment
        try:
            result = await deployment.provider.chat(self.request, deployment.upstream_model)
        except TollgateError as error:
            await self.record_failure(error)
            raise
        self.meter.mark_first_byte()
        self.usage = result.usage
        return result.completion

    async def record_success(self) -> None:
        await self._record(status=200)

    # -- streamed ----------------------------------------------------------------------------

    async def open_stream(self, encoder: StreamEncoder | None = None) -> AsyncIterator[bytes]:
        """Waits for the provider's first chunk, then returns the encoded byte stream.

        ``encoder`` turns chunks into the client's wire format: OpenAI's SSE by default; the
        Anthropic-compatible route passes its own.
        """
        deployment = self.deployment
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
        self.meter.mark_first_byte()
        return self._events(first, chunks, encoder or OpenAIStreamEncoder(self.request.wants_usage_chunk))

    async def _events(
        self, first: ChatChunk, chunks: AsyncIterator[ChatChunk], encoder: StreamEncoder
    ) -> AsyncIterator[bytes]:
        status, error_code = 200, None
        try:
            chunk: ChatChunk | None = first
            while chunk is not None:
                self._track(chunk)
                encoded = encoder.chunk(chunk)
                if encoded:
                    yield encoded
                chunk = await anext(chunks, None)
            yield encoder.finish(self._final_usage(200))
        except TollgateError as error:
            status, error_code = error.status, error.code
            logger.warning(
                "stream failed after first byte",
                extra={"request_id": self.meter.request_id, "code": error.code},
            )
            yield encoder.error(error)
        except (asyncio.CancelledError, GeneratorExit):
            status, error_code = CLIENT_CLOSED_REQUEST, "client_disconnected"
            raise
        finally:
            await _close(chunks)
            # Shielded: a client disconnect cancels this generator, but never the usage record.
            await asyncio.shield(self._record(status=status, error_code=error_code))

    def _track(self, chunk: ChatChunk) -> None:
        """Notes a chunk's delivered text, or takes the usage a final usage chunk carries."""
        usage = chunk.get("usage")
        if usage and not chunk.get("choices"):
            source: UsageSource = chunk.pop(USAGE_SOURCE_MARKER, "provider")
            self.usage = Usage.from_openai(usage)
            if source != "provider":
                self.usage = replace(self.usage, source=source)
            return
        for choice in chunk.get("choices") or ():
            content = (choice.get("delta") or {}).get("content")
            if isinstance(content, str):
                self.delivered_text.append(content)

    # -- metering ----------------------------------------------------------------------------

    def _final_usage(self, status: int) -> Usage:
        if self.usage is not None:
            return self.usage
        if status == 200 or self.meter.first_byte is not None:
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
        await self.meter.record(status=status, usage=self._final_usage(status), error_code=error_code)


async def _close(chunks: AsyncIterator[ChatChunk]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:  # closing a broken upstream stream must not mask the original outcome
            logger.debug("upstream stream close failed")
