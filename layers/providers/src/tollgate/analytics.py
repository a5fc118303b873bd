"""Usage analytics: folding usage records into hour and day buckets. Pure: no I/O, no clock.

Buckets
-------
A **bucket** summarises the usage records of one **cell** (tenant, key, model, provider) over one
UTC hour or UTC day: requests, errors, disconnects, tokens by kind, images, cost and credits,
how many records had ``provider``, ``estimated`` or ``partial`` usage, and the distribution of
latency and time to first byte. Every field is an integer count or sum, so buckets merge by
addition (maxima by ``max``), and folding is exact:

    fold(records) == merge(fold(part) for part in any partition of records, in any order)

That one property is what makes the rollup safe to rerun, to run twice at once, and to build a
day from its 24 hours (``roll_up_days``): whatever order records are seen in, the bucket is the
same. ``tests/unit/test_analytics.py`` checks it with hypothesis.

Percentiles: mergeable log-linear histograms
--------------------------------------------
Percentiles are not mergeable, histograms are. Each bucket keeps a sparse histogram per timing
(``Histogram``) with fixed bins, so p50/p99 of any group of buckets come from the sum of their
histograms. The bins are log-linear, computed with integer arithmetic only (no floats, so every
process bins a value the same way):

* values 0..63 ms have a bin each (exact);
* above that, each power of two ``[2^e, 2^(e+1))`` is split into 32 equal bins.

A percentile is reported as the midpoint of the bin holding its rank (nearest-rank definition),
clamped to the bucket's maximum. The true value lies in the same bin, whose width is at most
1/32 of its lower edge, so the **relative error is at most 1/64 (about 1.6 %)**, and zero below
64 ms. A histogram has at most 32 bins per doubling (about 600 up to 15 minutes) and is stored
sparse: only bins that hold a count.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Literal

from tollgate.store.records import UsageRecord

Granularity = Literal["hour", "day"]
GroupBy = Literal["tenant", "key", "model", "provider"]

#: ``provider`` of a record that never reached a provider (an unknown model, say).
NO_PROVIDER = "-"
#: Status of a request whose client went away before the response finished (see ``tollgate.chat``).
CLIENT_CLOSED_REQUEST = 499

_SUB_BUCKET_BITS = 5
_SUB_BUCKETS = 1 << _SUB_BUCKET_BITS  # 32 bins per doubling
_EXACT_BELOW = 2 * _SUB_BUCKETS  # 64: one bin per value below this
#: The worst relative error of a reported percentile (see the module docstring).
RELATIVE_ERROR = 1 / (2 * _SUB_BUCKETS)

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


# -- periods --------------------------------------------------------------------------------------


def period_of(epoch_ms: int, granularity: Granularity) -> str:
    """The UTC period holding ``epoch_ms``: ``2024-05-01T13`` (hour) or ``2024-05-01`` (day)."""
    moment = datetime.fromtimestamp(epoch_ms // 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H" if granularity == "hour" else "%Y-%m-%d")


def period_start_ms(period: str) -> int:
    """Epoch milliseconds at which ``period`` (hour or day) starts."""
    pattern = "%Y-%m-%dT%H" if "T" in period else "%Y-%m-%d"
    return int(datetime.strptime(period, pattern).replace(tzinfo=UTC).timestamp()) * 1000


def period_length_ms(granularity: Granularity) -> int:
    return HOUR_MS if granularity == "hour" else DAY_MS


def floor_ms(epoch_ms: int, granularity: Granularity) -> int:
    length = period_length_ms(granularity)
    return epoch_ms - epoch_ms % length


def periods_between(since_ms: int, until_ms: int, granularity: Granularity) -> list[str]:
    """Every period overlapping ``[since, until)``, oldest first."""
    length = period_length_ms(granularity)
    start = floor_ms(since_ms, granularity)
    return [period_of(moment, granularity) for moment in range(start, until_ms, length)]


def hours_of_day(day: str) -> tuple[str, str]:
    """The first and last hour periods of a day period."""
    return f"{day}T00", f"{day}T23"


def day_of(period: str) -> str:
    return period[:10]


# -- histograms -----------------------------------------------------------------------------------


def bin_of(value: int) -> int:
    """The histogram bin of a non-negative integer (negative values count as 0)."""
    if value < _EXACT_BELOW:
        return max(value, 0)
    exponent = value.bit_length() - 1
    shift = exponent - _SUB_BUCKET_BITS
    return _SUB_BUCKETS * (exponent - _SUB_BUCKET_BITS + 1) + (value >> shift) - _SUB_BUCKETS


def bin_bounds(index: int) -> tuple[int, int]:
    """The smallest and largest value of a bin (inclusive)."""
    if index < _EXACT_BELOW:
        return index, index
    exponent = index // _SUB_BUCKETS + _SUB_BUCKET_BITS - 1
    shift = exponent - _SUB_BUCKET_BITS
    low = (_SUB_BUCKETS + index % _SUB_BUCKETS) << shift
    return low, low + (1 << shift) - 1


def bin_value(index: int) -> int:
    """The value a percentile falling in this bin reports: the bin's midpoint."""
    low, high = bin_bounds(index)
    return (low + high) // 2


