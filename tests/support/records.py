"""Ledger records for tests (usage records, holds): one builder each, each test file naming only
what its scenario changes."""

from __future__ import annotations

from typing import Any

from tollgate.store.ledger import AccountRef, Hold
from tollgate.store.records import UsageRecord


def usage_record(request_id: str, at_ms: int, **changes: Any) -> UsageRecord:
    """A settled, successful, non-streamed chat request of tenant ``acme``'s key ``k1`` on
    ``fake/echo``, arrived at ``at_ms``; ``changes`` override any field."""
    values: dict[str, Any] = {
        "request_id": request_id,
        "tenant_id": "acme",
        "key_id": "k1",
        "model": "fake/echo",
        "provider": "fake",
        "endpoint": "chat.completions",
        "stream": False,
        "status": 200,
        "usage_source": "provider",
        "latency_ms": 200,
        "created_at_ms": at_ms,
    }
    return UsageRecord.model_validate(values | changes)


def credit_hold(request_id: str, amount_micros: int, **changes: Any) -> Hold:
    """A hold of ``amount_micros`` on tenant ``acme``'s credits for key ``k1``'s request;
    ``changes`` override any field."""
    values: dict[str, Any] = {
        "request_id": request_id,
        "tenant_id": "acme",
        "key_id": "k1",
        "model": "m",
        "amount_micros": amount_micros,
        "created_at_ms": 1_000,
        "expires_at_ms": 2_000,
        "accounts": (AccountRef.credits("acme"),),
    }
    return Hold(**(values | changes))
