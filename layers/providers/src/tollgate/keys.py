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


class KeyAuthenticator:
    """Turns a presented hub key into a ``Principal``, or raises ``AuthenticationError`` (401)."""

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
        self._keys: TTLCache[KeyRecord] = TTLCache(cache_ttl, negative_ttl=min(cache_ttl, 5.0))
        self._pepper: TTLCache[bytes] = TTLCache(cache_ttl)
        self._clock = clock

    async def _record(self, key_id: str) -> KeyRecord | None:
        hit, record = self._keys.get(key_id)
        if not hit:
            record = await asyncio.to_thread(self._catalog.get_key, key_id)
            self._keys.put(key_id, record)
        return record

    async def pepper(self) -> bytes:
        hit, pepper = self._pepper.get("pepper")
        if not hit or pepper is None:
            pepper = await asyncio.to_thread(self._secrets.pepper)
            self._pepper.put("pepper", pepper)
        return pepper

    async def authenticate(self, token: str | None) -> Principal:
        if not token:
            raise AuthenticationError("Missing API key. Send 'Authorization: Bearer tg-...'.")
        parsed = parse_key(token)
        if parsed is None:
            raise AuthenticationError("Incorrect API key provided.")
        key_id, secret = parsed
        record = await self._record(key_id)
        expected = record.secret_hash if record else "0" * 64
        # Hash and compare even for unknown ids, so timing does not tell which key ids exist.
        presented = hash_secret(await self.pepper(), key_id, secret)
        if record is None or not hmac.compare_digest(presented, expected):
            raise AuthenticationError("Incorrect API key provided.")
        now = self._clock()
        if record.revoked_at is not None and record.revoked_at <= now:
            raise AuthenticationError("This API key has been revoked.", code="revoked_api_key")
        if record.expires_at is not None and record.expires_at <= now:
            raise AuthenticationError("This API key has expired.", code="expired_api_key")
        allowed = frozenset(record.allowed_models) if record.allowed_models is not None else None
        return Principal(
            tenant_id=record.tenant_id,
            key_id=record.id,
            allowed_models=allowed,
            budget=record.budget,
            limits=record.limits,
        )

    def forget(self, key_id: str) -> None:
        """Drops a cached key (this process only; others see the change within the cache TTL)."""
        self._keys.invalidate(key_id)
