"""Money: whole micro-units, exact arithmetic, and one rounding rule.

* **The unit.** ``Money`` counts micro-units (10⁻⁶) of the account currency: US dollars in
  enterprise mode, credits in credit mode. ``Money(1_250_000)`` is 1.25. There are no floats in
  money code: amounts parse from and print as decimal strings.
* **Prices** are per million tokens (``PriceSheet``), or per image.
* **The rounding rule.** A request's cost is computed exactly, as a fraction, over all its token
  kinds, and rounded *up* to a whole micro-unit once, at the end. The caller is never charged
  less than the exact cost, and never more than one micro-unit above it.

>>> str(charge_for(PriceSheet(input=Money.parse("0.15"), output=Money.parse("0.60")),
...                Usage(prompt_tokens=1200, completion_tokens=300)))
'0.000360'
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from fractions import Fraction
from typing import Any

from tollgate.providers.base import Usage

MICROS_PER_UNIT = 1_000_000
#: Token prices are quoted per this many tokens.
TOKENS_PER_QUOTE = 1_000_000
BASIS_POINTS = 10_000
_DECIMAL = re.compile(r"-?\d{1,15}(\.\d{1,6})?")


@dataclass(frozen=True, slots=True, order=True)
class Money:
    micros: int

    def __post_init__(self) -> None:
        if type(self.micros) is not int:
            raise TypeError(f"Money holds an int of micro-units, not {type(self.micros).__name__}")

    @classmethod
    def parse(cls, text: str) -> Money:
        """From a decimal string with at most six decimals, e.g. ``"12.5"``."""
        if not isinstance(text, str) or not _DECIMAL.fullmatch(text):
            raise ValueError(f"not a decimal amount with at most 6 decimals: {text!r}")
        negative = text.startswith("-")
        whole, _, fraction = text.lstrip("-").partition(".")
        micros = int(whole) * MICROS_PER_UNIT + int(fraction.ljust(6, "0") or "0")
        return cls(-micros if negative else micros)

    @classmethod
    def zero(cls) -> Money:
        return cls(0)

    def __str__(self) -> str:
        sign = "-" if self.micros < 0 else ""
        whole, fraction = divmod(abs(self.micros), MICROS_PER_UNIT)
        return f"{sign}{whole}.{fraction:06d}"

    def __add__(self, other: Money) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        return Money(self.micros + other.micros)

    def __sub__(self, other: Money) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        return Money(self.micros - other.micros)

    def __neg__(self) -> Money:
        return Money(-self.micros)


def round_up(amount: Fraction) -> Money:
    """The one rounding rule: up, to a whole micro-unit."""
    return Money(-((-amount.numerator) // amount.denominator))


@dataclass(frozen=True, slots=True)
class PriceSheet:
    """Prices of one model: per million tokens of each kind, and per image.

    ``None`` means "no price": a request that needs it cannot be priced. Cached-input and
    cache-write tokens fall back to the input price when they have none of their own.
    """

    input: Money | None = None
    output: Money | None = None
    cached_input: Money | None = None
    cache_write: Money | None = None
    image: Money | None = None
    embedding: Money | None = None

    def to_dict(self) -> dict[str, str]:
        return {f.name: str(value) for f in fields(self) if (value := getattr(self, f.name)) is not None}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PriceSheet:
        return cls(**{name: Money.parse(value) for name, value in values.items() if value is not None})

    def map(self, transform: Any) -> PriceSheet:
        """A sheet with ``transform`` applied to every price that is set."""
        return PriceSheet(
            **{f.name: None if (v := getattr(self, f.name)) is None else transform(v) for f in fields(self)}
        )

    def is_empty(self) -> bool:
        return self == _NO_PRICES


_NO_PRICES = PriceSheet()


def _needed(price: Money | None, what: str) -> int:
    if price is None:
        raise LookupError(f"no {what} price")
    return price.micros


def exact_cost(
    sheet: PriceSheet, usage: Usage | None, *, images: int = 0, embedding: bool = False
) -> Fraction:
    """The exact cost, in micro-units, before rounding."""
    total = 0
    if usage is not None and embedding:
        total += usage.prompt_tokens * _needed(sheet.embedding, "embedding")
    elif usage is not None:
        input_price = _needed(sheet.input, "input")
        fresh = usage.prompt_tokens - usage.cached_tokens - usage.cache_write_tokens
        read_price = input_price if sheet.cached_input is None else sheet.cached_input.micros
        write_price = input_price if sheet.cache_write is None else sheet.cache_write.micros
        cached = usage.cached_tokens * read_price
        written = usage.cache_write_tokens * write_price
        total += max(fresh, 0) * input_price + cached + written
        total += usage.completion_tokens * _needed(sheet.output, "output")
    cost = Fraction(total, TOKENS_PER_QUOTE)
    if images:
        cost += images * _needed(sheet.image, "image")
    return cost


def charge_for(sheet: PriceSheet, usage: Usage | None, *, images: int = 0, embedding: bool = False) -> Money:
    """What one request costs under ``sheet``: exact, then rounded up once.

    Raises ``LookupError`` when a price the request needs is missing: a request is never
    silently free.
    """
    return round_up(exact_cost(sheet, usage, images=images, embedding=embedding))


def apply_margin(cost: Money, margin_bps: int) -> Money:
    """``cost * (1 + margin)``, the margin in basis points (2500 = 25 %), rounded up."""
    if margin_bps < 0:
        raise ValueError("a margin cannot be negative")
    return round_up(Fraction(cost.micros * (BASIS_POINTS + margin_bps), BASIS_POINTS))
