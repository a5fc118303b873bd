"""Admin sign-in: OIDC / OAuth 2.0 bearer JWTs, verified against the issuer's published keys.

A token is accepted only when all of these hold:

* its header names an asymmetric algorithm Tollgate allows (never ``none``, never HMAC, whose
  "key" would be the public key anyone can read) and a ``kid`` the issuer's JWKS publishes, of the
  matching key type (and algorithm, when the JWK declares one);
* its signature verifies with that key;
* ``iss`` is exactly the configured issuer, ``aud`` contains the configured audience, and ``exp``,
  ``iat`` and ``sub`` are present, with ``exp``/``nbf``/``iat`` checked within a small leeway;
* for a Cognito user pool (``Settings.oidc_is_cognito``), ``token_use`` says which token it is: an
  ID token (``id``) needs the audience as above; an access token (``access``) has no ``aud`` but a
  ``client_id``, which must be the configured app client;
* the groups claim maps to a Tollgate role, and a ``tenant_admin`` names its tenant.

The JWKS is fetched lazily (never at import or cold start) over HTTPS, with no redirects and a size
cap, and cached. A key id the cache does not know triggers a refetch, but at most one fetch attempt
happens per ``min_refresh`` seconds, so forged key ids cannot turn into a flood of requests to the
issuer. ``allow_insecure`` admits an ``http://`` issuer on loopback; it exists for tests only.

>>> verifier = OidcVerifier.from_settings(settings)          # doctest: +SKIP
>>> verifier.verify(id_token)                                 # doctest: +SKIP
AdminPrincipal(actor='oidc:https://issuer.example#user-1', role='admin', tenant_id=None, ...)
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import jwt

from tollgate.admin.principal import ROLES, AdminPrincipal, Role
from tollgate.errors import AuthenticationError, PermissionDeniedError, ServiceUnavailableError
from tollgate.observability import logger

if TYPE_CHECKING:
    from tollgate.settings import Settings

#: Asymmetric algorithms only, by the key type they need.
ALGORITHM_KEY_TYPES: dict[str, str] = {
    "RS256": "RSA",
    "RS384": "RSA",
    "RS512": "RSA",
    "PS256": "RSA",
    "PS384": "RSA",
    "PS512": "RSA",
    "ES256": "EC",
    "ES384": "EC",
    "ES512": "EC",
}
#: Claims every admin token carries (besides ``aud`` or, for Cognito, ``token_use``).
_REQUIRED = ("exp", "iat", "iss", "sub")
MAX_DOCUMENT_BYTES = 256 * 1024
FETCH_TIMEOUT_SECONDS = 3.0
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

JsonFetch = Callable[[str], Any]


class NoAdminRoleError(PermissionDeniedError):
    """A valid token whose user holds no Tollgate role (or a tenant_admin without a tenant)."""

    def __init__(self, message: str, *, actor: str) -> None:
        super().__init__(message, code="no_admin_role")
        self.actor = actor


def _invalid(message: str) -> AuthenticationError:
    return AuthenticationError(message, code="invalid_token")


def check_issuer_url(url: str, *, allow_insecure: bool) -> None:
    """HTTPS only; plain HTTP on loopback when ``allow_insecure`` (tests). Raises ``ValueError``."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if allow_insecure and parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS:
        return
    raise ValueError("OIDC issuer and JWKS URLs must use https")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an error: the JWKS comes from the URL that was configured or discovered."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def fetch_json(url: str, *, allow_insecure: bool) -> Any:
    """GET a JSON document over HTTPS, with a timeout and a size cap, following no redirect."""
    check_issuer_url(url, allow_insecure=allow_insecure)
    # No proxy from the environment, no redirect handler that follows.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
    request = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": "tollgate"})  # noqa: S310  # scheme checked above
    with opener.open(request, timeout=FETCH_TIMEOUT_SECONDS) as response:
        if response.status != 200:
            raise ValueError(f"the issuer answered {response.status}")
        body = response.read(MAX_DOCUMENT_BYTES + 1)
    if len(body) > MAX_DOCUMENT_BYTES:
        raise ValueError("the issuer's document is too large")
    return json.loads(body)


@dataclass(frozen=True, slots=True)
class SigningKey:
    jwk: jwt.PyJWK
    key_type: str
    #: The algorithm the JWK itself declares, if any.
    declared_alg: str | None


