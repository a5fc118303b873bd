"""Who is calling the admin plane: one of three credentials, each checked its own way.

* an **admin key** (``tg-<id>-<secret>`` with scope ``admin`` and a role): the same peppered-hash
  lookup as data-plane keys, for automation; a data-plane key is refused here, as an admin key is
  refused on the public API;
* an **OIDC bearer JWT** (three base64url segments), when an issuer is configured: see
  ``tollgate.admin.oidc``. A JWT cannot be recalled, so an owner or admin can revoke a user's
  sessions (``POST /admin/v1/sessions/revoke``): tokens issued until then are refused, in every
  process within the cache TTL;
* the **bootstrap admin key** from Secrets Manager, compared in constant time: the owner credential
  an operator starts with.

Anything else, or any failure, is an ``AuthenticationError`` (401). Blocking: call it off the loop.
"""

from __future__ import annotations

import hmac
import re
from typing import TYPE_CHECKING

from tollgate.admin.principal import BOOTSTRAP, AdminPrincipal
from tollgate.cache import TTLCache
from tollgate.errors import AuthenticationError
from tollgate.keys import KEY_PREFIX

if TYPE_CHECKING:
    from tollgate.admin.oidc import OidcVerifier
    from tollgate.keys import KeyAuthenticator
    from tollgate.store.catalog import DynamoCatalog
    from tollgate.store.secrets import SecretStore

#: Longer credentials are refused before any parsing (a large OIDC token is a few kilobytes).
MAX_ADMIN_CREDENTIAL_LENGTH = 8192
_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


class AdminAuthenticator:
    def __init__(
        self,
        *,
        keys: KeyAuthenticator,
        secrets: SecretStore,
        oidc: OidcVerifier | None,
        catalog: DynamoCatalog | None = None,
        cache_ttl: float = 30.0,
    ) -> None:
        self._keys = keys
        self._secrets = secrets
        self._oidc = oidc
        self._catalog = catalog
        #: Per signed-in user: the bound of a revocation of their sessions, or None (cached too).
        self._revocations: TTLCache[int] = TTLCache(cache_ttl)

    def forget_sessions(self, actor: str) -> None:
        """Drops this process's cached revocation state of ``actor`` (after a revocation here)."""
        self._revocations.invalidate(actor)

    def _check_session(self, principal: AdminPrincipal) -> AdminPrincipal:
        if self._catalog is None:
            return principal
        hit, bound = self._revocations.get(principal.actor)
        if not hit:
            bound = self._catalog.admin_sessions_revoked_before(principal.actor)
            self._revocations.put(principal.actor, bound)
        if bound is not None and (principal.issued_at is None or principal.issued_at <= bound):
            raise AuthenticationError("This admin session was revoked. Sign in again.")
        return principal

    def authenticate(self, token: str | None) -> AdminPrincipal:
        if not token:
            raise AuthenticationError(
                "Missing admin credentials. Send 'Authorization: Bearer <admin key or token>'."
            )
        if len(token) > MAX_ADMIN_CREDENTIAL_LENGTH or not token.isascii() or not token.isprintable():
            raise AuthenticationError("Malformed admin credentials.")
        if token.startswith(KEY_PREFIX):
            record = self._keys.authenticate_admin(token)
            assert record.role is not None  # authenticate_admin refuses keys without one
            return AdminPrincipal(
                actor=f"key:{record.id}",
                role=record.role,
                tenant_id=record.tenant_id if record.role == "tenant_admin" else None,
                allowed_models=frozenset(record.allowed_models)
                if record.allowed_models is not None
                else None,
                expires_at=record.expires_at,
            )
        if _JWT_SHAPE.fullmatch(token):
            if self._oidc is None:
                raise AuthenticationError("Admin sign-in with tokens is not configured on this deployment.")
            return self._check_session(self._oidc.verify(token))
        if not hmac.compare_digest(token.encode(), self._secrets.admin_key().encode()):
            raise AuthenticationError("Incorrect admin credentials.")
        return BOOTSTRAP
