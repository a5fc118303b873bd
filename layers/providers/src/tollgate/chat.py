"""Chat completions: resolve, admit, call the provider, settle.

``ChatService.begin`` does everything that can fail with a clean HTTP error before a response
starts: access, model resolution and admission (the worst case is held, or the request is
refused with 402, 429 or 503 before any upstream call). A ``ChatCall`` then runs it either way,
through the ``Router`` (retries, fallback to the model's next deployment, circuit breaking):

* ``complete()`` returns the finished ``chat.completion`` body, already settled;
* ``open_stream()`` waits for the provider's first chunk (so an upstream failure is still an
  HTTP error, and the hold is voided), then returns the encoded byte stream. Retries and fallback
  happen only while that first chunk is awaited: never once the client may have seen output.
  The request is settled when the provider's usage arrives, just before the usage chunk goes
  out; a failure after the first byte becomes an error event in the client's wire format and is
  settled on what was delivered.

Admission happens once, before the first attempt, and settlement once, after the last; the usage
record names the deployment that actually served (or, on failure, the last one tried).

If the client goes away mid-stream, a background task keeps reading the provider's stream for
up to ``stream_drain_seconds`` to get its real usage, and otherwise settles an estimate of what
was delivered. Once the provider accepted a request, the bill is never zero. The hand-off happens
when the event stream is closed at a ``yield`` (``GeneratorExit``), which is how
``tollgate.api.streaming.EventStream`` reports a departed client: the provider's stream is then
intact. A cancellation instead lands inside the provider's stream and ends it, so the drain can
only settle the estimate.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from tollgate import sse
from tollgate.billing import Bill, Demand, Replay
from tollgate.errors import ModelNotFoundError, TollgateError, UpstreamError
from tollgate.metering import Meter
from tollgate.observability import logger
from tollgate.providers.base import USAGE_SOURCE_MARKER, Usage, UsageSource
from tollgate.routing import Deadline
from tollgate.tokens import estimate_prompt_tokens, estimate_tokens, prompt_token_bound

if TYPE_CHECKING:
    from tollgate.billing import Billing
    from tollgate.keys import Principal
    from tollgate.providers.base import ChatResult
    from tollgate.providers.registry import Deployment, Plan, ProviderRegistry
    from tollgate.routing import Router
    from tollgate.schemas.openai import ChatChunk, ChatRequest
    from tollgate.settings import Settings

#: HTTP status recorded when the client went away before the response finished (nginx's convention).
CLIENT_CLOSED_REQUEST = 499
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
#: Drain tasks still running after their client left; kept so they are not garbage-collected.
_DRAINS: set[asyncio.Task[None]] = set()


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


def bill_fields(bill: Bill, currency: str) -> dict[str, Any]:
    """What Tollgate adds to a response's ``usage``: the cost, and the balance in credit mode."""
    fields: dict[str, Any] = {"cost": str(bill.charged), "currency": currency}
    if bill.balance is not None:
        fields["balance"] = str(bill.balance)
    if not bill.priced:
        fields["priced"] = False
    return fields


def bill_headers(bill: Bill, currency: str) -> dict[str, str]:
    headers = {"x-tollgate-cost": str(bill.charged), "x-tollgate-currency": currency}
    if bill.balance is not None:
        headers["x-tollgate-balance"] = str(bill.balance)
    return headers


class ChatService:
    def __init__(
        self, registry: ProviderRegistry, billing: Billing, settings: Settings, router: Router
    ) -> None:
        self._registry = registry
        self._billing = billing
        self._settings = settings
        self._router = router

    async def begin(
        self,
        principal: Principal,
        request: ChatRequest,
        request_id: str,
        *,
        idempotency: tuple[str, str] | None = None,
        endpoint: str = "chat.completions",
        deadline: Deadline | None = None,
    ) -> ChatCall:
        """Resolves and admits a request (``deadline``: by default ``request_timeout_seconds``)."""
        meter = Meter(
            self._billing,
            principal,
            request_id,
            model=request.model,
            endpoint=endpoint,
            stream=request.stream,
        )
        if deadline is None:
            deadline = Deadline(self._settings.request_timeout_seconds)
        call = ChatCall(meter, request, self._settings, self._router, deadline)
        try:
            if not principal.may_use(request.model):
                raise ModelNotFoundError(request.model)
            call.plan = await self._registry.resolve(request.model)
            meter.deployment = call.plan.primary  # what the hold records; the router updates it
            demand = Demand(
                prompt_tokens=prompt_token_bound(request),
                output_tokens=request.output_limit or self._settings.default_max_output_tokens,
            )
            call.replay = await meter.admit(demand, idempotency)
        except TollgateError as error:
            await meter.void(status=error.status, error_code=error.code)
            raise
        return call


