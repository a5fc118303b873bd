"""Folding usage records into buckets: order-free, partition-free, and percentiles within 1/64.

These properties are what make the rollup idempotent (``tollgate.rollup``): a bucket recomputed
from the same records, in whatever order or split, is the same bucket.
"""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.records import usage_record
from tollgate.analytics import (
    EMPTY,
    RELATIVE_ERROR,
    Bucket,
    Cell,
    Histogram,
    bin_bounds,
    bin_of,
    bin_value,
    fold,
    group,
    merge_all,
    merge_folds,
    period_of,
    period_start_ms,
    periods_between,
    roll_up_days,
)
from tollgate.store.records import UsageRecord

DAY_MS = 86_400_000
START_MS = 1_714_521_600_000  # 2024-05-01T00:00:00Z
timings = st.integers(min_value=0, max_value=15 * 60 * 1000)


@st.composite
def records(draw: st.DrawFn) -> UsageRecord:
    status = draw(st.sampled_from([200, 200, 200, 400, 402, 404, 429, 499, 500, 502, 503, 504]))
    return UsageRecord(
        request_id=f"req-{draw(st.uuids()).hex}",
        tenant_id=draw(st.sampled_from(["acme", "globex", "initech"])),
        key_id=draw(st.sampled_from(["k1", "k2", "k3"])),
        model=draw(st.sampled_from(["fake/echo", "loop/alpha", "weird#model%x"])),
        provider=draw(st.sampled_from(["fake", "loop", None])),
        endpoint="chat.completions",
        stream=draw(st.booleans()),
        status=status,
        prompt_tokens=draw(st.integers(0, 100_000)),
        completion_tokens=draw(st.integers(0, 100_000)),
        cached_tokens=draw(st.integers(0, 1000)),
        cache_write_tokens=draw(st.integers(0, 1000)),
        reasoning_tokens=draw(st.integers(0, 1000)),
        images=draw(st.integers(0, 3)),
        usage_source=draw(st.sampled_from(["provider", "estimated", "partial"])),
        latency_ms=draw(timings),
        ttfb_ms=draw(st.none() | timings),
        created_at_ms=START_MS + draw(st.integers(0, 3 * DAY_MS)),
        cost_micros=draw(st.integers(0, 10**9)),
        charged_micros=draw(st.integers(0, 10**9)),
        priced=draw(st.booleans()),
    )


# -- histograms -----------------------------------------------------------------------------------


@given(st.integers(min_value=0, max_value=2**40))
def test_every_value_lies_in_its_bin_and_the_bin_reports_it_within_1_64(value: int) -> None:
    low, high = bin_bounds(bin_of(value))

    assert low <= value <= high
    assert abs(bin_value(bin_of(value)) - value) <= value * RELATIVE_ERROR
    if value < 64:
        assert bin_value(bin_of(value)) == value  # exact below 64 ms


def test_bins_are_contiguous_and_ordered() -> None:
    previous_high = -1
    for index in range(bin_of(2**30) + 1):
        low, high = bin_bounds(index)
        assert low == previous_high + 1
        assert bin_of(low) == bin_of(high) == index
        previous_high = high


histograms = st.lists(timings, max_size=40).map(lambda values: Histogram.of(*values))


@given(histograms, histograms, histograms)
def test_merging_histograms_is_associative_and_commutative(a: Histogram, b: Histogram, c: Histogram) -> None:
    assert a.merge(b).merge(c) == a.merge(b.merge(c))
    assert a.merge(b) == b.merge(a)
    assert a.merge(Histogram()) == a


