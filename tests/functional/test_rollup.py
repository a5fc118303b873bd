"""The rollup on moto: idempotent, safe to run twice at once, and it picks up late records."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import pytest

from tests.support.records import usage_record
from tollgate.analytics import Bucket, fold, period_of
from tollgate.scheduled import run_scheduled
from tollgate.store.records import UsageRecord

HOUR = 3_600_000
DAY = 24 * HOUR
BASE = 1_714_521_600_000  # 2024-05-01T00:00:00Z
NOW = BASE + DAY + 10 * HOUR + 30 * 60_000  # 2024-05-02T10:30Z


usage = partial(
    usage_record,
    prompt_tokens=10,
    completion_tokens=5,
    latency_ms=120,
    ttfb_ms=40,
    cost_micros=15,
    charged_micros=15,
)


def a_mix(count: int, start_ms: int, span_ms: int) -> list[UsageRecord]:
    """``count`` records spread over ``span_ms``: 3 tenants, 2 keys each, 3 models, some failures."""
    records = []
    for index in range(count):
        tenant = ("acme", "globex", "initech")[index % 3]
        records.append(
            usage(
                f"req-{start_ms}-{index}",
                start_ms + index * span_ms // count,
                tenant_id=tenant,
                key_id=f"{tenant}-k{index % 2}",
                model=("fake/echo", "loop/alpha", "loop/beta")[index % 3 - 1],
                provider=None if index % 11 == 0 else ("fake", "loop")[index % 2],
                status=(200, 200, 200, 502, 499)[index % 5],
                latency_ms=(index * 37) % 5000,
                charged_micros=index,
            )
        )
    return records


@pytest.fixture
def put(services):  # type: ignore[no-untyped-def]
    def put_all(records: list[UsageRecord]) -> None:
        for record in records:
            services.usage_log.put(record)

    return put_all


def buckets(services) -> dict[tuple[str, str], dict[str, Any]]:  # type: ignore[no-untyped-def]
    """Every stored bucket, as stored (a test may scan; the code never does)."""
    client, table = services.dynamodb, services.settings.analytics_table
    items: dict[tuple[str, str], dict[str, Any]] = {}
    arguments: dict[str, Any] = {"TableName": table}
    while True:
        page = client.scan(**arguments)
        for item in page["Items"]:
            if item["pk"]["S"] != "ROLLUP":
                items[(item["pk"]["S"], item["sk"]["S"])] = item
        if "LastEvaluatedKey" not in page:
            return items
        arguments["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def stored(services, granularity: str, tenant: str = "acme") -> dict[str, Bucket]:  # type: ignore[no-untyped-def]
    """``{period: bucket}`` of one tenant, all cells merged."""
    found: dict[str, Bucket] = {}
    for period, _, bucket in services.analytics.tenant_buckets(
        tenant, granularity, "2024-04-30", "2024-05-04T23"
    ):
        found[period] = found.get(period, Bucket()).merge(bucket)
    return found


def assert_stored_as_folded(services, records: list[UsageRecord]) -> None:  # type: ignore[no-untyped-def]
    """Every stored bucket is exactly the fold of the records, hour by hour and day by day."""
    for granularity in ("hour", "day"):
        expected = fold(records, granularity)  # type: ignore[arg-type]
        found = {
            (period, cell): bucket
            for tenant in {cell.tenant_id for _, cell in expected}
            for period, cell, bucket in services.analytics.tenant_buckets(
                tenant, granularity, "2024-04-30", "2024-05-09"
            )
        }
        assert found == expected, granularity


def test_a_backfill_stores_exactly_the_folded_records(services, put):  # type: ignore[no-untyped-def]
    records = a_mix(120, BASE, DAY + 10 * HOUR)
    put(records)

    result = services.rollup.run(NOW, since_ms=BASE)

    assert result.records == 120
    assert result.hour_buckets == result.hour_buckets_written == len(fold(records, "hour"))
    assert result.day_buckets == result.day_buckets_written == len(fold(records, "day"))
    assert_stored_as_folded(services, records)


def test_a_rerun_changes_no_bucket(services, put):  # type: ignore[no-untyped-def]
    put(a_mix(90, BASE, DAY + 10 * HOUR))
    services.rollup.run(NOW, since_ms=BASE)
    before = buckets(services)

    again = services.rollup.run(NOW, since_ms=BASE)
    scheduled = services.rollup.run(NOW)

    assert (again.hour_buckets_written, again.day_buckets_written) == (0, 0)
    assert (scheduled.hour_buckets_written, scheduled.day_buckets_written) == (0, 0)
    assert scheduled.hour_buckets > 0  # it did re-fold the recent hours: they were already right
    assert buckets(services) == before


def test_two_runs_at_once_write_the_same_buckets_as_one(services, put):  # type: ignore[no-untyped-def]
    records = a_mix(90, BASE, DAY + 10 * HOUR)
    put(records)
    start = threading.Barrier(2)

    def run() -> None:
        start.wait()
        services.rollup.run(NOW, since_ms=BASE)

    with ThreadPoolExecutor(2) as pool:
        for future in [pool.submit(run), pool.submit(run)]:
            future.result()
    concurrent = buckets(services)
    third = services.rollup.run(NOW, since_ms=BASE)

    assert (third.hour_buckets_written, third.day_buckets_written) == (0, 0)
    assert buckets(services) == concurrent
    assert_stored_as_folded(services, records)


def test_a_slower_run_at_once_never_undoes_a_faster_one(services, put):  # type: ignore[no-untyped-def]
    """The worst interleaving of two runs at once, made deterministic: run A reads the records,
    a late record lands, run B reads it and stores its buckets, then A stores what it folded from
    fewer records. B's buckets stand: a bucket is never replaced by one built from fewer records."""
    from tollgate.rollup import Rollup

    early = a_mix(60, BASE, DAY)
    # In a cell and hour that run A folds too: A's bucket of it is B's, less this record.
    late = early[0].model_copy(update={"request_id": "req-late", "created_at_ms": early[0].created_at_ms + 1})
    put(early)
    read_by_a = list(services.usage_log.records_between(BASE, NOW))

    class Snapshot:
        """The usage table as run A saw it, before the late record landed."""

        def records_between(self, since_ms: int, until_ms: int, **_: Any) -> list[UsageRecord]:
            return [r for r in read_by_a if since_ms <= r.created_at_ms < until_ms]

    run_a = Rollup(Snapshot(), services.analytics, lateness_ms=HOUR)  # type: ignore[arg-type]
    put([late])
    services.rollup.run(NOW, since_ms=BASE)  # run B: it sees the late record
    after_b = buckets(services)

    slower = run_a.run(NOW, since_ms=BASE)  # run A finishes last, with the older view

    assert slower.records == len(early)
    assert buckets(services) == after_b
    assert_stored_as_folded(services, [*early, late])
    hour = period_of(late.created_at_ms, "hour")
    assert stored(services, "hour")[hour].requests == 1 + sum(
        1 for r in early if r.tenant_id == "acme" and period_of(r.created_at_ms, "hour") == hour
    )


