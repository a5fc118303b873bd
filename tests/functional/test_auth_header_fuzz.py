"""The credential check under malformed input: thousands of bad ``Authorization`` (and ``x-api-key``)
values, every one answered 401 in the route's error shape, on the public and the admin API alike.

The values are generated from a fixed seed, so a failure reproduces: random text, wrong schemes,
near misses of real keys (one character off, truncated, extended, re-cased), SQL/NoSQL/template
injection, forged, unsigned and expired JWTs, over-long and non-ASCII values, and credentials of the
other plane. OIDC sign-in is on, so JWT-shaped values reach the real verifier.
"""

from __future__ import annotations

import base64
import json
import random
import string
import time
from typing import Any

import jwt
import pytest

from tests.support.oidc import rsa_key

SEED = 20261121
MINIMUM_VALUES = 2000
INJECTIONS = [
    "' OR '1'='1",
    "' OR 1=1 --",
    '" OR ""="',
    "1; DROP TABLE keys; --",
    "admin'--",
    '{"$ne": null}',
    '{"$gt": ""}',
    "*)(uid=*))(|(uid=*",
    "${jndi:ldap://127.0.0.1/a}",
    "{{7*7}}",
    "%s%s%s%n",
    "../../../../etc/passwd",
    "<script>alert(1)</script>",
    "null",
    "undefined",
    "true",
    "0",
    "[]",
    "{}",
    "Bearer",
    "tg-",
    "tg--",
    "tg-0000000000000000-",
    "tga-",
]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _flip(text: str, rng: random.Random) -> str:
    position = rng.randrange(len(text))
    alphabet = string.ascii_letters + string.digits + "-_"
    replacement = rng.choice([c for c in alphabet if c != text[position]])
    return text[:position] + replacement + text[position + 1 :]


def corpus(
    rng: random.Random, *, data_key: str, admin_key: str, bootstrap: str, issuer: Any
) -> list[str | bytes]:
    """Malformed credentials: whole ``Authorization`` header values (str, or bytes for non-ASCII)."""
    printable = string.ascii_letters + string.digits + string.punctuation + " "
    values: list[str | bytes] = []
    for _ in range(450):  # random text, with and without a scheme
        text = "".join(rng.choice(printable) for _ in range(rng.randint(1, 120))).strip() or "x"
        values += [text, f"Bearer {text}"]
    for scheme in ("Basic", "Digest", "Token", "ApiKey", "Bearer-", "Bearers", "Bear", "OAuth", "JWT"):
        values += [f"{scheme} {data_key}", f"{scheme} {admin_key}", f"{scheme} {bootstrap}", scheme]
    for real in (data_key, admin_key):  # near misses of real keys
        key_id, secret = real.split("-")[1], real.split("-", 2)[2]
        for _ in range(100):
            values.append(f"Bearer {_flip(real, rng)}")
        values += [
            f"Bearer {real[:-1]}",
            f"Bearer {real}x",
            f"Bearer {real.upper()}",
            f"Bearer {real[:20]}",
            f"Bearer tg-{key_id}",
            f"Bearer tg-{key_id}-",
            f"Bearer tg-{key_id}-{secret[::-1]}",
            f"Bearer tg-{key_id}-{secret}-{secret}",
            f"Bearer {real}{real}",
            f"Bearer {real} {real}",
            f"Bearer {real},{real}",
            f"Bearer tg-{key_id.upper()}-{secret}",
            f"Bearer {real.replace('tg-', 'TG-')}",
            f"Bearer {real.replace('-', '_')}",
        ]
        for injection in INJECTIONS:
            values += [f"Bearer tg-{key_id}-{injection}", f"Bearer {injection}", injection]
    for _ in range(250):  # well-formed hub keys that were never issued
        key_id = "".join(rng.choice("0123456789abcdef") for _ in range(16))
        secret = "".join(rng.choice(string.ascii_letters + string.digits + "-_") for _ in range(43))
        values.append(f"Bearer tg-{key_id}-{secret}")
    for _ in range(100):  # near misses of the bootstrap key
        values.append(f"Bearer {_flip(bootstrap, rng)}")
    values += [
        f"Bearer {bootstrap[:-1]}",
        f"Bearer {bootstrap}x",
        f"Bearer {bootstrap.upper()}",
        f"Bearer  x{bootstrap}",
    ]
    values += _jwts(rng, issuer)
    for length in (129, 1024, 8191, 8192, 8193, 20_000):  # over-long
        values.append("Bearer " + "A" * length)
        values.append("Bearer tg-" + "a" * length)
    for _ in range(60):  # non-ASCII (latin-1 on the wire, as HTTP allows)
        text = "".join(
            rng.choice("éüßñøÿ€¢£¥§©®µ¶·ÀÆÐÞ" + string.ascii_letters) for _ in range(rng.randint(1, 60))
        )
        values.append(f"Bearer {text}".encode("latin-1", "replace"))
    values += ["Bearer\t" + data_key, "Bearer:" + data_key, "Bearer=" + data_key, "Bearer" + data_key]
    return values


