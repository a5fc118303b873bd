"""The scheduled function's entry point: a scheduled event sweeps and rolls up; a hand-made one backfills."""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass
from types import ModuleType

import pytest

from infra.paths import FUNCTIONS_DIR
from tests.support.records import usage_record
from tollgate.store.records import UsageRecord

SCHEDULED_EVENT = {"version": "0", "detail-type": "Scheduled Event", "source": "aws.events", "detail": {}}


@dataclass(frozen=True)
class LambdaContext:
    function_name: str = "Tollgate-Rollup"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:Tollgate-Rollup"
    aws_request_id: str = "b9f1c7e2-0000-4000-8000-000000000000"


@pytest.fixture
def handler(settings) -> ModuleType:  # type: ignore[no-untyped-def]
    """functions/rollup/handler.py, imported the way Lambda does (after the environment is set)."""
    spec = importlib.util.spec_from_file_location("rollup_handler", FUNCTIONS_DIR / "rollup" / "handler.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def record(request_id: str, at_ms: int) -> UsageRecord:
    return usage_record(request_id, at_ms, latency_ms=20)


def test_a_scheduled_event_sweeps_then_rolls_up(handler: ModuleType) -> None:
    now = time.time_ns() // 1_000_000
    handler.services.usage_log.put(record("req-recent", now - 60_000))

    counts = handler.handler(SCHEDULED_EVENT, LambdaContext())

    assert {"holds_settled", "starter_expired"} <= set(counts)
    assert counts["rollup_records"] == 1
    assert counts["hour_buckets_written"] == counts["day_buckets_written"] == 1


def test_a_backfill_event_refolds_older_days(handler: ModuleType) -> None:
    now = time.time_ns() // 1_000_000
    handler.services.usage_log.put(record("req-old", now - 3 * 86_400_000))

    scheduled = handler.handler(SCHEDULED_EVENT, LambdaContext())
    backfill = handler.handler({"backfill_days": 5}, LambdaContext())

    assert scheduled["rollup_records"] == 0  # three days back: beyond the lateness window
    assert backfill["rollup_records"] == 1
    assert "holds_settled" not in backfill  # a backfill only rolls up