def test_late_records_are_picked_up_by_the_next_run(services, put):  # type: ignore[no-untyped-def]
    put([usage("req-early", NOW - 10 * 60_000)])
    services.rollup.run(NOW)
    # A stream that arrived 25 minutes ago settles now: its record lands after the first run.
    put([usage("req-late", NOW - 25 * 60_000, stream=True)])

    services.rollup.run(NOW + 5 * 60_000)

    assert stored(services, "hour")["2024-05-02T10"].requests == 2
    assert stored(services, "day")["2024-05-02"].requests == 2
    assert stored(services, "day")["2024-05-02"].streamed == 1


def test_a_day_is_rebuilt_from_all_its_hours_not_just_the_window(services, put):  # type: ignore[no-untyped-def]
    put([usage("req-night", BASE + DAY + 30 * 60_000)])  # 00:30, long before the window
    services.rollup.run(BASE + DAY + HOUR, since_ms=BASE + DAY)
    put([usage("req-morning", NOW - 60_000)])

    result = services.rollup.run(NOW)

    assert result.since_ms >= BASE + DAY + HOUR  # the window did not reach back to 00:30
    assert stored(services, "day")["2024-05-02"].requests == 2


def test_a_watermark_ahead_of_the_clock_does_not_stall_the_rollup(services, put):  # type: ignore[no-untyped-def]
    services.rollup.run(NOW + 10 * DAY)  # a run whose clock was far ahead
    put([usage("req-now", NOW - 60_000)])

    services.rollup.run(NOW)

    assert stored(services, "hour")["2024-05-02T10"].requests == 1


def test_a_failed_run_leaves_the_watermark_for_the_next_one(services, put, monkeypatch):  # type: ignore[no-untyped-def]
    services.rollup.run(NOW)
    mark = services.analytics.watermark()
    put([usage("req-1", NOW + HOUR)])

    def fail(*_: Any, **__: Any) -> bool:
        raise RuntimeError("DynamoDB is throttling")

    monkeypatch.setattr(services.analytics, "put_bucket", fail)
    with pytest.raises(RuntimeError):
        services.rollup.run(NOW + 2 * HOUR)
    monkeypatch.undo()

    assert services.analytics.watermark() == mark
    services.rollup.run(NOW + 3 * HOUR)  # 3 h after the last success: more than the lateness window
    assert stored(services, "hour")["2024-05-02T11"].requests == 1


def test_after_an_outage_runs_catch_up_a_day_at_a_time(services, put):  # type: ignore[no-untyped-def]
    services.rollup.run(BASE)
    records = a_mix(30, BASE + HOUR, 3 * DAY)
    put(records)

    first = services.rollup.run(BASE + 4 * DAY)
    second = services.rollup.run(BASE + 4 * DAY)

    assert first.until_ms - first.since_ms <= DAY
    assert second.since_ms < first.until_ms  # overlapping by the lateness window
    for _ in range(5):
        services.rollup.run(BASE + 4 * DAY)
    assert services.analytics.watermark() == BASE + 4 * DAY
    assert_stored_as_folded(services, records)