@dataclass(frozen=True, slots=True)
class Histogram:
    """Counts per bin, sorted by bin; immutable, so equal histograms compare equal."""

    bins: tuple[tuple[int, int], ...] = ()

    @classmethod
    def of(cls, *values: int) -> Histogram:
        counts: dict[int, int] = {}
        for value in values:
            index = bin_of(value)
            counts[index] = counts.get(index, 0) + 1
        return cls(tuple(sorted(counts.items())))

    @property
    def count(self) -> int:
        return sum(count for _, count in self.bins)

    def merge(self, other: Histogram) -> Histogram:
        if not other.bins:
            return self
        if not self.bins:
            return other
        counts = dict(self.bins)
        for index, count in other.bins:
            counts[index] = counts.get(index, 0) + count
        return Histogram(tuple(sorted(counts.items())))

    def percentile(self, permille: int) -> int | None:
        """The nearest-rank percentile (``permille`` 500 = p50, 990 = p99), or None when empty."""
        total = self.count
        if total == 0:
            return None
        rank = max(1, -(-permille * total // 1000))
        seen = 0
        for index, count in self.bins:
            seen += count
            if seen >= rank:
                return bin_value(index)
        return bin_value(self.bins[-1][0])

    def to_value(self) -> dict[str, int]:
        """A DynamoDB map (string keys): ``{"<bin>": count}``."""
        return {str(index): count for index, count in self.bins}

    @classmethod
    def from_value(cls, value: Mapping[str, Any] | None) -> Histogram:
        if not value:
            return cls()
        return cls(tuple(sorted((int(index), int(count)) for index, count in value.items())))


# -- cells and buckets ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class Cell:
    """What a bucket is about: one tenant's key, using one model, on one provider."""

    tenant_id: str
    key_id: str
    model: str
    provider: str

    @classmethod
    def of(cls, record: UsageRecord) -> Cell:
        return cls(record.tenant_id, record.key_id, record.model, record.provider or NO_PROVIDER)

    def group(self, group_by: GroupBy) -> str:
        if group_by == "tenant":
            return self.tenant_id
        if group_by == "key":
            return self.key_id
        if group_by == "model":
            return self.model
        return self.provider


#: Bucket fields merged with ``max`` rather than ``+``.
_MAXIMA = frozenset({"latency_max_ms", "ttfb_max_ms"})
_HISTOGRAMS = frozenset({"latency", "ttfb"})


@dataclass(frozen=True, slots=True)
class Bucket:
    """The usage of one cell over one period. ``Bucket()`` is the empty bucket (merge's identity)."""

    requests: int = 0
    #: Status >= 400, except client disconnects (499).
    errors: int = 0
    #: Status >= 500: Tollgate's own failures and the provider's (502, 504).
    server_errors: int = 0
    disconnects: int = 0
    streamed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    images: int = 0
    #: What the provider charges (micro-units), and what tenants were charged (credit mode).
    cost_micros: int = 0
    charged_micros: int = 0
    #: Records of a model that had no price.
    unpriced: int = 0
    source_provider: int = 0
    source_estimated: int = 0
    source_partial: int = 0
    latency_sum_ms: int = 0
    latency_max_ms: int = 0
    latency: Histogram = field(default_factory=Histogram)
    ttfb_count: int = 0
    ttfb_sum_ms: int = 0
    ttfb_max_ms: int = 0
    ttfb: Histogram = field(default_factory=Histogram)

    @classmethod
    def of(cls, record: UsageRecord) -> Bucket:
        status = record.status
        latency = max(record.latency_ms, 0)
        ttfb = None if record.ttfb_ms is None else max(record.ttfb_ms, 0)
        return cls(
            requests=1,
            errors=int(status >= 400 and status != CLIENT_CLOSED_REQUEST),
            server_errors=int(status >= 500),
            disconnects=int(status == CLIENT_CLOSED_REQUEST),
            streamed=int(record.stream),
            prompt_tokens=record.prompt_tokens,
            completion_tokens=record.completion_tokens,
            cached_tokens=record.cached_tokens,
            cache_write_tokens=record.cache_write_tokens,
            reasoning_tokens=record.reasoning_tokens,
            images=record.images,
            cost_micros=record.cost_micros,
            charged_micros=record.charged_micros,
            unpriced=int(not record.priced),
            source_provider=int(record.usage_source == "provider"),
            source_estimated=int(record.usage_source == "estimated"),
            source_partial=int(record.usage_source == "partial"),
            latency_sum_ms=latency,
            latency_max_ms=latency,
            latency=Histogram.of(latency),
            ttfb_count=int(ttfb is not None),
            ttfb_sum_ms=ttfb or 0,
            ttfb_max_ms=ttfb or 0,
            ttfb=Histogram.of(ttfb) if ttfb is not None else Histogram(),
        )

    def merge(self, other: Bucket) -> Bucket:
        values: dict[str, Any] = {}
        for spec in fields(self):
            name = spec.name
            mine, theirs = getattr(self, name), getattr(other, name)
            if name in _HISTOGRAMS:
                values[name] = mine.merge(theirs)
            elif name in _MAXIMA:
                values[name] = max(mine, theirs)
            else:
                values[name] = mine + theirs
        return Bucket(**values)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def latency_percentile(self, permille: int) -> int | None:
        value = self.latency.percentile(permille)
        return None if value is None else min(value, self.latency_max_ms)

    def ttfb_percentile(self, permille: int) -> int | None:
        value = self.ttfb.percentile(permille)
        return None if value is None else min(value, self.ttfb_max_ms)

    def to_value(self) -> dict[str, Any]:
        """Plain values for storage (histograms as ``{"<bin>": count}`` maps)."""
        values: dict[str, Any] = {}
        for spec in fields(self):
            value = getattr(self, spec.name)
            values[spec.name] = value.to_value() if isinstance(value, Histogram) else value
        return values

    @classmethod
    def from_value(cls, values: Mapping[str, Any]) -> Bucket:
        known: dict[str, Any] = {}
        for spec in fields(cls):
            if spec.name in _HISTOGRAMS:
                known[spec.name] = Histogram.from_value(values.get(spec.name))
            elif isinstance(values.get(spec.name), int):
                known[spec.name] = values[spec.name]
        return cls(**known)

    def digest(self) -> str:
        """A fingerprint of the content: two buckets with the same digest are the same bucket."""
        canonical = json.dumps(self.to_value(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:32]


EMPTY = Bucket()


def merge_all(buckets: Iterable[Bucket]) -> Bucket:
    total = EMPTY
    for bucket in buckets:
        total = total.merge(bucket)
    return total


# -- folding --------------------------------------------------------------------------------------

BucketKey = tuple[str, Cell]
"""(period, cell)."""


def fold(records: Iterable[UsageRecord], granularity: Granularity) -> dict[BucketKey, Bucket]:
    """The buckets of ``records``, one per (period, cell) that has any.

    A request id counts once however often it appears: a record seen twice (two overlapping
    reads) is the same record.
    """
    seen: set[str] = set()
    buckets: dict[BucketKey, Bucket] = {}
    for record in records:
        if record.request_id in seen:
            continue
        seen.add(record.request_id)
        key = (period_of(record.created_at_ms, granularity), Cell.of(record))
        buckets[key] = buckets.get(key, EMPTY).merge(Bucket.of(record))
    return buckets


def merge_folds(*folds: Mapping[BucketKey, Bucket]) -> dict[BucketKey, Bucket]:
    """Buckets of disjoint sets of records, merged key by key."""
    merged: dict[BucketKey, Bucket] = {}
    for buckets in folds:
        for key, bucket in buckets.items():
            merged[key] = merged.get(key, EMPTY).merge(bucket)
    return merged


def roll_up_days(hours: Mapping[BucketKey, Bucket]) -> dict[BucketKey, Bucket]:
    """Day buckets from hour buckets: a day is exactly the merge of its 24 hours."""
    days: dict[BucketKey, Bucket] = {}
    for (hour, cell), bucket in hours.items():
        key = (day_of(hour), cell)
        days[key] = days.get(key, EMPTY).merge(bucket)
    return days


def group(
    buckets: Iterable[tuple[str, Cell, Bucket]], group_by: GroupBy
) -> Iterator[tuple[str, str, Bucket]]:
    """(period, group, merged bucket) for buckets already ordered by period, groups sorted."""
    current: str | None = None
    groups: dict[str, Bucket] = {}
    for period, cell, bucket in buckets:
        if period != current:
            if current is not None:
                yield from ((current, name, groups[name]) for name in sorted(groups))
            current, groups = period, {}
        name = cell.group(group_by)
        groups[name] = groups.get(name, EMPTY).merge(bucket)
    if current is not None:
        yield from ((current, name, groups[name]) for name in sorted(groups))


__all__ = [
    "EMPTY",
    "NO_PROVIDER",
    "RELATIVE_ERROR",
    "Bucket",
    "BucketKey",
    "Cell",
    "Granularity",
    "GroupBy",
    "Histogram",
    "bin_bounds",
    "bin_of",
    "bin_value",
    "fold",
    "group",
    "merge_all",
    "merge_folds",
    "period_of",
    "period_start_ms",
    "periods_between",
    "roll_up_days",
]
