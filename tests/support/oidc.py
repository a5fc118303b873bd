"""A local OIDC issuer for tests: freshly generated keys, a discovery document and a JWKS, served over
HTTP on loopback (Tollgate accepts that only with ``oidc_allow_insecure_issuer``, a test-only setting),
and tokens signed with those keys, or deliberately wrong ones."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

AUDIENCE = "tollgate-test-client"


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class LocalIssuer:
    """``url`` is the issuer; ``keys`` are published in the JWKS by kid; ``hits`` counts requests."""

    def __init__(self) -> None:
        self.signing_key = rsa_key()
        self.ec_key = ec.generate_private_key(ec.SECP256R1())
        self.keys: dict[str, Any] = {"rsa-1": self.signing_key, "ec-1": self.ec_key}
        #: kid -> "alg" to declare in the JWK (absent: none declared).
        self.declared_algs: dict[str, str] = {"rsa-1": "RS256"}
        self.hits: Counter[str] = Counter()
        #: When set, every request is answered with a redirect to this URL.
        self.redirect_to: str | None = None
        self._server: ThreadingHTTPServer | None = None

    # -- the server --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_port}"

    def jwks(self) -> dict[str, Any]:
        published = []
        for kid, key in self.keys.items():
            public = key.public_key()
            algorithm = RSAAlgorithm if isinstance(public, rsa.RSAPublicKey) else ECAlgorithm
            entry: dict[str, Any] = json.loads(algorithm.to_jwk(public))
            entry |= {"kid": kid, "use": "sig"}
            if kid in self.declared_algs:
                entry["alg"] = self.declared_algs[kid]
            published.append(entry)
        return {"keys": published}

    def start(self) -> LocalIssuer:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                issuer.hits[self.path] += 1
                if issuer.redirect_to is not None:
                    self.send_response(302)
                    self.send_header("Location", issuer.redirect_to)
                    self.end_headers()
                    return
                if self.path == "/.well-known/openid-configuration":
                    body = {"issuer": issuer.url, "jwks_uri": f"{issuer.url}/jwks.json"}
                elif self.path == "/jwks.json":
                    body = issuer.jwks()
                else:
                    self.send_error(404)
                    return
                payload = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, name="oidc-issuer", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def jwks_fetches(self) -> int:
        return self.hits["/jwks.json"]

    # -- tokens ------------------------------------------------------------------------------

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.url,
            "aud": AUDIENCE,
            "sub": "user-1",
            "iat": now,
            "exp": now + 300,
            "groups": ["tollgate-owner"],
        }
        claims.update(overrides)
        return {name: value for name, value in claims.items() if value is not None}

    def token(
        self,
        *,
        kid: str = "rsa-1",
        alg: str = "RS256",
        key: Any = None,
        headers: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        signing = key if key is not None else self.keys[kid]
        return jwt.encode(
            self.claims(**claims), signing, algorithm=alg, headers={"kid": kid, **(headers or {})}
        )

    def cognito_access_token(self, **claims: Any) -> str:
        """A token shaped like a Cognito user pool's access token: no ``aud``, but ``client_id`` and
        ``token_use: access``, and the groups in ``cognito:groups``."""
        defaults: dict[str, Any] = {
            "aud": None,
            "groups": None,
            "client_id": AUDIENCE,
            "token_use": "access",
            "scope": "aws.cognito.signin.user.admin",
            "username": "user-1",
            "cognito:groups": ["tollgate-owner"],
        }
        return self.token(**(defaults | claims))

    def cognito_id_token(self, **claims: Any) -> str:
        """A token shaped like a Cognito ID token: ``aud`` is the app client, ``token_use: id``."""
        defaults: dict[str, Any] = {"groups": None, "token_use": "id", "cognito:groups": ["tollgate-owner"]}
        return self.token(**(defaults | claims))


@contextmanager
def local_issuer() -> Iterator[LocalIssuer]:
    issuer = LocalIssuer().start()
    try:
        yield issuer
    finally:
        issuer.stop()


def oidc_settings(issuer: LocalIssuer, **extra: Any) -> dict[str, Any]:
    """The settings overrides that point Tollgate at ``issuer``."""
    return {
        "oidc_issuer": issuer.url,
        "oidc_audience": AUDIENCE,
        "oidc_allow_insecure_issuer": True,
        **extra,
    }


def cognito_settings(issuer: LocalIssuer, **extra: Any) -> dict[str, Any]:
    """The settings the CDK stack gives the admin function (``infra/auth.py``), pointed at ``issuer``
    standing in for the Cognito user pool."""
    return oidc_settings(
        issuer,
        oidc_cognito=True,
        oidc_groups_claim="cognito:groups",
        oidc_tenant_claim="custom:tenant_id",
        **extra,
    )
