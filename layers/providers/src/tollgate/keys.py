"""Hub API keys: ``tg-<key id>-<secret>``.

Only an HMAC-SHA256 of the secret is stored, keyed with a pepper held in Secrets Manager, so a
copy of the catalog table alone cannot authenticate anything. Lookup is one ``GetItem`` by key
id (cached), then a constant-time compare.

>>> issued = new_key()
>>> parse_key(issued.token) == (issued.key_id, issued.secret)
True
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from tollgate.cache import TTLCache
from tollgate.errors import AuthenticationError

if TYPE_CHECKING:
    from tollgate.store.catalog import DynamoCatalog
    from tollgate.store.records import Budget, KeyLimits, KeyRecord
    from tollgate.store.secrets import SecretStore

KEY_PREFIX = "tg-"
_KEY_ID_BYTES = 8
_SECRET_BYTES = 32
_TOKEN = re.compile(r"tg-([0-9a-f]{16})-([A-Za-z0-9_-]{43})")
#: Longer credentials are refused before any parsing or lookup.
MAX_TOKEN_LENGTH = 128


@dataclass(frozen=True, slots=True)
class IssuedKey:
    key_id: str
    secret: str

    @property
    def token(self) -> str:
        return f"{KEY_PREFIX}{self.key_id}-{self.secret}"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling the data plane: a tenant, through one of its keys."""

    tenant_id: str
    key_id: str
    allowed_models: frozenset[str] | None
    budget: Budget | None = None
    limits: KeyLimits | None = None

    def may_use(self, model: str) -> bool:
        return self.allowed_models is None or model in self.allowed_models


def new_key() -> IssuedKey:
    return IssuedKey(key_id=secrets.token_hex(_KEY_ID_BYTES), secret=secrets.token_urlsafe(_SECRET_BYTES))


def parse_key(token: str) -> tuple[str, str] | None:
    """``(key id, secret)`` of a well-formed hub key, else ``None``."""
    if len(token) > MAX_TOKEN_LENGTH:
        return None
    match = _TOKEN.fullmatch(token)
    return (match.group(1), match.group(2)) if match else None


def hash_secret(pepper: bytes, key_id: str, secret: str) -> str:
    return hmac.new(pepper, f"{key_id}.{secret}".encode(), hashlib.sha256).hexdigest()


#: After a presented secret fails to match a cached key, the key is re-read at most this often, so a
#: rotation is seen at once while wrong secrets cannot turn into one database read each.
REFRESH_AFTER_MISMATCH_SECONDS = 5.0
_NO_HASH = "0" * 64


def secret_matches(record: KeyRecord, presented_hash: str, now: float) -> bool:
    """The current secret, or the previous one while its rotation grace lasts. Constant time."""
    current = hmac.compare_digest(presented_hash, record.secret_hash)
    previous = record.previous_secret_hash or _NO_HASH
    in_grace = record.previous_valid_until is not None and now < record.previous_valid_until
    return current or (hmac.compare_digest(presented_hash, previous) and in_grace)


