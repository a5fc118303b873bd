"""The benchmark fake's number arithmetic: its ``int`` shortcut gives exactly what DynamoDB's exact
decimals give (``_DECIMAL``, 38 digits), for every number text, short integer or not."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.fake_dynamo import _DECIMAL, _arithmetic, _format_number, _Invalid, _number, _numeric

#: Integers around the shortcut's edge (18 characters), and far beyond it; plus other number texts.
integers = st.one_of(
    st.integers(-(10**17), 10**18),
    st.integers(-(10**19), 10**19),
    st.integers(-(10**37), 10**37),
)
integer_texts = integers.map(str)
# "١٢" (Arabic-Indic digits) is a number to Decimal, so it must take the Decimal way.
other_texts = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False, places=4).map(str),
    st.sampled_from(["+5", "007", "-0", "1e3", "1.50", "00000000000000000001", "-000000000000000009", "١٢"]),
)
number_texts = st.one_of(integer_texts, other_texts)


def by_decimals(left: str, right: str, sign: int) -> str:
    operation = _DECIMAL.add if sign > 0 else _DECIMAL.subtract
    return _format_number(operation(_number(left), _number(right)))


@given(number_texts, number_texts, st.sampled_from([1, -1]))
def test_arithmetic_is_the_exact_decimal_answer(left: str, right: str, sign: int) -> None:
    assert _arithmetic(left, right, sign) == by_decimals(left, right, sign)


@given(number_texts, number_texts)
def test_comparisons_are_the_exact_decimal_ones(left: str, right: str) -> None:
    a, b = _numeric(left), _numeric(right)
    x, y = _number(left), _number(right)
    assert (a == b, a < b, a > b) == (x == y, x < y, x > y)


@given(integers)
def test_short_integers_keep_their_value(value: int) -> None:
    assert _numeric(str(value)) == Decimal(value)


@pytest.mark.parametrize("text", ["", "-", "abc", "1-2", "--1", " 12"])
def test_a_text_that_is_no_number_is_refused_as_before(text: str) -> None:
    with pytest.raises(_Invalid):
        _arithmetic(text, "1", 1)
    with pytest.raises(_Invalid):
        _numeric(text)