@settings(deadline=None)
@given(st.lists(timings, min_size=1, max_size=300), st.sampled_from([500, 900, 950, 990, 1000]))
def test_a_percentile_is_within_1_64_of_the_exact_nearest_rank(values: list[int], permille: int) -> None:
    exact = sorted(values)[max(1, -(-permille * len(values) // 1000)) - 1]

    estimate = Histogram.of(*values).percentile(permille)

    assert estimate is not None
    assert abs(estimate - exact) <= exact * RELATIVE_ERROR


@given(st.lists(timings, max_size=100), st.lists(timings, max_size=100))
def test_percentiles_of_merged_histograms_equal_those_of_all_values(
    left: list[int], right: list[int]
) -> None:
    merged = Histogram.of(*left).merge(Histogram.of(*right))
    together = Histogram.of(*left, *right)

    assert merged == together
    assert merged.percentile(990) == together.percentile(990)


def test_an_empty_histogram_has_no_percentile() -> None:
    assert Histogram().percentile(500) is None
    assert Histogram.from_value(Histogram.of(1, 70, 900_000).to_value()) == Histogram.of(1, 70, 900_000)


# -- folding --------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)  # folding 60 records is slow on a busy machine
@given(st.lists(records(), max_size=60), st.randoms(use_true_random=False), st.integers(1, 6))
def test_folding_any_partition_in_any_order_gives_the_same_buckets(
    batch: list[UsageRecord], rng: random.Random, parts: int
) -> None:
    whole = fold(batch, "hour")
    shuffled = batch[:]
    rng.shuffle(shuffled)
    partition: list[list[UsageRecord]] = [[] for _ in range(parts)]
    for record in shuffled:
        partition[rng.randrange(parts)].append(record)
    folds = [fold(part, "hour") for part in partition]
    rng.shuffle(folds)

    assert merge_folds(*folds) == whole
    assert fold(shuffled, "hour") == whole


@settings(max_examples=60, deadline=None)  # folding 60 records is slow on a busy machine
@given(st.lists(records(), max_size=60))
def test_a_day_is_exactly_the_merge_of_its_hours(batch: list[UsageRecord]) -> None:
    assert roll_up_days(fold(batch, "hour")) == fold(batch, "day")


@settings(max_examples=60, deadline=None)  # folding 60 records is slow on a busy machine
@given(st.lists(records(), max_size=40))
def test_a_bucket_counts_what_its_records_say(batch: list[UsageRecord]) -> None:
    total = merge_all(fold(batch, "day").values())

    assert total.requests == len(batch)
    assert total.charged_micros == sum(r.charged_micros for r in batch)
    assert total.prompt_tokens == sum(r.prompt_tokens for r in batch)
    assert total.errors == sum(1 for r in batch if r.status >= 400 and r.status != 499)
    assert total.disconnects == sum(1 for r in batch if r.status == 499)
    sources = Counter(r.usage_source for r in batch)
    assert (total.source_provider, total.source_estimated, total.source_partial) == (
        sources["provider"],
        sources["estimated"],
        sources["partial"],
    )
    assert total.latency.count == len(batch)
    assert total.ttfb.count == total.ttfb_count == sum(1 for r in batch if r.ttfb_ms is not None)


@settings(deadline=None)
@given(st.lists(records(), max_size=20))
def test_a_record_read_twice_counts_once(batch: list[UsageRecord]) -> None:
    assert fold(batch + batch, "hour") == fold(batch, "hour")


@settings(deadline=None)
@given(records())
def test_buckets_survive_storage_and_their_digest_is_their_content(record: UsageRecord) -> None:
    bucket = Bucket.of(record)

    assert Bucket.from_value(bucket.to_value()) == bucket
    assert Bucket.from_value(bucket.to_value()).digest() == bucket.digest()
    assert bucket.merge(bucket).digest() != bucket.digest()
    assert bucket.merge(EMPTY) == bucket


def test_percentiles_are_clamped_to_the_largest_value_seen() -> None:
    """992 ms opens the bin [992, 1007], whose midpoint (999) was never seen."""
    bucket = merge_all(Bucket.of(_record(latency_ms=value)) for value in (990, 992))

    assert bin_bounds(bin_of(992)) == (992, 1007)
    assert bucket.latency_percentile(1000) == 992


# -- periods and grouping -------------------------------------------------------------------------


def test_periods_are_utc_hours_and_days() -> None:
    moment = START_MS + 13 * 3_600_000 + 59_999

    assert period_of(moment, "hour") == "2024-05-01T13"
    assert period_of(moment, "day") == "2024-05-01"
    assert period_start_ms("2024-05-01T13") == START_MS + 13 * 3_600_000
    assert periods_between(START_MS, START_MS + 2 * DAY_MS, "day") == ["2024-05-01", "2024-05-02"]
    assert len(periods_between(START_MS + 1, START_MS + DAY_MS, "hour")) == 24


def test_grouping_merges_cells_per_period_and_sorts_groups() -> None:
    a, b = Bucket.of(_record(latency_ms=10)), Bucket.of(_record(latency_ms=20))
    rows = list(
        group(
            [
                ("2024-05-01", Cell("acme", "k1", "m2", "p"), a),
                ("2024-05-01", Cell("acme", "k2", "m1", "p"), b),
                ("2024-05-02", Cell("acme", "k1", "m2", "p"), b),
            ],
            "model",
        )
    )

    assert [(period, name) for period, name, _ in rows] == [
        ("2024-05-01", "m1"),
        ("2024-05-01", "m2"),
        ("2024-05-02", "m2"),
    ]
    assert [bucket.requests for _, _, bucket in rows] == [1, 1, 1]
    (_, _, per_tenant), *_ = group(
        [("d", Cell("acme", "k1", "m", "p"), a), ("d", Cell("acme", "k2", "m", "p"), b)], "tenant"
    )
    assert per_tenant == a.merge(b)


def _record(**changes: object) -> UsageRecord:
    return usage_record(f"req-{random.random()}", START_MS, **{"latency_ms": 10, **changes})
