"""The SSE encoder and the incremental decoder, as the event-stream standard specifies them."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tollgate.errors import RateLimitError
from tollgate.sse import DONE, SSEDecoder, SSEEvent, encode_error, encode_event


def decode(*chunks: bytes) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    return events + decoder.close()


# -- Encoding --------------------------------------------------------------------------------


def test_a_dict_is_one_compact_json_data_event() -> None:
    assert (
        encode_event({"id": "x", "choices": [], "n": None}) == b'data: {"id":"x","choices":[],"n":null}\n\n'
    )


def test_a_string_is_sent_as_is() -> None:
    assert encode_event("[DONE]") == DONE == b"data: [DONE]\n\n"


def test_a_multi_line_string_becomes_one_data_line_per_line() -> None:
    assert encode_event("a\nb\r\nc") == b"data: a\ndata: b\ndata: c\n\n"


def test_an_error_event_carries_openais_error_object() -> None:
    frame = encode_error(RateLimitError("Slow down.", retry_after=3))

    [event] = decode(frame)
    assert json.loads(event.data) == {
        "error": {
            "message": "Slow down.",
            "type": "rate_limit_error",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }


def test_non_ascii_text_is_escaped_so_any_string_encodes() -> None:
    frame = encode_event({"content": "你好 \ud83d"})  # a lone surrogate is legal in JSON input

    assert frame.isascii()
    assert json.loads(decode(frame)[0].data) == {"content": "你好 \ud83d"}


# -- Decoding, by the standard's rules -------------------------------------------------------


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_every_line_ending_is_a_line_ending(newline: bytes) -> None:
    stream = b"data: one" + newline + newline + b"data: two" + newline + newline

    assert [e.data for e in decode(stream)] == ["one", "two"]


def test_comments_such_as_keep_alives_are_skipped() -> None:
    stream = b": OPENROUTER PROCESSING\n\n:keep-alive\n\ndata: x\n: inside an event\n\n"

    assert decode(stream) == [SSEEvent("x")]


def test_the_space_after_the_colon_is_optional_and_only_one_is_removed() -> None:
    assert [e.data for e in decode(b"data:tight\n\ndata:  two spaces\n\n")] == ["tight", " two spaces"]


def test_multi_line_data_is_joined_with_newlines() -> None:
    assert decode(b'data: {\ndata: "a": 1\ndata: }\n\n') == [SSEEvent('{\n"a": 1\n}')]


def test_event_id_and_retry_fields() -> None:
    stream = b"event: error\nid: 7\nretry: 1500\ndata: boom\n\ndata: next\n\n"

    first, second = decode(stream)
    assert first == SSEEvent("boom", "error", "7", 1500)
    assert second == SSEEvent("next", "message", "7", 1500)  # the type resets, the last id stays


def test_a_blank_line_without_data_dispatches_nothing() -> None:
    assert decode(b"event: ping\n\n\n\ndata: x\n\n") == [SSEEvent("x")]


def test_an_empty_data_field_is_an_event_with_empty_data() -> None:
    assert decode(b"data:\n\n") == [SSEEvent("")]


def test_unknown_fields_and_lines_without_colon_are_ignored() -> None:
    assert decode(b"foo: bar\nbare\ndata: x\n\n") == [SSEEvent("x")]


def test_a_leading_byte_order_mark_is_dropped_even_when_split() -> None:
    assert decode(b"\xef\xbb", b"\xbfdata: x\n\n") == [SSEEvent("x")]


def test_a_chunk_boundary_inside_a_utf8_character() -> None:
    encoded = "data: 你好\n\n".encode()
    cut = encoded.index(b"\xe4") + 1

    assert decode(encoded[:cut], encoded[cut:]) == [SSEEvent("你好")]


def test_a_chunk_boundary_between_cr_and_lf_adds_no_blank_line() -> None:
    # Were the "\n" read as a second line end, "data: b" would start a new event early.
    assert decode(b"data: a\r", b"\ndata: b\r\n\r\n") == [SSEEvent("a\nb")]


def test_feed_returns_only_complete_events() -> None:
    decoder = SSEDecoder()

    assert decoder.feed(b"data: hel") == []
    assert decoder.feed(b"lo\n") == []
    assert decoder.feed(b"\n") == [SSEEvent("hello")]


def test_close_dispatches_complete_data_lines_but_not_a_cut_line() -> None:
    assert decode(b"data: [DONE]\n") == [SSEEvent("[DONE]")]
    assert decode(b'data: {"cut') == []


# -- Properties ------------------------------------------------------------------------------

_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"), max_size=20)
_newline = st.sampled_from([b"\n", b"\r\n", b"\r"])
_line = st.one_of(
    _text.map(lambda t: b"data: " + t.encode()),
    _text.map(lambda t: b"data:" + t.encode()),
    _text.map(lambda t: b": " + t.encode()),
    _text.map(lambda t: b"event: " + t.encode()),
    _text.map(lambda t: b"id: " + t.encode()),
    st.integers(0, 10_000).map(lambda n: b"retry: %d" % n),
    st.just(b""),
)


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(st.tuples(_line, _newline), max_size=30))
    tail = draw(st.sampled_from([b"", b"data: unterminated"]))
    bom = draw(st.sampled_from([b"", b"\xef\xbb\xbf"]))
    return bom + b"".join(line + newline for line, newline in lines) + tail


@given(streams(), st.lists(st.integers(min_value=0), max_size=12))
def test_any_split_decodes_like_the_whole_stream(stream: bytes, cuts: list[int]) -> None:
    points = sorted({cut % (len(stream) + 1) for cut in cuts})
    chunks = [stream[start:end] for start, end in zip([0, *points], [*points, len(stream)], strict=True)]

    assert decode(*chunks) == decode(stream)


@given(streams())
def test_byte_by_byte_decodes_like_the_whole_stream(stream: bytes) -> None:
    assert decode(*(stream[i : i + 1] for i in range(len(stream)))) == decode(stream)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(st.dictionaries(st.text(max_size=8), _json, max_size=6))
def test_a_dict_round_trips(payload: dict[str, Any]) -> None:
    [event] = decode(encode_event(payload))

    assert json.loads(event.data) == payload


@given(st.text(st.characters(exclude_categories=["Cs"])))
def test_a_string_round_trips_with_its_line_endings_normalized(text: str) -> None:
    [event] = decode(encode_event(text))

    assert event.data == text.replace("\r\n", "\n").replace("\r", "\n")