class KeyAuthenticator:
    """Turns a presented hub key into a ``Principal`` (data plane) or an admin key's record (admin
    plane), or raises ``AuthenticationError`` (401). A key works on its own plane only.

    Records are cached for ``cache_ttl`` seconds (at most 60, ``Settings.cache_ttl_seconds``), which
    bounds how long a revocation takes to reach every process; ``clock`` drives expiry, grace periods
    and the cache alike, so tests can move time.
    """

    def __init__(
        self,
        catalog: DynamoCatalog,
        secrets_store: SecretStore,
        *,
        cache_ttl: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._catalog = catalog
        self._secrets = secrets_store
        self._keys: TTLCache[KeyRecord] = TTLCache(cache_ttl, negative_ttl=min(cache_ttl, 5.0), clock=clock)
        self._pepper: TTLCache[bytes] = TTLCache(cache_ttl, clock=clock)
        self._refreshed: TTLCache[bool] = TTLCache(REFRESH_AFTER_MISMATCH_SECONDS, clock=clock)
        self._clock = clock

    # -- lookups (the async forms keep cache hits off the thread pool) -------------------------

    def _load(self, key_id: str) -> KeyRecord | None:
        record = self._catalog.get_key(key_id)
        self._keys.put(key_id, record)
        return record

    def _cached(self, key_id: str) -> tuple[bool, KeyRecord | None]:
        return self._keys.get(key_id)

    def _pepper_sync(self) -> bytes:
        hit, pepper = self._pepper.get("pepper")
        if not hit or pepper is None:
            pepper = self._secrets.pepper()
            self._pepper.put("pepper", pepper)
        return pepper

    async def pepper(self) -> bytes:
        pepper = await self._pepper.load("pepper", self._secrets.pepper)
        if pepper is None:  # the store raises rather than answer nothing; a guard for the type checker
            raise RuntimeError("no pepper")
        return pepper

    def _should_refresh(self, record: KeyRecord | None, presented: str, now: float) -> bool:
        """A live key whose secret did not match may have been rotated elsewhere: re-read it, rarely."""
        if record is None or secret_matches(record, presented, now):
            return False
        hit, _ = self._refreshed.get(record.id)
        if hit:
            return False
        self._refreshed.put(record.id, True)
        return True

    # -- the two planes ------------------------------------------------------------------------

    async def authenticate(self, token: str | None) -> Principal:
        """The data plane: a ``data`` key, live, with its secret (or its previous one in grace)."""
        key_id, secret = _parse(token)
        record = await self._keys.load(key_id, partial(self._catalog.get_key, key_id))
        # Hash and compare even for unknown ids, so timing does not tell which key ids exist.
        presented = hash_secret(await self.pepper(), key_id, secret)
        now = self._clock()
        if self._should_refresh(record, presented, now):
            record = await asyncio.to_thread(self._load, key_id)
        record = _live(record, presented, now)
        if record.scope != "data" or record.tenant_id is None:
            raise AuthenticationError("An admin key cannot call the public API; use a data-plane key.")
        allowed = frozenset(record.allowed_models) if record.allowed_models is not None else None
        return Principal(
            tenant_id=record.tenant_id,
            key_id=record.id,
            allowed_models=allowed,
            budget=record.budget,
            limits=record.limits,
        )

    def authenticate_admin(self, token: str) -> KeyRecord:
        """The admin plane (blocking): an ``admin`` key with a role, live, with its secret."""
        key_id, secret = _parse(token)
        hit, record = self._cached(key_id)
        if not hit:
            record = self._load(key_id)
        presented = hash_secret(self._pepper_sync(), key_id, secret)
        now = self._clock()
        if self._should_refresh(record, presented, now):
            record = self._load(key_id)
        record = _live(record, presented, now)
        if record.scope != "admin" or record.role is None:
            raise AuthenticationError("A data-plane key cannot call the admin API; use an admin key.")
        return record

    def forget(self, key_id: str) -> None:
        """Drops a cached key (this process only; others see the change within the cache TTL)."""
        self._keys.invalidate(key_id)


def _parse(token: str | None) -> tuple[str, str]:
    if not token:
        raise AuthenticationError("Missing API key. Send 'Authorization: Bearer tg-...'.")
    parsed = parse_key(token)
    if parsed is None:
        raise AuthenticationError("Incorrect API key provided.")
    return parsed


def _live(record: KeyRecord | None, presented: str, now: float) -> KeyRecord:
    """The record, if the presented hash matches and the key is neither revoked nor expired."""
    if record is None:
        hmac.compare_digest(presented, _NO_HASH)  # the same work as for a known key
        raise AuthenticationError("Incorrect API key provided.")
    if not secret_matches(record, presented, now):
        raise AuthenticationError("Incorrect API key provided.")
    if record.revoked_at is not None and record.revoked_at <= now:
        raise AuthenticationError("This API key has been revoked.", code="revoked_api_key")
    if record.expires_at is not None and record.expires_at <= now:
        raise AuthenticationError("This API key has expired.", code="expired_api_key")
    return record
