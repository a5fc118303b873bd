from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tollgate.store.dynamo import from_item, to_item

scalars = st.one_of(st.text(max_size=20), st.integers(min_value=-(10**30), max_value=10**30), st.booleans())
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@given(st.dictionaries(st.text(min_size=1, max_size=10), values, max_size=6))
def test_items_round_trip(document):
    assert from_item(to_item(document)) == document


def test_none_values_are_left_out():
    assert to_item({"a": None, "b": 1}) == {"b": {"N": "1"}}


def test_floats_are_refused():
    with pytest.raises(TypeError):
        to_item({"price": 0.1})