class JwksCache:
    """The issuer's signing keys by ``kid``: fetched lazily, cached, refreshed at a bounded rate."""

    def __init__(
        self,
        *,
        issuer: str,
        jwks_url: str | None,
        fetch: JsonFetch,
        ttl: float,
        min_refresh: float,
        allow_insecure: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._issuer = issuer
        self._jwks_url = jwks_url
        self._fetch = fetch
        self._ttl = ttl
        self._min_refresh = min_refresh
        self._allow_insecure = allow_insecure
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, SigningKey] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        #: How many times the issuer was asked for keys (discovery and JWKS alike); for tests and logs.
        self.fetches = 0

    def signing_key(self, kid: str) -> SigningKey:
        with self._lock:
            now = self._clock()
            fresh = self._fetched_at is not None and now - self._fetched_at < self._ttl
            may_fetch = self._attempted_at is None or now - self._attempted_at >= self._min_refresh
            if (kid not in self._keys or not fresh) and may_fetch:
                self._refresh(now)
            key = self._keys.get(kid)
        if key is None:
            if self._fetched_at is None:
                raise ServiceUnavailableError(
                    "Admin sign-in is unavailable: the issuer's keys could not be read."
                )
            raise _invalid("The admin token is signed with a key the issuer does not publish.")
        return key

    def _refresh(self, now: float) -> None:
        self._attempted_at = now
        try:
            url = self._jwks_url or self._discover()
            document = self._get(url)
            keys = _parse_jwks(document)
        except Exception as error:  # any failure keeps the keys we have, until the next attempt
            logger.warning("could not refresh the OIDC signing keys", extra={"reason": type(error).__name__})
            return
        self._keys, self._fetched_at = keys, now

    def _discover(self) -> str:
        document = self._get(f"{self._issuer.rstrip('/')}/.well-known/openid-configuration")
        if not isinstance(document, dict) or document.get("issuer") != self._issuer:
            raise ValueError("the discovery document names another issuer")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise ValueError("the discovery document has no jwks_uri")
        check_issuer_url(jwks_uri, allow_insecure=self._allow_insecure)
        self._jwks_url = jwks_uri
        return jwks_uri

    def _get(self, url: str) -> Any:
        self.fetches += 1
        return self._fetch(url)


def _parse_jwks(document: Any) -> dict[str, SigningKey]:
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document")
    keys: dict[str, SigningKey] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict):
            continue
        kid, kty = entry.get("kid"), entry.get("kty")
        if not isinstance(kid, str) or kty not in ("RSA", "EC") or entry.get("use", "sig") != "sig":
            continue
        if any(name in entry for name in ("d", "p", "q")):
            continue  # a private key has no business in a JWKS; never use one
        declared = entry.get("alg")
        if declared is not None and declared not in ALGORITHM_KEY_TYPES:
            continue
        try:
            keys[kid] = SigningKey(jwk=jwt.PyJWK(entry), key_type=str(kty), declared_alg=declared)
        except jwt.PyJWKError:
            continue
    return keys


#: Why PyJWT refused a token, in the words the caller sees (most specific first).
_REFUSALS: tuple[tuple[type[jwt.InvalidTokenError], str], ...] = (
    (jwt.ExpiredSignatureError, "The admin token has expired."),
    (jwt.ImmatureSignatureError, "The admin token is not valid yet."),
    (jwt.InvalidAudienceError, "The admin token is for another audience."),
    (jwt.InvalidIssuerError, "The admin token is from another issuer."),
    (jwt.InvalidSignatureError, "The admin token's signature does not verify."),
    (jwt.MissingRequiredClaimError, "The admin token lacks a required claim."),
)


def _refusal(error: jwt.InvalidTokenError) -> str:
    return next(
        (message for kind, message in _REFUSALS if isinstance(error, kind)), "The admin token is not valid."
    )


