"""Usage records for tests: one builder, each test file naming only what its scenario changes."""

from __future__ import annotations

from typing import Any

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
