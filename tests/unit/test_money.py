"""Money: integers of one small unit, exact arithmetic, one rounding rule applied once per request."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tollgate.money import MICROS_PER_UNIT, Money, PriceSheet, apply_margin, charge_for
from tollgate.providers.base import Usage

micros = st.integers(min_value=0, max_value=10**15)
prices = st.builds(Money, st.integers(min_value=0, max_value=500 * MICROS_PER_UNIT))  # up to 500/1M tokens
tokens = st.integers(min_value=0, max_value=10**7)


def test_parse_and_format_are_exact():
    assert Money.parse("1.25") == Money(1_250_000)
    assert Money.parse("0.000001") == Money(1)
    assert Money.parse("-3") == Money(-3_000_000)
    assert str(Money(1_250_000)) == "1.250000"
    assert str(Money(-1)) == "-0.000001"


@pytest.mark.parametrize("bad", ["1.0000001", "abc", "", "1e3", "NaN", "1,5", " 1"])
def test_parse_refuses_what_it_cannot_hold_exactly(bad):
    with pytest.raises(ValueError, match="decimal amount"):
        Money.parse(bad)


@pytest.mark.parametrize("bad", [0.1, True, "1", None])
def test_money_holds_only_integers(bad):
    with pytest.raises(TypeError):
        Money(bad)  # type: ignore[arg-type]


def test_no_floats_mix_in():
    with pytest.raises(TypeError):
        Money(1) + 0.5  # type: ignore[operator]


@given(micros)
def test_format_parse_round_trip(amount):
    assert Money.parse(str(Money(amount))) == Money(amount)


@given(micros, micros)
def test_addition_and_subtraction_are_exact(a, b):
    assert (Money(a) + Money(b)) - Money(b) == Money(a)


def sheet(input_: Money, output: Money, **more: Money) -> PriceSheet:
    return PriceSheet(input=input_, output=output, **more)


@given(prices, prices, tokens, tokens)
def test_charge_is_the_exact_cost_rounded_up_once(p_in, p_out, prompt, completion):
    usage = Usage(prompt_tokens=prompt, completion_tokens=completion)
    exact = Fraction(prompt * p_in.micros + completion * p_out.micros, 1_000_000)

    charge = charge_for(sheet(p_in, p_out), usage)

    assert charge.micros >= exact  # never gives anything away
    assert charge.micros - exact < 1  # and never takes more than one micro-unit extra
    assert charge.micros >= 0


@given(prices, prices, tokens, tokens, tokens)
def test_splitting_a_request_never_charges_less(p_in, p_out, a, b, completion):
    """One rounding per request: two requests are charged at least what one combined would be."""
    whole = charge_for(sheet(p_in, p_out), Usage(prompt_tokens=a + b, completion_tokens=completion))
    first = charge_for(sheet(p_in, p_out), Usage(prompt_tokens=a, completion_tokens=completion))
    second = charge_for(sheet(p_in, p_out), Usage(prompt_tokens=b, completion_tokens=0))
    assert first + second >= whole


@given(prices, prices, prices, prices, tokens, tokens, tokens, tokens)
def test_cached_and_cache_write_tokens_use_their_own_prices(
    p_in, p_out, p_read, p_write, fresh, read, write, out
):
    usage = Usage(
        prompt_tokens=fresh + read + write,
        completion_tokens=out,
        cached_tokens=read,
        cache_write_tokens=write,
    )
    exact = Fraction(
        fresh * p_in.micros + read * p_read.micros + write * p_write.micros + out * p_out.micros, 1_000_000
    )

    charge = charge_for(sheet(p_in, p_out, cached_input=p_read, cache_write=p_write), usage)

    assert 0 <= charge.micros - exact < 1


def test_missing_cache_prices_fall_back_to_the_input_price():
    usage = Usage(
        prompt_tokens=1_000_000, completion_tokens=0, cached_tokens=400_000, cache_write_tokens=100_000
    )
    assert charge_for(sheet(Money.parse("2"), Money.parse("8")), usage) == Money.parse("2")


def test_images_and_embeddings():
    priced = PriceSheet(image=Money.parse("0.04"), embedding=Money.parse("0.02"))
    assert charge_for(priced, None, images=3) == Money.parse("0.12")
    assert charge_for(
        priced, Usage(prompt_tokens=500_000, completion_tokens=0), embedding=True
    ) == Money.parse("0.01")


def test_a_missing_needed_price_is_an_error_not_zero():
    with pytest.raises(LookupError):
        charge_for(PriceSheet(input=Money(1)), Usage(prompt_tokens=1, completion_tokens=1))
    with pytest.raises(LookupError):
        charge_for(PriceSheet(input=Money(1), output=Money(1)), None, images=1)


@given(st.builds(Money, micros), st.integers(min_value=0, max_value=100_000))
def test_margin_is_exact_and_rounded_up(cost, bps):
    sell = apply_margin(cost, bps)
    exact = Fraction(cost.micros * (10_000 + bps), 10_000)
    assert 0 <= sell.micros - exact < 1
    assume(bps > 0)
    assert sell >= cost