class OidcVerifier:
    """Verifies an admin JWT and maps it to an ``AdminPrincipal``. Blocking (a JWKS fetch may run)."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        jwks: JwksCache,
        groups_claim: str,
        role_groups: Mapping[str, Role],
        tenant_claim: str,
        leeway: float,
        cognito: bool = False,
    ) -> None:
        self._issuer = issuer
        self._cognito = cognito
        self._audience = audience
        self._jwks = jwks
        self._groups_claim = groups_claim
        self._role_groups = dict(role_groups)
        self._tenant_claim = tenant_claim
        self._leeway = leeway

    @classmethod
    def from_settings(cls, settings: Settings, *, fetch: JsonFetch | None = None) -> OidcVerifier | None:
        """The verifier the settings describe, or None when no issuer is configured."""
        issuer, audience = settings.oidc_issuer, settings.oidc_audience
        if not issuer or not audience:
            return None
        insecure = settings.oidc_allow_insecure_issuer
        check_issuer_url(issuer, allow_insecure=insecure)
        if settings.oidc_jwks_url:
            check_issuer_url(settings.oidc_jwks_url, allow_insecure=insecure)

        def default_fetch(url: str) -> Any:
            return fetch_json(url, allow_insecure=insecure)

        jwks = JwksCache(
            issuer=issuer,
            jwks_url=settings.oidc_jwks_url,
            fetch=fetch or default_fetch,
            ttl=settings.oidc_jwks_cache_seconds,
            min_refresh=settings.oidc_jwks_min_refresh_seconds,
            allow_insecure=insecure,
        )
        return cls(
            issuer=issuer,
            audience=audience,
            jwks=jwks,
            groups_claim=settings.oidc_groups_claim,
            role_groups=settings.oidc_role_groups,
            tenant_claim=settings.oidc_tenant_claim,
            leeway=settings.oidc_leeway_seconds,
            cognito=settings.oidc_is_cognito,
        )

    @property
    def jwks(self) -> JwksCache:
        return self._jwks

    def verify(self, token: str) -> AdminPrincipal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise _invalid("The admin token is malformed.") from None
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in ALGORITHM_KEY_TYPES:
            raise _invalid("The admin token's signing algorithm is not allowed.")
        if not isinstance(kid, str) or not 0 < len(kid) <= 256:
            raise _invalid("The admin token names no signing key.")
        key = self._jwks.signing_key(kid)
        if key.key_type != ALGORITHM_KEY_TYPES[alg] or (key.declared_alg not in (None, alg)):
            raise _invalid("The admin token's algorithm does not match its signing key.")
        if self._cognito:  # the audience depends on token_use: checked below, by ``_check_client``
            audience, options = None, {"verify_aud": False, "require": [*_REQUIRED, "token_use"]}
        else:
            audience, options = self._audience, {"require": [*_REQUIRED, "aud"]}
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key.jwk.key,
                algorithms=[alg],
                audience=audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options=options,  # type: ignore[arg-type]  # PyJWT's Options TypedDict
            )
        except jwt.InvalidTokenError as error:
            raise _invalid(_refusal(error)) from None
        if self._cognito:
            self._check_client(claims)
        return self._principal(claims)

    def _check_client(self, claims: dict[str, Any]) -> None:
        """A Cognito token is for our app client: an ID token by ``aud``, an access token (which
        has no ``aud``) by ``client_id``. Any other ``token_use`` (or none) is refused."""
        use = claims.get("token_use")
        if use == "id":
            audience = claims.get("aud")
            if audience != self._audience and not (isinstance(audience, list) and self._audience in audience):
                raise _invalid("The admin token is for another audience.")
        elif use == "access":
            if "aud" in claims:  # Cognito's access tokens carry none: this one is for a resource server
                raise _invalid("The admin token is for another audience.")
            if claims.get("client_id") != self._audience:
                raise _invalid("The admin token is for another app client.")
        else:
            raise _invalid("The admin token is neither an ID token nor an access token.")

    def _principal(self, claims: dict[str, Any]) -> AdminPrincipal:
        subject = claims.get("sub")
        if not isinstance(subject, str) or not 0 < len(subject) <= 256:
            raise _invalid("The admin token's subject is not valid.")
        actor = f"oidc:{self._issuer}#{subject}"
        groups = claims.get(self._groups_claim)
        if isinstance(groups, str):
            groups = [groups]
        if not isinstance(groups, list):
            groups = []
        roles = {
            self._role_groups[group]
            for group in groups
            if isinstance(group, str) and group in self._role_groups
        }
        role = next((candidate for candidate in ROLES if candidate in roles), None)
        if role is None:
            raise NoAdminRoleError("This user is in no Tollgate admin group.", actor=actor)
        tenant_id = None
        if role == "tenant_admin":
            tenant = claims.get(self._tenant_claim)
            if not isinstance(tenant, str) or not _TENANT.fullmatch(tenant):
                raise NoAdminRoleError("This tenant admin's token names no valid tenant.", actor=actor)
            tenant_id = tenant
        issued_at = claims.get("iat")
        return AdminPrincipal(
            actor=actor,
            role=role,
            tenant_id=tenant_id,
            issued_at=int(issued_at) if isinstance(issued_at, int | float) else None,
        )
