"""Per-request metering: admission before the provider call, one settlement after it.

A ``Meter`` carries the facts of one request into ``Billing``: it admits the request (holding
its worst case), prices what actually happened, and settles exactly once, writing the usage
record in the same transaction as the charge.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tollgate import telemetry
from tollgate.billing import Admission, Bill, Demand, Replay, replace_record
from tollgate.money import Money
from tollgate.providers.base import Usage
from tollgate.store.records import UsageRecord

if TYPE_CHECKING:
    from tollgate.billing import Billing
    from tollgate.keys import Principal
    from tollgate.providers.registry import Deployment

NO_USAGE = Usage(prompt_tokens=0, completion_tokens=0, source="estimated")
NOTHING = Bill(cost=Money(0), charged=Money(0), priced=True)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Meter:
    billing: Billing
    principal: Principal
    request_id: str
    model: str
    endpoint: str
    stream: bool = False
    created_at_ms: int = field(default_factory=now_ms)
    started: float = field(default_factory=time.perf_counter)
    first_byte: float | None = None
    deployment: Deployment | None = None
    admission: Admission | None = None

    def mark_first_byte(self) -> None:
        if self.first_byte is None:
            self.first_byte = time.perf_counter()

    async def admit(self, demand: Demand, idempotency: tuple[str, str] | None = None) -> Replay | None:
        """Holds the worst case (or raises 402/429/503/400). Returns a stored response to replay."""
        outcome = await self.billing.admit(
            self.principal,
            request_id=self.request_id,
            model=self.model,
            endpoint=self.endpoint,
            stream=self.stream,
            demand=demand,
            created_at_ms=self.created_at_ms,
            provider=self.deployment.provider_name if self.deployment else None,
            upstream_model=self.deployment.upstream_model if self.deployment else None,
            idempotency=idempotency,
        )
        if isinstance(outcome, Replay):
            return outcome
        self.admission = outcome
        return None

    def quote(self, usage: Usage, *, images: int = 0, embedding: bool = False) -> Bill:
        """What ``usage`` costs (pure)."""
        if self.admission is None:
            return NOTHING
        return self.billing.bill(self.admission, usage, images=images, embedding=embedding)

    async def settle(
        self,
        *,
        status: int,
        usage: Usage,
        bill: Bill,
        error_code: str | None = None,
        images: int = 0,
        replay: Replay | None = None,
    ) -> None:
        """Charges ``bill`` and writes the usage record, once (later calls do nothing); then emits
        the request's metrics (``tollgate.telemetry``), also once."""
        admission = self.admission or Admission(prices=None)
        self.admission = admission
        first = not admission.settled
        record = self.record_for(status=status, usage=usage, error_code=error_code, images=images)
        await self.billing.settle(admission, record, bill, replay=replay)
        if first:
            telemetry.record_request(replace_record(record, bill))

    async def void(self, *, status: int, error_code: str | None) -> None:
        """Ends a request that produced nothing: releases its hold, charges nothing."""
        await self.settle(status=status, usage=NO_USAGE, bill=NOTHING, error_code=error_code)

    def record_for(
        self, *, status: int, usage: Usage, error_code: str | None = None, images: int = 0
    ) -> UsageRecord:
        finished = time.perf_counter()
        return UsageRecord(
            request_id=self.request_id,
            tenant_id=self.principal.tenant_id,
            key_id=self.principal.key_id,
            model=self.model,
            provider=self.deployment.provider_name if self.deployment else None,
            upstream_model=self.deployment.upstream_model if self.deployment else None,
            endpoint=self.endpoint,
            stream=self.stream,
            status=status,
            error_code=error_code,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            images=images,
            usage_source=usage.source,
            latency_ms=round((finished - self.started) * 1000),
            ttfb_ms=round((self.first_byte - self.started) * 1000) if self.first_byte else None,
            created_at_ms=self.created_at_ms,
        )
