"""The ledger's hot path to DynamoDB, on the event loop: the JSON protocol, SigV4-signed.

A chat request makes two DynamoDB writes (the hold's ``UpdateItem`` and the settlement's
``TransactWriteItems``). Through boto3 each costs a hop to a worker thread and back, plus
botocore's validation, serialisation and parsing: ~2 ms of CPU per request, measured in
``bench/ANALYSIS.md`` (more than the rest of Tollgate's request path), and ``asyncio.to_thread``'s
default executor caps a 2-vCPU function at six calls in flight. The ledger already builds
DynamoDB's low-level JSON, so those two calls need no more than a signed POST.

Two transports share one interface (``DynamoTransport.call(operation, params)``, ``params`` in
DynamoDB's wire shape, which is also boto3's low-level one):

* ``HttpDynamo``: Tollgate's keep-alive HTTP/1.1 client (``tollgate/http1.py``), a SigV4
  signer that matches botocore's (``store/sigv4.py``) over botocore's credential chain, standard
  retries (throttling, 5xx, dropped connections; exponential backoff with full jitter). Errors are
  raised as the boto3 client's own exception classes, with the modeled members (``Item``,
  ``CancellationReasons``) where botocore puts them, so callers handle both transports alike.
  Client CPU per call, against aiohttp and botocore's signer: see ``bench/botocore_cost.py``.
* ``ThreadedDynamo``: a boto3 client off the loop, for in-process moto (tests) and anything that
  swaps the client (the benchmark's in-memory fake when asked).

Retrying a write is safe here because every ledger write is conditional and idempotent by
construction (a hold refuses a second hold of the same request; a settlement carries a
``ClientRequestToken`` reused across its retries, exactly as botocore does).
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import re
import uuid
from typing import Any, Protocol

from tollgate.http1 import Origin
from tollgate.store.sigv4 import SigV4Signer

_TARGET_PREFIX = "DynamoDB_20120810."
_CONTENT_TYPE = "application/x-amz-json-1.0"
#: Error codes DynamoDB documents as safe to retry (botocore's standard mode retries the same).
RETRYABLE_CODES = frozenset(
    {
        "ThrottlingException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "TransactionInProgressException",
    }
)
#: Members of an error body that botocore lifts into ``error.response`` (modeled error shapes).
_MODELED_ERROR_MEMBERS = ("Item", "CancellationReasons")


class DynamoTransport(Protocol):
    async def call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        """Runs ``operation`` (``"UpdateItem"``...) with wire-shaped ``params``; returns the parsed body."""
        ...

    async def close(self) -> None: ...


@functools.cache  # a handful of operation names, converted on every call otherwise
def snake_case(operation: str) -> str:
    """``TransactWriteItems`` → ``transact_write_items`` (boto3's method name)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower()


class ThreadedDynamo:
    """A boto3 DynamoDB client called in a worker thread (one hop per call)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    async def call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        response: dict[str, Any] = await asyncio.to_thread(
            getattr(self._client, snake_case(operation)), **params
        )
        return response

    async def close(self) -> None:
        return None


class HttpDynamo:
    """DynamoDB's JSON API on the running loop. ``client`` is a boto3 DynamoDB client: its
    endpoint, region and exception classes are used (never its transport); ``session`` is the
    botocore/boto3 session whose credential chain signs the requests (refreshed as botocore would)."""

    def __init__(
        self,
        client: Any,
        session: Any,
        *,
        connect_timeout: float = 2.0,
        read_timeout: float = 5.0,
        max_attempts: int = 3,
        backoff_base: float = 0.025,
        backoff_cap: float = 0.5,
    ) -> None:
        self._url: str = client.meta.endpoint_url
        self._region: str = client.meta.region_name
        self._errors = client.exceptions
        self._boto_session = session
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._max_attempts = max(1, max_attempts)
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._signer = SigV4Signer(region=self._region, service="dynamodb")
        self._origin: Origin | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _http(self) -> Origin:
        loop = asyncio.get_running_loop()
        if self._origin is None or self._loop is not loop:
            # An origin of another (finished) loop cannot be closed from this one; drop it.
            self._origin = Origin(
                self._url, connect_timeout=self._connect_timeout, read_timeout=self._read_timeout
            )
            self._loop = loop
        return self._origin

    def _signed_headers(self, origin: Origin, operation: str, body: bytes) -> dict[str, str]:
        from botocore.exceptions import NoCredentialsError

        credentials = self._boto_session.get_credentials()
        if credentials is None:
            raise NoCredentialsError()
        return self._signer.sign(
            credentials.get_frozen_credentials(),
            host=origin.host,
            headers={"Content-Type": _CONTENT_TYPE, "X-Amz-Target": _TARGET_PREFIX + operation},
            body=body,
        )

    async def call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        if operation == "TransactWriteItems" and "ClientRequestToken" not in params:
            params = {**params, "ClientRequestToken": str(uuid.uuid4())}  # one token for every retry
        body = json.dumps(params, separators=(",", ":")).encode()
        for attempt in range(self._max_attempts):
            last = attempt + 1 == self._max_attempts
            origin = self._http()
            try:  # signed for each attempt: a retry after a backoff carries a fresh date
                response = await origin.post("/", self._signed_headers(origin, operation, body), body)
            except (OSError, TimeoutError):  # http1.TransportError is an OSError
                if last:
                    raise
                await self._backoff(attempt)
                continue
            if response.status == 200:
                parsed: dict[str, Any] = json.loads(response.body) if response.body else {}
                return parsed
            error, code = self._error(operation, response.status, response.body)
            if last or not (response.status >= 500 or code in RETRYABLE_CODES):
                raise error
            await self._backoff(attempt)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _error(self, operation: str, status: int, raw: bytes) -> tuple[Exception, str]:
        """The boto3 client's exception for an error body, shaped as botocore would parse it."""
        try:
            payload = json.loads(raw) if raw else {}
        except ValueError:
            payload = {}
        if not isinstance(payload, dict):
            payload = {}
        code = str(payload.get("__type", "")).rpartition("#")[2] or (
            "InternalServerError" if status >= 500 else f"HTTP{status}"
        )
        message = payload.get("message") or payload.get("Message") or ""
        response: dict[str, Any] = {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        }
        for member in _MODELED_ERROR_MEMBERS:
            if member in payload:
                response[member] = payload[member]
        error: Exception = self._errors.from_code(code)(response, operation)
        return error, code

    async def _backoff(self, attempt: int) -> None:
        ceiling = min(self._backoff_cap, self._backoff_base * 2**attempt)
        await asyncio.sleep(random.uniform(0, ceiling))  # noqa: S311 - jitter, not a secret

    async def close(self) -> None:
        if self._origin is not None:
            await self._origin.close()
        self._origin = None