def test_buckets_outlive_raw_records(services, put):  # type: ignore[no-untyped-def]
    put(a_mix(60, BASE, DAY))
    services.rollup.run(NOW, since_ms=BASE)
    before = buckets(services)
    client, table = services.dynamodb, services.settings.usage_table
    for item in client.scan(TableName=table)["Items"]:  # what the TTL does after the retention
        client.delete_item(TableName=table, Key={"pk": item["pk"], "sk": item["sk"]})

    rerun = services.rollup.run(NOW, since_ms=BASE)

    assert rerun.records == 0
    assert buckets(services) == before  # a bucket built from more records is never replaced


@pytest.fixture
def short_retention(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOLLGATE_USAGE_RETENTION_DAYS", "7")


def test_raw_records_expire_after_the_configured_retention_and_buckets_never_do(
    short_retention, services, put
):  # type: ignore[no-untyped-def]
    """Raw usage records carry a TTL of ``usage_retention_days`` (here 7) from their arrival; the
    usage table's TTL attribute is that one, the analytics table has none, and no bucket (nor the
    watermark) carries an expiry."""
    from tollgate.store.schema import ANALYTICS, USAGE

    records = a_mix(12, BASE, DAY)
    put(records)
    services.rollup.run(NOW)
    services.rollup.run(NOW, since_ms=BASE)
    client = services.dynamodb

    raw = client.scan(TableName=services.settings.usage_table)["Items"]
    rolled = client.scan(TableName=services.settings.analytics_table)["Items"]

    assert services.settings.usage_retention_days == 7
    assert USAGE.ttl_attribute == "expires_at"
    assert ANALYTICS.ttl_attribute is None
    assert len(raw) == len(records)
    for item in raw:
        assert int(item["expires_at"]["N"]) == int(item["created_at_ms"]["N"]) // 1000 + 7 * 86_400
    assert len(rolled) > len(fold(records, "day"))  # hours, days and the watermark
    assert not any(USAGE.ttl_attribute in item for item in rolled)


def test_a_settled_request_gets_the_same_retention(short_retention, credit_mode, services):  # type: ignore[no-untyped-def]
    """Records written inside the ledger's settlement transaction expire the same way."""
    from tollgate.admin.schemas import PriceIn, TenantIn
    from tollgate.keys import Principal
    from tollgate.schemas.openai import ChatRequest

    services.admin.create_tenant(TenantIn(id="acme", name="Acme"))
    services.admin.put_price("fake/echo", PriceIn.model_validate({"cost": {"input": "1", "output": "1"}}))
    request = ChatRequest.model_validate(
        {"model": "fake/echo", "messages": [{"role": "user", "content": "hi"}]}
    )

    async def one() -> None:
        call = await services.chat.begin(Principal("acme", "k1", None), request, "req-settled")
        await call.complete()

    asyncio.run(one())

    (item,) = services.dynamodb.scan(TableName=services.settings.usage_table)["Items"]
    assert int(item["charged_micros"]["N"]) > 0  # it went through the ledger
    assert int(item["expires_at"]["N"]) == int(item["created_at_ms"]["N"]) // 1000 + 7 * 86_400


@pytest.fixture
def credit_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOLLGATE_BILLING_MODE", "credits")
    monkeypatch.setenv("TOLLGATE_STARTER_CREDITS", "10")


def test_the_scheduled_run_refolds_the_hour_of_a_hold_it_swept(credit_mode, services, monkeypatch):  # type: ignore[no-untyped-def]
    """A hold the sweeper settles can be older than any window (the sweeper was down): its usage
    record lands in its own, old hour, which the same invocation re-folds."""
    from tollgate.admin.schemas import PriceIn, TenantIn
    from tollgate.keys import Principal
    from tollgate.providers.fake import FakeProvider
    from tollgate.schemas.openai import ChatRequest

    services.admin.create_tenant(TenantIn(id="acme", name="Acme"))
    services.admin.put_price("fake/echo", PriceIn.model_validate({"cost": {"input": "1", "output": "1"}}))

    class Crash(BaseException):
        """The process died mid-request, leaving its hold."""

    async def crash(*_: Any, **__: Any) -> Any:
        raise Crash

    monkeypatch.setattr(FakeProvider, "chat", crash)
    request = ChatRequest.model_validate(
        {"model": "fake/echo", "messages": [{"role": "user", "content": "hi"}]}
    )
    principal = Principal(tenant_id="acme", key_id="k1", allowed_models=None)

    async def abandoned() -> None:
        call = await services.chat.begin(principal, request, "req-dead")
        await call.complete()

    with pytest.raises(Crash):
        asyncio.run(abandoned())
    far_future = 2**41  # the sweeper runs long after: the window is nowhere near the hold's hour

    counts = run_scheduled(services, now_ms=far_future)

    assert counts["holds_settled"] == 1
    assert counts["rollup_records"] == 1
    ((_, _, day),) = services.analytics.tenant_buckets("acme", "day", "2000-01-01", "2100-01-01")
    assert day.requests == day.server_errors == 1
    assert day.charged_micros > 0  # settled at its worst case, never at zero