@dataclass
class ChatCall:
    meter: Meter
    request: ChatRequest
    settings: Settings
    router: Router
    deadline: Deadline
    plan: Plan | None = None
    replay: Replay | None = None
    usage: Usage | None = None
    bill: Bill | None = None
    delivered_text: list[str] = field(default_factory=list)

    @property
    def deployment(self) -> Deployment:
        """The deployment serving the call (before it runs: the plan's first)."""
        if self.meter.deployment is None:
            raise RuntimeError("ChatCall used before ChatService.begin resolved it")
        return self.meter.deployment

    def _plan(self) -> Plan:
        if self.plan is None:
            raise RuntimeError("ChatCall used before ChatService.begin resolved it")
        return self.plan

    @property
    def currency(self) -> str:
        return self.settings.currency

    # -- non-streamed ------------------------------------------------------------------------

    async def complete(self) -> bytes:
        """Runs the request; returns the settled ``chat.completion`` JSON body."""
        try:
            result, _ = await self.router.run(
                self._plan(), self._chat, deadline=self.deadline, request_id=self.meter.request_id
            )
        except TollgateError as error:
            await self.meter.void(status=error.status, error_code=error.code)
            raise
        self.meter.mark_first_byte()
        self.usage = result.usage
        self.bill = self.meter.quote(result.usage)
        completion = result.completion
        completion["usage"] = {**(completion.get("usage") or result.usage.to_openai()), **self._bill_fields()}
        body = _JSON(completion)
        await self.meter.settle(
            status=200, usage=result.usage, bill=self.bill, replay=Replay("application/json", body)
        )
        return body.encode()

    async def _chat(self, deployment: Deployment) -> ChatResult:
        self.meter.deployment = deployment
        return await deployment.provider.chat(self.request, deployment.upstream_model)

    def _bill_fields(self) -> dict[str, Any]:
        return bill_fields(self.bill, self.currency) if self.bill else {}

    def headers(self) -> dict[str, str]:
        return bill_headers(self.bill, self.currency) if self.bill else {}

    # -- streamed ----------------------------------------------------------------------------

    async def open_stream(self, encoder: StreamEncoder | None = None) -> AsyncIterator[bytes]:
        """Waits for the provider's first chunk, then returns the encoded byte stream."""
        try:
            (first, chunks), _ = await self.router.run(
                self._plan(), self._first_chunk, deadline=self.deadline, request_id=self.meter.request_id
            )
        except TollgateError as error:
            await self.meter.void(status=error.status, error_code=error.code)
            raise
        self.meter.mark_first_byte()
        return self._events(first, chunks, encoder or OpenAIStreamEncoder(self.request.wants_usage_chunk))

    async def _first_chunk(self, deployment: Deployment) -> tuple[ChatChunk, AsyncIterator[ChatChunk]]:
        """One attempt at a stream: opens it on ``deployment`` and reads its first chunk. Nothing
        has reached the client yet, so the router may still retry or fall back."""
        self.meter.deployment = deployment
        chunks = deployment.provider.stream(self.request, deployment.upstream_model)
        try:
            first = await anext(chunks)
        except StopAsyncIteration:
            raise UpstreamError(
                f"The provider '{deployment.provider_name}' ended the stream before sending anything."
            ) from None
        except BaseException:  # failed, or cut off at the deadline: let go of the connection
            await _close(chunks)
            raise
        return first, chunks

    async def _events(
        self, first: ChatChunk, chunks: AsyncIterator[ChatChunk], encoder: StreamEncoder
    ) -> AsyncIterator[bytes]:
        sent: list[bytes] | None = [] if self._keeps_replay() else None
        handed_off = False
        try:
            chunk: ChatChunk | None = first
            while chunk is not None:
                if self._is_usage(chunk):
                    closing = await self._settle_stream(chunk, encoder, sent)
                    yield closing
                    await _drain_rest(chunks)
                    return
                self._track(chunk)
                encoded = encoder.chunk(chunk)
                if encoded:
                    if sent is not None:
                        sent.append(encoded)
                    yield encoded
                chunk = await anext(chunks, None)
            # The provider ended without usage: settle on what was delivered.
            yield await self._settle_stream(None, encoder, sent)
        except TollgateError as error:
            context = {"request_id": self.meter.request_id, "code": error.code}
            logger.warning("stream failed after first byte", extra=context)
            await self.meter.settle(
                status=error.status,
                usage=self._delivered(),
                bill=self.meter.quote(self._delivered()),
                error_code=error.code,
            )
            yield encoder.error(error)
        except (asyncio.CancelledError, GeneratorExit):
            handed_off = True
            task = asyncio.get_running_loop().create_task(self._drain_after_disconnect(chunks))
            _DRAINS.add(task)
            task.add_done_callback(_DRAINS.discard)
            raise
        finally:
            if not handed_off:
                await _close(chunks)

    async def _settle_stream(
        self, usage_chunk: ChatChunk | None, encoder: StreamEncoder, sent: list[bytes] | None
    ) -> bytes:
        """Settles on the provider's usage (or what was delivered) and returns the closing bytes."""
        if usage_chunk is not None:
            self._take_usage(usage_chunk)
        usage = self.usage or self._delivered()
        self.bill = self.meter.quote(usage)
        closing = b""
        if usage_chunk is not None:
            usage_chunk["usage"] = {**usage_chunk["usage"], **self._bill_fields()}
            closing = encoder.chunk(usage_chunk) or b""
        closing += encoder.finish(usage)
        replay = None
        if sent is not None:
            replay = Replay("text/event-stream", (b"".join(sent) + closing).decode())
        await self.meter.settle(status=200, usage=usage, bill=self.bill, replay=replay)
        return closing

    async def _drain_after_disconnect(self, chunks: AsyncIterator[ChatChunk]) -> None:
        """The client left: read on (within the cap) for the provider's usage, then settle."""
        try:
            async with asyncio.timeout(self.settings.stream_drain_seconds):
                async for chunk in chunks:
                    if self._is_usage(chunk):
                        self._take_usage(chunk)
                        break
                    self._track(chunk)
        except Exception:  # a stall, an upstream error or the cap: the request is settled below all the same
            logger.info("drain after disconnect ended early", extra={"request_id": self.meter.request_id})
        finally:
            await _close(chunks)
        usage = self.usage or self._delivered()
        await self.meter.settle(
            status=CLIENT_CLOSED_REQUEST,
            usage=usage,
            bill=self.meter.quote(usage),
            error_code="client_disconnected",
        )

    # -- usage tracking ------------------------------------------------------------------------

    @staticmethod
    def _is_usage(chunk: ChatChunk) -> bool:
        return bool(chunk.get("usage")) and not chunk.get("choices")

    def _take_usage(self, chunk: ChatChunk) -> None:
        source: UsageSource = chunk.pop(USAGE_SOURCE_MARKER, "provider")
        self.usage = Usage.from_openai(chunk["usage"])
        if source != "provider":
            self.usage = replace(self.usage, source=source)

    def _track(self, chunk: ChatChunk) -> None:
        for choice in chunk.get("choices") or ():
            content = (choice.get("delta") or {}).get("content")
            if isinstance(content, str):
                self.delivered_text.append(content)

    def _delivered(self) -> Usage:
        """An estimate of a cut-off stream: the prompt, and the text delivered so far."""
        return Usage(
            prompt_tokens=estimate_prompt_tokens(self.request),
            completion_tokens=max(estimate_tokens("".join(self.delivered_text)), 1),
            source="partial",
        )

    def _keeps_replay(self) -> bool:
        admission = self.meter.admission
        return admission is not None and admission.hold is not None and admission.hold.idempotency is not None


async def _drain_rest(chunks: AsyncIterator[ChatChunk]) -> None:
    """Anything after the usage chunk (nothing, normally) is read and dropped."""
    async for _ in chunks:
        pass


async def _close(chunks: AsyncIterator[ChatChunk]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:  # closing a broken upstream stream must not mask the original outcome
            logger.debug("upstream stream close failed")
