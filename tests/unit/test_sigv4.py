"""The ledger's SigV4 signer signs exactly as botocore's ``SigV4Auth`` does."""

from __future__ import annotations

import datetime
from unittest import mock

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import given, settings
from hypothesis import strategies as st

from tollgate.store.sigv4 import SigV4Signer

_TOKEN_TEXT = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=60)
_HEADER_VALUE = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)


def botocore_headers(
    credentials: Credentials,
    *,
    url: str,
    headers: dict[str, str],
    body: bytes,
    now: datetime.datetime,
    region: str,
) -> dict[str, str]:
    request = AWSRequest(method="POST", url=url, data=body, headers=headers)
    with mock.patch("botocore.auth.get_current_datetime", return_value=now):
        SigV4Auth(credentials, "dynamodb", region).add_auth(request)
    return dict(request.headers.items())


@settings(max_examples=300, deadline=None)
@given(
    access_key=st.from_regex(r"A[A-Z0-9]{15,19}", fullmatch=True),
    secret_key=_TOKEN_TEXT,
    token=st.none() | _TOKEN_TEXT,
    region=st.sampled_from(["us-east-1", "eu-west-3", "ap-southeast-2", "us-gov-west-1"]),
    endpoint=st.sampled_from(
        [
            ("https://dynamodb.us-east-1.amazonaws.com", "dynamodb.us-east-1.amazonaws.com"),
            ("https://dynamodb.us-east-1.amazonaws.com:443", "dynamodb.us-east-1.amazonaws.com"),
            ("http://127.0.0.1:8000", "127.0.0.1:8000"),
            ("http://localhost:80", "localhost"),
            ("https://ddb.example.com:8443", "ddb.example.com:8443"),
        ]
    ),
    path=st.sampled_from(["/", "/v1", "/a/b.c", "/~x-y_z"]),
    operation=st.sampled_from(["UpdateItem", "TransactWriteItems", "GetItem"]),
    extra=st.dictionaries(
        st.sampled_from(["X-Custom", "User-Agent", "X-Amzn-Trace-Id"]), _HEADER_VALUE, max_size=2
    ),
    spaced=st.from_regex(r" {0,2}[a-z]{1,4}(?: {1,3}[a-z]{1,4}){0,3} {0,2}", fullmatch=True),
    body=st.binary(max_size=300),
    seconds=st.integers(0, 4_102_444_800),
)
def test_the_signature_is_botocores(  # type: ignore[no-untyped-def]
    access_key, secret_key, token, region, endpoint, path, operation, extra, spaced, body, seconds
) -> None:
    url, host = endpoint
    headers = {"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": f"DynamoDB_20120810.{operation}"}
    headers |= extra | {"X-Spaced": spaced}  # signed with its spaces trimmed and collapsed
    credentials = Credentials(access_key, secret_key, token)
    now = datetime.datetime.fromtimestamp(seconds, datetime.UTC).replace(tzinfo=None)

    ours = SigV4Signer(region=region, service="dynamodb").sign(
        credentials.get_frozen_credentials(), host=host, headers=headers, body=body, path=path, now=seconds
    )

    assert ours == botocore_headers(
        credentials, url=url + path, headers=headers, body=body, now=now, region=region
    )


def test_the_signing_key_follows_the_day_and_the_secret() -> None:
    """The cached key must never sign for another day or another (rotated) secret."""
    signer = SigV4Signer(region="us-east-1", service="dynamodb")
    headers = {"X-Amz-Target": "DynamoDB_20120810.UpdateItem"}
    day = 86_400
    for secret, seconds in [("one", 10 * day), ("one", 10 * day + 5), ("one", 11 * day), ("two", 11 * day)]:
        credentials = Credentials("AKIDEXAMPLE", secret)
        now = datetime.datetime.fromtimestamp(seconds, datetime.UTC).replace(tzinfo=None)
        expected = botocore_headers(
            credentials, url="https://h", headers=headers, body=b"{}", now=now, region="us-east-1"
        )
        signed = signer.sign(
            credentials.get_frozen_credentials(), host="h", headers=headers, body=b"{}", now=seconds
        )
        assert signed == expected


@pytest.mark.parametrize("path", ["", "a", "//", "/a//b", "/./a", "/a/../b", "/a b", "/a?b=c", "/%41"])
def test_paths_it_would_sign_differently_from_botocore_are_refused(path: str) -> None:
    with pytest.raises(ValueError, match="path"):
        SigV4Signer(region="us-east-1", service="dynamodb").sign(
            Credentials("AKID", "s").get_frozen_credentials(), host="h", headers={}, body=b"", path=path
        )


@pytest.mark.parametrize("name", ["Host", "authorization", "X-Amz-Date", "x-amz-security-token"])
def test_headers_the_signer_sets_cannot_be_passed_in(name: str) -> None:
    with pytest.raises(ValueError, match="header"):
        SigV4Signer(region="us-east-1", service="dynamodb").sign(
            Credentials("AKID", "s").get_frozen_credentials(), host="h", headers={name: "x"}, body=b""
        )