def _jwts(rng: random.Random, issuer: Any) -> list[str | bytes]:
    now = int(time.time())
    stranger = rsa_key()
    claims = issuer.claims()
    values: list[str | bytes] = []
    for _ in range(150):
        segments = [
            "".join(
                rng.choice(string.ascii_letters + string.digits + "-_") for _ in range(rng.randint(1, 80))
            )
            for _ in range(3)
        ]
        values.append("Bearer " + ".".join(segments))
    for alg in ("none", "None", "NONE", "HS256", "HS512", "RS256", "ES256", "PS256", "EdDSA", "", "RS1"):
        for kid in ("rsa-1", "ec-1", "unknown", "", "../../etc/passwd"):
            header = _b64(json.dumps({"alg": alg, "kid": kid}).encode())
            body = _b64(json.dumps(claims).encode())
            values += [f"Bearer {header}.{body}.", f"Bearer {header}.{body}.c2lnbmF0dXJl"]
    for overrides in (
        {"exp": now - 3600},
        {"iss": "https://evil.example"},
        {"aud": "someone-else"},
        {"nbf": now + 3600},
        {"exp": None},
        {"sub": None},
    ):
        values.append(f"Bearer {issuer.token(**overrides)}")
    for n in range(40):
        values.append(f"Bearer {issuer.token(key=stranger, sub=f'forged-{n}')}")
        values.append(f"Bearer {jwt.encode(claims, stranger, algorithm='RS256', headers={'kid': f'k{n}'})}")
    return values


@pytest.fixture
def credentials(oidc_client, admin_headers) -> dict[str, str]:  # type: ignore[no-untyped-def]
    client = oidc_client
    assert (
        client.post(
            "/admin/v1/tenants", json={"id": "acme", "name": "Acme"}, headers=admin_headers
        ).status_code
        == 201
    )
    data = client.post(
        "/admin/v1/keys", json={"tenant_id": "acme", "name": "d"}, headers=admin_headers
    ).json()["key"]
    admin = client.post(
        "/admin/v1/keys", json={"name": "a", "scope": "admin", "role": "owner"}, headers=admin_headers
    ).json()["key"]
    return {"data": data, "admin": admin, "bootstrap": admin_headers["Authorization"].removeprefix("Bearer ")}


def _problem(response: Any, *, anthropic: bool = False) -> str | None:
    if response.status_code != 401:
        return f"{response.status_code} {response.text[:120]}"
    body = response.json()
    if anthropic:
        ok = body.get("type") == "error" and body["error"]["type"] == "authentication_error"
    else:
        ok = (
            set(body["error"]) == {"message", "type", "param", "code"}
            and body["error"]["type"] == "authentication_error"
        )
    return None if ok else f"401 in the wrong shape: {body}"


def test_malformed_authorization_values_are_all_401(oidc_client, issuer, credentials) -> None:
    client = oidc_client
    values = corpus(
        random.Random(SEED),
        data_key=credentials["data"],
        admin_key=credentials["admin"],
        bootstrap=credentials["bootstrap"],
        issuer=issuer,
    )
    unique = list(dict.fromkeys(values))
    assert len(unique) >= MINIMUM_VALUES, len(unique)
    chat = {"model": "fake/echo", "messages": [{"role": "user", "content": "hi"}]}

    problems: list[str] = []
    for n, value in enumerate(unique):
        for route in ("/admin/v1/tenants", "/v1/models"):
            problem = _problem(client.get(route, headers={"Authorization": value}))
            if problem:
                problems.append(f"{route} {value!r}: {problem}")
        if n % 10 == 0:
            problem = _problem(
                client.post("/v1/chat/completions", json=chat, headers={"Authorization": value})
            )
            if problem:
                problems.append(f"chat {value!r}: {problem}")

    assert problems == []
    # The corpus is no straw man: the real credentials get through the same routes.
    assert (
        client.get("/v1/models", headers={"Authorization": f"Bearer {credentials['data']}"}).status_code
        == 200
    )
    assert (
        client.get(
            "/admin/v1/tenants", headers={"Authorization": f"Bearer {credentials['admin']}"}
        ).status_code
        == 200
    )
    assert (
        client.get("/admin/v1/tenants", headers={"Authorization": f"Bearer {issuer.token()}"}).status_code
        == 200
    )


def test_malformed_x_api_key_values_are_all_401_in_anthropic_shape(oidc_client, issuer, credentials) -> None:
    client = oidc_client
    values = corpus(
        random.Random(SEED + 1),
        data_key=credentials["data"],
        admin_key=credentials["admin"],
        bootstrap=credentials["bootstrap"],
        issuer=issuer,
    )
    keys = [value.removeprefix("Bearer ") if isinstance(value, str) else value for value in values][::4]
    body = {"model": "fake/echo", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}

    problems = [
        f"{value!r}: {problem}"
        for value in dict.fromkeys(keys)
        if value
        and (
            problem := _problem(
                client.post("/v1/messages", json=body, headers={"x-api-key": value}), anthropic=True
            )
        )
    ]

    assert problems == []
    assert (
        client.post("/v1/messages", json=body, headers={"x-api-key": credentials["data"]}).status_code == 200
    )
