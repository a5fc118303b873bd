"""One usage record per request, whatever happened: the metering every endpoint shares."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tollgate.observability import logger
from tollgate.store.records import UsageRecord

if TYPE_CHECKING:
    from tollgate.keys import Principal
    from tollgate.providers.base import Usage
    from tollgate.providers.registry import Deployment
    from tollgate.store.usage import DynamoUsageLog


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Meter:
    """The facts of one request that end up in its usage record."""

    usage_log: DynamoUsageLog
    principal: Principal
    request_id: str
    model: str
    endpoint: str
    stream: bool = False
    created_at_ms: int = field(default_factory=now_ms)
    started: float = field(default_factory=time.perf_counter)
    first_byte: float | None = None
    deployment: Deployment | None = None

    def mark_first_byte(self) -> None:
        if self.first_byte is None:
            self.first_byte = time.perf_counter()

    def record_for(self, *, status: int, usage: Usage, error_code: str | None = None) -> UsageRecord:
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
            reasoning_tokens=usage.reasoning_tokens,
            usage_source=usage.source,
            latency_ms=round((finished - self.started) * 1000),
            ttfb_ms=round((self.first_byte - self.started) * 1000) if self.first_byte else None,
            created_at_ms=self.created_at_ms,
        )

    async def record(self, *, status: int, usage: Usage, error_code: str | None = None) -> None:
        record = self.record_for(status=status, usage=usage, error_code=error_code)
        try:
            await asyncio.to_thread(self.usage_log.put, record)
        except Exception:  # a lost analytics record must not fail the caller's request; it is logged
            logger.exception("usage record not written", extra={"request_id": self.request_id})
