"""Hub keys: format, parsing and the peppered hash."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tollgate.keys import MAX_TOKEN_LENGTH, hash_secret, new_key, parse_key


def test_issued_keys_parse_back_to_their_parts():
    issued = new_key()

    assert issued.token.startswith("tg-")
    assert parse_key(issued.token) == (issued.key_id, issued.secret)


def test_keys_are_unique():
    assert len({new_key().token for _ in range(1000)}) == 1000


@given(st.text(max_size=200))
def test_arbitrary_text_never_parses_unless_well_formed(text):
    parsed = parse_key(text)
    if parsed is not None:
        key_id, secret = parsed
        assert text == f"tg-{key_id}-{secret}"


def test_overlong_and_near_miss_tokens_are_refused():
    issued = new_key()
    assert parse_key(issued.token + "x") is None
    assert parse_key(issued.token[:-1]) is None
    assert parse_key(issued.token.upper()) is None
    assert parse_key("tg-" + "a" * MAX_TOKEN_LENGTH) is None
    assert parse_key(f" {issued.token}") is None


def test_hash_depends_on_pepper_key_id_and_secret():
    base = hash_secret(b"pepper", "0123456789abcdef", "secret")

    assert base == hash_secret(b"pepper", "0123456789abcdef", "secret")
    assert base != hash_secret(b"other", "0123456789abcdef", "secret")
    assert base != hash_secret(b"pepper", "0123456789abcdee", "secret")
    assert base != hash_secret(b"pepper", "0123456789abcdef", "secres")
    assert "secret" not in base
