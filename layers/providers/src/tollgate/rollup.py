"""The rollup: folds usage records into hour and day buckets (``tollgate.analytics``).

It runs in the scheduled function every 5 minutes (``functions/rollup``, after the hold sweeper)
and on a timer in local mode. Analytics read the buckets only, never the raw records, which
expire after ``usage_retention_days``; buckets are kept.

Idempotent by recomputation
---------------------------
A run never adds to a stored bucket. It **recomputes** every hour bucket it touches from all of
that hour's records, and every day bucket it touches from that day's 24 stored hour buckets, and
**overwrites** it (``DynamoAnalytics.put_bucket``). A bucket is a pure function of its records
(folding is order-free: see ``tollgate.analytics``), so a rerun writes identical content; the put
is conditional, so identical content is not even written, and a bucket built from fewer records
(a concurrent run that read earlier) never replaces one built from more. Running the rollup twice,
or twice at once, changes nothing. There is no per-record "rolled" marker to write or to lose.

Late records: a watermark and a lateness window
-----------------------------------------------
A usage record is keyed by when its request *arrived*, but written when it is *settled*: a stream
settles up to 15 minutes later, an abandoned hold when the sweeper finds it (``hold_ttl_seconds``
plus one period, about 25 minutes). So each run re-reads, from the usage table's ``by_day`` index,
every record from ``watermark - lateness`` (floored to the hour) up to now, where the watermark is
where the previous successful run stopped and the lateness is ``rollup_lateness_minutes`` (60 by
default, more than twice the longest settle delay). A failed run does not move the watermark, so
the next one starts where it would have; after a long outage a run reads at most one day and the
next ones catch up. Holds the sweeper settles in the same invocation may be older than the window
(the sweeper itself was down): their hours are re-folded on their own (``refold_hours``).

Cost: every record is read about ``lateness / period`` times (12 by default) while it is recent,
and once a day-bucket per touched tenant-day is rebuilt from its hour buckets, not from records.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tollgate.analytics import (
    HOUR_MS,
    Bucket,
    BucketKey,
    day_of,
    floor_ms,
    fold,
    hours_of_day,
    merge_folds,
    roll_up_days,
)

if TYPE_CHECKING:
    from tollgate.store.analytics import DynamoAnalytics
    from tollgate.store.records import UsageRecord
    from tollgate.store.usage import DynamoUsageLog

#: The most one scheduled run reads; after an outage, later runs catch up from its end.
MAX_SPAN_MS = 24 * HOUR_MS


@dataclass(frozen=True, slots=True)
class RollupResult:
    since_ms: int
    until_ms: int
    records: int
    hour_buckets: int
    hour_buckets_written: int
    day_buckets: int
    day_buckets_written: int

    def counts(self) -> dict[str, int]:
        return {
            "rollup_records": self.records,
            "hour_buckets": self.hour_buckets,
            "hour_buckets_written": self.hour_buckets_written,
            "day_buckets": self.day_buckets,
            "day_buckets_written": self.day_buckets_written,
        }


class Rollup:
    """Blocking (boto3): runs in the scheduled function, or a thread locally."""

    def __init__(
        self,
        usage: DynamoUsageLog,
        analytics: DynamoAnalytics,
        *,
        lateness_ms: int,
        max_span_ms: int = MAX_SPAN_MS,
    ) -> None:
        if max_span_ms <= lateness_ms:
            raise ValueError("a run must read further than its lateness window, or it never advances")
        self._usage = usage
        self._analytics = analytics
        self._lateness_ms = lateness_ms
        self._max_span_ms = max_span_ms

    def run(
        self,
        now_ms: int | None = None,
        *,
        since_ms: int | None = None,
        refold_hours: Iterable[int] = (),
    ) -> RollupResult:
        """Folds ``[watermark - lateness, now)`` (or ``[since, now)``, a backfill) into buckets.

        ``refold_hours`` (epoch ms inside an hour) are re-folded as well, wherever they are.
        """
        now_ms = now_ms if now_ms is not None else time.time_ns() // 1_000_000
        if since_ms is None:
            watermark = self._analytics.watermark()
            # A watermark ahead of this clock (skew, or a run with a later ``now``) must not stall it.
            mark = now_ms if watermark is None else min(watermark, now_ms)
            start = floor_ms(mark - self._lateness_ms, "hour")
            until = min(now_ms, start + self._max_span_ms)
        else:
            start, until = floor_ms(since_ms, "hour"), now_ms

        records = 0

        def counted(batch: Iterable[UsageRecord]) -> Iterator[UsageRecord]:
            nonlocal records
            for record in batch:
                records += 1
                yield record

        folds = [fold(counted(self._usage.records_between(start, until)), "hour")]
        for hour in sorted({floor_ms(moment, "hour") for moment in refold_hours}):
            if start <= hour < until:
                continue  # inside the window, folded above
            folds.append(fold(counted(self._usage.records_between(hour, hour + HOUR_MS)), "hour"))
        hours = merge_folds(*folds)

        hours_written = sum(
            self._analytics.put_bucket("hour", period, cell, bucket)
            for (period, cell), bucket in sorted(hours.items())
        )
        days = self._days(hours)
        days_written = sum(
            self._analytics.put_bucket("day", period, cell, bucket)
            for (period, cell), bucket in sorted(days.items())
        )
        if since_ms is None:
            self._analytics.advance_watermark(until)
        return RollupResult(
            since_ms=start,
            until_ms=until,
            records=records,
            hour_buckets=len(hours),
            hour_buckets_written=hours_written,
            day_buckets=len(days),
            day_buckets_written=days_written,
        )

    def _days(self, hours: dict[BucketKey, Bucket]) -> dict[BucketKey, Bucket]:
        """The day buckets of every tenant-day ``hours`` touches, from all 24 of its stored hours.

        Read back consistently after the hours were written, so the read holds this run's hours,
        or better ones a concurrent run stored.
        """
        days: dict[BucketKey, Bucket] = {}
        for tenant_id, day in sorted({(cell.tenant_id, day_of(hour)) for hour, cell in hours}):
            first, last = hours_of_day(day)
            stored = {
                (period, cell): bucket
                for period, cell, bucket in self._analytics.tenant_buckets(
                    tenant_id, "hour", first, last, consistent=True
                )
            }
            days.update(roll_up_days(stored))
        return days
