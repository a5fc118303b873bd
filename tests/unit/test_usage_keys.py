"""The usage table's sort key: ISO time to the millisecond, then the request id."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from tollgate.store.usage import _iso_ms

#: 2000-01-01 to 2100-01-01, in epoch milliseconds.
EPOCH_MS = st.integers(946_684_800_000, 4_102_444_800_000)


@given(EPOCH_MS)
def test_the_time_part_is_iso_8601_to_the_millisecond(epoch_ms: int) -> None:
    expected = datetime.fromtimestamp(epoch_ms // 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    assert _iso_ms(epoch_ms) == f"{expected}.{epoch_ms % 1000:03d}Z"
    parsed = datetime.fromisoformat(_iso_ms(epoch_ms)) - datetime(1970, 1, 1, tzinfo=UTC)
    assert parsed // timedelta(milliseconds=1) == epoch_ms


@given(EPOCH_MS, EPOCH_MS)
def test_keys_sort_as_their_times(first: int, second: int) -> None:
    assert (_iso_ms(first) < _iso_ms(second)) == (first < second)
