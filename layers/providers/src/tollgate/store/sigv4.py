"""AWS Signature Version 4 for the ledger's JSON POSTs, with the signing key derived once a day.

botocore's ``SigV4Auth`` is general: it builds an ``AWSRequest``, re-parses the URL, walks every
header, and derives the signing key (four HMACs) on every call. For the ledger's requests (one
POST to ``/`` with a known handful of headers) that is ~100 µs per call, two calls per request.
This signer computes the same signature (``tests/unit/test_sigv4.py`` holds its headers equal to
botocore's for generated requests, credentials and times) from the parts directly:

* the canonical request: method, path, empty query, the lowercase sorted headers (``host``,
  ``x-amz-date``, the security token when there is one, and the caller's), their names, and the
  body's SHA-256;
* the string to sign, over the credential scope ``<day>/<region>/<service>/aws4_request``;
* the signature, with the signing key for the day, kept until the day or the secret changes.

Credentials come from botocore's chain (``get_frozen_credentials()``, refreshed as botocore
would); only the signing is done here.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from typing import Final, Protocol

ALGORITHM: Final = "AWS4-HMAC-SHA256"
#: Paths signed as they are written: unreserved characters and slashes, with no empty or dot
#: segments (botocore would normalise those, and the ledger never sends them).
_SEGMENT: Final = r"[A-Za-z0-9_~-][A-Za-z0-9._~-]*"
_CANONICAL_PATH: Final = re.compile(rf"/(?:{_SEGMENT}(?:/{_SEGMENT})*)?")
#: Headers the signer sets itself; a caller's own would be ambiguous.
_RESERVED: Final = frozenset({"host", "x-amz-date", "x-amz-security-token", "authorization"})
#: Headers sent but never signed (botocore's ``SIGNED_HEADERS_BLACKLIST``): proxies may change them.
_UNSIGNED: Final = frozenset({"expect", "transfer-encoding", "user-agent", "x-amzn-trace-id"})


class Credentials(Protocol):
    """What botocore's ``ReadOnlyCredentials`` carries."""

    @property
    def access_key(self) -> str: ...

    @property
    def secret_key(self) -> str: ...

    @property
    def token(self) -> str | None: ...


class SigV4Signer:
    """Signs requests to one service in one region. Not thread-safe (one per event loop)."""

    def __init__(self, *, region: str, service: str) -> None:
        self._region = region
        self._service = service
        self._key_for: tuple[str, str] | None = None  # (secret, day) of ``_key``
        self._key = b""

    def sign(
        self,
        credentials: Credentials,
        *,
        host: str,
        headers: dict[str, str],
        body: bytes,
        method: str = "POST",
        path: str = "/",
        now: float | None = None,
    ) -> dict[str, str]:
        """``headers`` plus ``X-Amz-Date``, ``X-Amz-Security-Token`` (with a session token) and
        ``Authorization``, exactly as botocore's ``SigV4Auth.add_auth`` would add them.

        ``host`` is the ``Host`` header the request is sent with (lowercase, without a default
        port). Raises ``ValueError`` for a path or header it would not sign as botocore does.
        """
        if not _CANONICAL_PATH.fullmatch(path):
            raise ValueError(f"cannot sign the path {path!r}")
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
        day = stamp[:8]
        canonical: dict[str, str] = {"host": host}
        for name, value in headers.items():
            lower = name.lower()
            if lower in _RESERVED or lower in canonical:
                raise ValueError(f"cannot sign the header {name!r}")
            if lower not in _UNSIGNED:
                canonical[lower] = " ".join(value.split())
        signed = dict(headers)
        signed["X-Amz-Date"] = canonical["x-amz-date"] = stamp
        if credentials.token:
            signed["X-Amz-Security-Token"] = credentials.token
            canonical["x-amz-security-token"] = " ".join(credentials.token.split())
        names = sorted(canonical)
        signed_names = ";".join(names)
        canonical_request = "\n".join(
            (
                method.upper(),
                path,
                "",
                "".join(f"{name}:{canonical[name]}\n" for name in names),
                signed_names,
                hashlib.sha256(body).hexdigest(),
            )
        )
        scope = f"{day}/{self._region}/{self._service}/aws4_request"
        string_to_sign = "\n".join(
            (ALGORITHM, stamp, scope, hashlib.sha256(canonical_request.encode()).hexdigest())
        )
        key = self._signing_key(credentials.secret_key, day)
        signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256)
        signed["Authorization"] = (
            f"{ALGORITHM} Credential={credentials.access_key}/{scope}, "
            f"SignedHeaders={signed_names}, Signature={signature.hexdigest()}"
        )
        return signed

    def _signing_key(self, secret: str, day: str) -> bytes:
        if self._key_for != (secret, day):
            key = f"AWS4{secret}".encode()
            for part in (day, self._region, self._service, "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._key, self._key_for = key, (secret, day)
        return self._key
