"""The ledger table: credit accounts, budget periods, holds, immutable entries, rate windows and
client idempotency keys (see ``store.schema``).

Every write that moves money is conditional, so it holds across any number of concurrent
Lambdas:

* a **hold** is one ``UpdateItem`` per account: it reserves an amount on the condition that
  enough is available and that this request holds nothing yet (``hold_<request id>``);
* a **settlement** is one ``TransactWriteItems``: it releases every hold of the request, writes
  the charge entry and the usage record, on the condition that the holds still exist. A second
  settlement of the same request (a retry, or the sweeper racing a slow process) fails that
  condition and changes nothing.

Those two are the request's hot path and have ``async`` forms (``hold_account_async``,
``settle_async``) that go through a ``DynamoTransport`` (``store.dynamo_http``: DynamoDB's JSON API
on the event loop, or boto3 in a thread); the same pure builders make both forms' parameters.

Amounts are integer micro-units (``tollgate.money``). The conditions use no arithmetic, which
DynamoDB does not allow: budget accounts keep a running ``remaining`` for that reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from tollgate.errors import (
    ConflictError,
    InsufficientCreditsError,
    RateLimitError,
    ServiceUnavailableError,
)
from tollgate.store.dynamo import from_item, to_attribute, to_item
from tollgate.store.dynamo_http import DynamoTransport, ThreadedDynamo
from tollgate.store.records import UsageRecord
from tollgate.store.schema import LEDGER
from tollgate.store.usage import usage_item

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

ACCOUNT_SHARDS = 8
#: How long a finished budget period's item is kept (then DynamoDB's TTL removes it).
BUDGET_RETENTION_SECONDS = 35 * 86_400
HOLD_PREFIX = "hold_"
_ACCOUNTS_INDEX = LEDGER.indexes[0].name
_CONFLICT_RETRIES = 6

AccountKind = Literal["credits", "budget"]
EntryKind = Literal["grant", "topup", "adjust", "starter", "charge", "expire"]


def account_shard(pk: str) -> str:
    return f"ACCOUNTS#{zlib.crc32(pk.encode()) % ACCOUNT_SHARDS}"


@dataclass(frozen=True, slots=True)
class AccountRef:
    """One account a request holds money on: the tenant's credits, or a budget period."""

    pk: str
    sk: str
    kind: AccountKind
    #: Budgets only: the cap of this period, and when the period ends (epoch seconds).
    limit_micros: int = 0
    period_end: int = 0

    @classmethod
    def credits(cls, tenant_id: str) -> AccountRef:
        return cls(pk=f"TENANT#{tenant_id}", sk="ACCOUNT", kind="credits")


@dataclass(frozen=True, slots=True)
class LimitClaim:
    """A key's rate limits, claimed at admission (per UTC minute window)."""

    key_id: str
    window: int
    tokens: int
    rpm: int | None
    tpm: int | None
    max_concurrency: int | None


@dataclass(frozen=True, slots=True)
class Hold:
    request_id: str
    tenant_id: str
    key_id: str
    model: str
    amount_micros: int
    created_at_ms: int
    expires_at_ms: int
    accounts: tuple[AccountRef, ...] = ()
    #: Whether the key's concurrency counter was raised (and must be lowered at settlement).
    inflight: bool = False
    idempotency: str | None = None
    #: What the sweeper needs to write a usage record for a hold its process never settled.
    provider: str | None = None
    upstream_model: str | None = None
    endpoint: str = "chat.completions"
    stream: bool = False
    cost_micros: int = 0

    @property
    def attribute(self) -> str:
        return f"{HOLD_PREFIX}{self.request_id}"

    def to_value(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "tenant_id": self.tenant_id,
            "key_id": self.key_id,
            "model": self.model,
            "amount_micros": self.amount_micros,
            "created_at_ms": self.created_at_ms,
            "expires_at_ms": self.expires_at_ms,
            "accounts": [[a.pk, a.sk, a.kind] for a in self.accounts],
            "inflight": self.inflight,
            "idempotency": self.idempotency,
            "provider": self.provider,
            "upstream_model": self.upstream_model,
            "endpoint": self.endpoint,
            "stream": self.stream,
            "cost_micros": self.cost_micros,
        }

    @classmethod
    def from_value(cls, value: dict[str, Any]) -> Hold:
        accounts = tuple(AccountRef(pk=pk, sk=sk, kind=kind) for pk, sk, kind in value.get("accounts", []))
        return cls(
            request_id=value["request_id"],
            tenant_id=value["tenant_id"],
            key_id=value["key_id"],
            model=value["model"],
            amount_micros=value["amount_micros"],
            created_at_ms=value["created_at_ms"],
            expires_at_ms=value["expires_at_ms"],
            accounts=accounts,
            inflight=bool(value.get("inflight")),
            idempotency=value.get("idempotency"),
            provider=value.get("provider"),
            upstream_model=value.get("upstream_model"),
            endpoint=value.get("endpoint", "chat.completions"),
            stream=bool(value.get("stream")),
            cost_micros=value.get("cost_micros", 0),
        )


@dataclass(frozen=True, slots=True)
class Settlement:
    """How a request ends: what it is charged (0 voids it), and its usage record."""

    hold: Hold | None
    charge_micros: int
    usage: UsageRecord
    #: Credit mode: write a ``charge`` entry for ``charge_micros``.
    entry: bool = False
    idempotency_response: tuple[str, str] | None = None  # (content type, body) to replay


@dataclass(frozen=True, slots=True)
class Account:
    tenant_id: str
    available_micros: int
    held_micros: int
    charged_micros: int
    starter_granted_micros: int = 0
    starter_expires_at: int | None = None


@dataclass(frozen=True, slots=True)
class Entry:
    tenant_id: str
    kind: EntryKind
    amount_micros: int
    created_at_ms: int
    reference: str
    note: str | None = None
    actor: str | None = None


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    request_hash: str
    status: Literal["in_progress", "complete"]
    request_id: str
    content_type: str | None = None
    body: str | None = None


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}


def _s(value: str) -> dict[str, str]:
    return {"S": value}


class DynamoLedger:
    """Blocking (boto3): call it off the event loop, except the ``*_async`` methods, which run on it."""

    def __init__(
        self,
        client: DynamoDBClient,
        table: str,
        *,
        usage_table: str,
        usage_retention_days: int,
        transport: DynamoTransport | None = None,
    ) -> None:
        self._client = client
        self._transport = transport or ThreadedDynamo(client)
        self._table = table
        self._usage_table = usage_table
        self._usage_retention_seconds = usage_retention_days * 86_400

    # -- errors ----------------------------------------------------------------------------------

    def _unavailable(self, error: Exception) -> ServiceUnavailableError:
        """DynamoDB throttled or unreachable: fail closed, never admit without a ledger."""
        return ServiceUnavailableError(
            "The ledger is temporarily unavailable. Retry shortly.",
            code="ledger_unavailable",
            headers={"Retry-After": "1"},
        )

    def _translate(self, error: Exception) -> Exception:
        """What a failed call raises: condition failures and validation errors as they are (the
        callers decide), anything else (throttling, a missing table, the network) as a 503."""
        exceptions = self._client.exceptions
        if isinstance(
            error, exceptions.ConditionalCheckFailedException | exceptions.TransactionCanceledException
        ):
            return error
        if _is_client_error(error, {"ValidationException"}) and not isinstance(
            error, exceptions.ResourceNotFoundException
        ):
            return error
        return self._unavailable(error)

    def _call(self, operation: str, **arguments: Any) -> Any:
        try:
            return getattr(self._client, operation)(**arguments)
        except Exception as error:
            problem = self._translate(error)
            if problem is error:
                raise
            raise problem from error

    async def _call_async(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        try:
            return await self._transport.call(operation, params)
        except Exception as error:
            problem = self._translate(error)
            if problem is error:
                raise
            raise problem from error

    # -- admission ---------------------------------------------------------------------------------

    def hold_account(self, account: AccountRef, hold: Hold, *, now_ms: int) -> int | None:
        """Reserves ``hold.amount_micros`` on one account. Returns the credits left, for credits.

        Raises ``InsufficientCreditsError`` (credits) or ``RateLimitError`` (budget).
        """
        params = self._hold_params(account, hold, now_ms=now_ms)
        try:
            response = self._call("update_item", **params)
        except self._client.exceptions.ConditionalCheckFailedException as error:
            return self._hold_refused(error, account, hold)
        return _credits_left(response, hold.amount_micros)

    async def hold_account_async(self, account: AccountRef, hold: Hold, *, now_ms: int) -> int | None:
        """``hold_account`` on the event loop, through the transport."""
        params = self._hold_params(account, hold, now_ms=now_ms)
        try:
            response = await self._call_async("UpdateItem", params)
        except self._client.exceptions.ConditionalCheckFailedException as error:
            return self._hold_refused(error, account, hold)
        return _credits_left(response, hold.amount_micros)

    def _hold_params(self, account: AccountRef, hold: Hold, *, now_ms: int) -> dict[str, Any]:
        amount = hold.amount_micros
        names = {"#h": hold.attribute}
        values: dict[str, Any] = {
            ":w": _n(amount),
            ":hold": to_attribute(hold.to_value()),
            ":now": _n(now_ms),
        }
        if account.kind == "credits":
            update = "SET available = available - :w, held = held + :w, #h = :hold, updated_at = :now"
            condition = "available >= :w AND attribute_not_exists(#h)"
        else:
            if amount > account.limit_micros:
                raise _budget_exceeded(account)
            update = (
                "SET remaining = if_not_exists(remaining, :limit) - :w,"
                " held = if_not_exists(held, :zero) + :w,"
                " spent = if_not_exists(spent, :zero), #h = :hold, account_shard = :shard,"
                " expires_at = :exp, updated_at = :now"
            )
            condition = "attribute_not_exists(#h) AND (attribute_not_exists(remaining) OR remaining >= :w)"
            values |= {
                ":limit": _n(account.limit_micros),
                ":zero": _n(0),
                ":shard": _s(account_shard(account.pk)),
                ":exp": _n(account.period_end + BUDGET_RETENTION_SECONDS),
            }
        return {
            "TableName": self._table,
            "Key": {"pk": _s(account.pk), "sk": _s(account.sk)},
            "UpdateExpression": update,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            # The old values of what it updated: the hold's map is new, so it is not echoed back.
            "ReturnValues": "UPDATED_OLD",
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }

    @staticmethod
    def _hold_refused(error: Exception, account: AccountRef, hold: Hold) -> int | None:
        old = from_item(getattr(error, "response", {}).get("Item") or {})
        if hold.attribute in old:
            return old.get("available")  # this request already holds here: a retry, not a second hold
        if account.kind == "credits":
            raise InsufficientCreditsError(
                "You don't have enough credits for this request. Add credits or lower max_tokens."
            ) from None
        raise _budget_exceeded(account) from None

    def release_account(self, account: AccountRef, hold: Hold) -> None:
        """Undoes one hold of a request that was refused before it ran (no entry, no usage)."""
        self._settle_items([self._release_item(account, hold, charge=0)])

    def claim_limits(self, claim: LimitClaim, *, now_s: int) -> None:
        """Counts a request against its key's RPM, TPM and concurrency limits, or raises 429."""
        if claim.tpm is not None and claim.tokens > claim.tpm:
            raise RateLimitError(
                f"This request's worst case ({claim.tokens} tokens) exceeds the key's limit of {claim.tpm} "
                "tokens per minute. Lower max_tokens.",
                code="tokens_per_minute_exceeded",
            )
        key = {"pk": _s(f"KEY#{claim.key_id}"), "sk": _s("LIMITS")}
        values: dict[str, Any] = {":w": _n(claim.window), ":one": _n(1), ":t": _n(claim.tokens)}
        same: list[str] = ["window_id = :w"]
        fresh: list[str] = ["(attribute_not_exists(window_id) OR window_id < :w)"]
        if claim.rpm is not None:
            same.append("requests < :rpm")
            values[":rpm"] = _n(claim.rpm)
        if claim.tpm is not None:
            same.append("tokens <= :tcap")
            values[":tcap"] = _n(claim.tpm - claim.tokens)
        if claim.max_concurrency is not None:
            inflight = "(attribute_not_exists(inflight) OR inflight < :conc)"
            same.append(inflight)
            fresh.append(inflight)
            values[":conc"] = _n(claim.max_concurrency)
        values[":zero"] = _n(0)
        values[":exp"] = _n(now_s + 3600)
        attempts = [
            (
                " AND ".join(same),
                "SET requests = requests + :one, tokens = tokens + :t,"
                " inflight = if_not_exists(inflight, :zero) + :one, expires_at = :exp",
            ),
            (
                " AND ".join(fresh),
                "SET window_id = :w, requests = :one, tokens = :t,"
                " inflight = if_not_exists(inflight, :zero) + :one, expires_at = :exp",
            ),
        ]
        old: dict[str, Any] = {}
        for condition, update in attempts:
            try:
                self._call(
                    "update_item",
                    TableName=self._table,
                    Key=key,
                    UpdateExpression=update,
                    ConditionExpression=condition,
                    ExpressionAttributeValues={
                        k: v for k, v in values.items() if k in condition or k in update
                    },
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
                return
            except self._client.exceptions.ConditionalCheckFailedException as error:
                old = from_item(getattr(error, "response", {}).get("Item") or {})
        retry_after = max(1, 60 - now_s % 60)
        if claim.max_concurrency is not None and old.get("inflight", 0) >= claim.max_concurrency:
            raise RateLimitError(
                f"Too many concurrent requests for this key (limit {claim.max_concurrency}).",
                retry_after=1,
                code="concurrency_limit_exceeded",
            )
        if claim.rpm is not None and old.get("requests", 0) >= claim.rpm:
            raise RateLimitError(
                f"Rate limit of {claim.rpm} requests per minute reached for this key.",
                retry_after=retry_after,
                code="requests_per_minute_exceeded",
            )
        raise RateLimitError(
            f"Rate limit of {claim.tpm} tokens per minute reached for this key.",
            retry_after=retry_after,
            code="tokens_per_minute_exceeded",
        )

    def release_limits(self, key_id: str) -> None:
        self._call(
            "update_item",
            TableName=self._table,
            Key={"pk": _s(f"KEY#{key_id}"), "sk": _s("LIMITS")},
            UpdateExpression="SET inflight = inflight - :one",
            ConditionExpression="inflight > :zero",
            ExpressionAttributeValues={":one": _n(1), ":zero": _n(0)},
        )

    # -- client idempotency keys ----------------------------------------------------------------------

    def claim_idempotency(
        self, tenant_id: str, key_hash: str, *, request_hash: str, request_id: str, expires_at: int
    ) -> IdempotencyRecord | None:
        """Claims a client ``Idempotency-Key``; returns the earlier record when it was taken."""
        item = to_item(
            {
                "pk": f"TENANT#{tenant_id}",
                "sk": f"IDEM#{key_hash}",
                "request_hash": request_hash,
                "status": "in_progress",
                "request_id": request_id,
                "expires_at": expires_at,
            }
        )
        try:
            self._call(
                "put_item",
                TableName=self._table,
                Item=item,
                ConditionExpression="attribute_not_exists(pk)",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except self._client.exceptions.ConditionalCheckFailedException as error:
            old = from_item(getattr(error, "response", {}).get("Item") or {})
            return IdempotencyRecord(
                request_hash=old.get("request_hash", ""),
                status=old.get("status", "in_progress"),
                request_id=old.get("request_id", ""),
                content_type=old.get("content_type"),
                body=old.get("body"),
            )
        return None

    def release_idempotency(self, tenant_id: str, key_hash: str, request_id: str) -> None:
        """Frees a claimed key whose request failed, so the client may retry it."""
        with contextlib.suppress(self._client.exceptions.ConditionalCheckFailedException):
            self._call(
                "delete_item",
                TableName=self._table,
                Key={"pk": _s(f"TENANT#{tenant_id}"), "sk": _s(f"IDEM#{key_hash}")},
                ConditionExpression="request_id = :r AND #s = :p",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":r": _s(request_id), ":p": _s("in_progress")},
            )

    # -- settlement --------------------------------------------------------------------------------------

    def settle(self, settlement: Settlement) -> bool:
        """Releases the holds, charges, and writes the usage record: all at once or not at all.

        Returns False when the request was already settled (nothing is written twice).
        """
        return self._settle_items(self._settlement_items(settlement))

    async def settle_async(self, settlement: Settlement) -> bool:
        """``settle`` on the event loop, through the transport."""
        return await self._settle_items_async(self._settlement_items(settlement))

    def _settlement_items(self, settlement: Settlement) -> list[dict[str, Any]]:
        hold, usage = settlement.hold, settlement.usage
        items: list[dict[str, Any]] = []
        if hold is not None:
            for account in hold.accounts:
                items.append(self._release_item(account, hold, charge=settlement.charge_micros))
            if hold.inflight:
                items.append(
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": {"pk": _s(f"KEY#{hold.key_id}"), "sk": _s("LIMITS")},
                            "UpdateExpression": "SET inflight = inflight - :one",
                            "ExpressionAttributeValues": {":one": _n(1)},
                        }
                    }
                )
        if settlement.entry and settlement.charge_micros:
            items.append(
                {
                    "Put": {
                        "TableName": self._table,
                        "Item": _entry_item(
                            Entry(
                                tenant_id=usage.tenant_id,
                                kind="charge",
                                amount_micros=-settlement.charge_micros,
                                created_at_ms=usage.created_at_ms,
                                reference=usage.request_id,
                            )
                        ),
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                }
            )
        items.append(
            {
                "Put": {
                    "TableName": self._usage_table,
                    "Item": usage_item(usage, retention_seconds=self._usage_retention_seconds),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            }
        )
        if hold is not None and hold.idempotency is not None:
            items.append(self._idempotency_outcome(hold, settlement))
        return items

    def _idempotency_outcome(self, hold: Hold, settlement: Settlement) -> dict[str, Any]:
        key = {"pk": _s(f"TENANT#{hold.tenant_id}"), "sk": _s(f"IDEM#{hold.idempotency}")}
        if settlement.idempotency_response is None:
            return {"Delete": {"TableName": self._table, "Key": key}}
        content_type, body = settlement.idempotency_response
        return {
            "Update": {
                "TableName": self._table,
                "Key": key,
                "UpdateExpression": "SET #s = :c, content_type = :t, body = :b",
                "ExpressionAttributeNames": {"#s": "status"},
                "ExpressionAttributeValues": {":c": _s("complete"), ":t": _s(content_type), ":b": _s(body)},
            }
        }

    def _release_item(self, account: AccountRef, hold: Hold, *, charge: int) -> dict[str, Any]:
        release = hold.amount_micros - charge
        if account.kind == "credits":
            update = (
                "SET available = available + :release, held = held - :w,"
                " charged_total = if_not_exists(charged_total, :zero) + :c REMOVE #h"
            )
        else:
            update = "SET remaining = remaining + :release, held = held - :w, spent = spent + :c REMOVE #h"
        return {
            "Update": {
                "TableName": self._table,
                "Key": {"pk": _s(account.pk), "sk": _s(account.sk)},
                "UpdateExpression": update,
                "ConditionExpression": "attribute_exists(#h)",
                "ExpressionAttributeNames": {"#h": hold.attribute},
                "ExpressionAttributeValues": {
                    ":release": _n(release),
                    ":w": _n(hold.amount_micros),
                    ":c": _n(charge),
                    **({":zero": _n(0)} if account.kind == "credits" else {}),
                },
            }
        }

    def _settle_items(self, items: list[dict[str, Any]], *, retries: int = _CONFLICT_RETRIES) -> bool:
        if len(items) == 1 and "Put" in items[0]:
            put = items[0]["Put"]
            try:
                self._call("put_item", **put)
            except self._client.exceptions.ConditionalCheckFailedException:
                return False
            return True
        for attempt in range(retries):
            try:
                self._call("transact_write_items", TransactItems=items)
                return True
            except self._client.exceptions.TransactionCanceledException as error:
                reasons = _reasons(error)
                if "ConditionalCheckFailed" in reasons:
                    return False  # already settled (or swept): nothing is written twice
                if "TransactionConflict" in reasons and attempt + 1 < retries:
                    time.sleep(random.uniform(0.005, 0.02) * (2**attempt))  # noqa: S311 - jitter, not crypto
                    continue
                raise self._unavailable(error) from error
        return False

    async def _settle_items_async(self, items: list[dict[str, Any]]) -> bool:
        """``_settle_items`` through the transport (same outcomes, same conflict retries)."""
        if len(items) == 1 and "Put" in items[0]:
            try:
                await self._call_async("PutItem", items[0]["Put"])
            except self._client.exceptions.ConditionalCheckFailedException:
                return False
            return True
        for attempt in range(_CONFLICT_RETRIES):
            try:
                await self._call_async("TransactWriteItems", {"TransactItems": items})
                return True
            except self._client.exceptions.TransactionCanceledException as error:
                reasons = _reasons(error)
                if "ConditionalCheckFailed" in reasons:
                    return False  # already settled (or swept): nothing is written twice
                if "TransactionConflict" in reasons and attempt + 1 < _CONFLICT_RETRIES:
                    await asyncio.sleep(random.uniform(0.005, 0.02) * (2**attempt))  # noqa: S311 - jitter
                    continue
                raise self._unavailable(error) from error
        return False

    # -- credits ------------------------------------------------------------------------------------------

    def credit(
        self,
        tenant_id: str,
        amount_micros: int,
        *,
        kind: EntryKind,
        idempotency_key: str,
        now_ms: int,
        note: str | None = None,
        actor: str | None = None,
        starter_expires_at: int | None = None,
    ) -> tuple[Entry, bool]:
        """Adds (or, for a negative adjustment, removes) credits, once per idempotency key.

        Returns the entry and whether it is new. The same key with another amount is a 409.
        """
        entry = Entry(
            tenant_id=tenant_id,
            kind=kind,
            amount_micros=amount_micros,
            created_at_ms=now_ms,
            reference=idempotency_key,
            note=note,
            actor=actor,
        )
        pk = f"TENANT#{tenant_id}"
        update = (
            "SET available = if_not_exists(available, :zero) + :a, held = if_not_exists(held, :zero),"
            " charged_total = if_not_exists(charged_total, :zero), account_shard = :shard, updated_at = :now"
        )
        values: dict[str, Any] = {
            ":a": _n(amount_micros),
            ":zero": _n(0),
            ":shard": _s(account_shard(pk)),
            ":now": _n(now_ms),
        }
        condition = None
        if amount_micros < 0:
            condition = "available >= :need"
            values[":need"] = _n(-amount_micros)
        if starter_expires_at is not None:
            update += (
                ", starter_granted = :a, starter_expires_at = :sexp,"
                " starter_baseline = if_not_exists(charged_total, :zero), starter_open = :true"
            )
            values |= {":sexp": _n(starter_expires_at), ":true": {"BOOL": True}}
        account_update: dict[str, Any] = {
            "TableName": self._table,
            "Key": {"pk": _s(pk), "sk": _s("ACCOUNT")},
            "UpdateExpression": update,
            "ExpressionAttributeValues": values,
        }
        if condition:
            account_update["ConditionExpression"] = condition
        guard = to_item(
            {
                "pk": pk,
                "sk": f"GRANT#{idempotency_key}",
                "amount_micros": amount_micros,
                "kind": kind,
                "entry_sk": _entry_sk(entry),
            }
        )
        items = [
            {
                "Put": {
                    "TableName": self._table,
                    "Item": guard,
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            {"Update": account_update},
            {
                "Put": {
                    "TableName": self._table,
                    "Item": _entry_item(entry),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
        ]
        for attempt in range(_CONFLICT_RETRIES):
            try:
                self._call("transact_write_items", TransactItems=items)
                return entry, True
            except self._client.exceptions.TransactionCanceledException as error:
                reasons = _reasons(error)
                if reasons and reasons[0] == "ConditionalCheckFailed":
                    return self._replayed_credit(tenant_id, idempotency_key, amount_micros, kind), False
                if len(reasons) > 1 and reasons[1] == "ConditionalCheckFailed":
                    raise ConflictError(
                        "This adjustment would make the balance negative.", code="insufficient_balance"
                    ) from None
                if "TransactionConflict" in reasons and attempt + 1 < _CONFLICT_RETRIES:
                    time.sleep(random.uniform(0.005, 0.02) * (2**attempt))  # noqa: S311 - jitter
                    continue
                raise self._unavailable(error) from error
        raise ServiceUnavailableError("The ledger is busy. Retry shortly.", headers={"Retry-After": "1"})

    def _replayed_credit(self, tenant_id: str, key: str, amount_micros: int, kind: EntryKind) -> Entry:
        guard = self._get(f"TENANT#{tenant_id}", f"GRANT#{key}")
        if guard is None or guard.get("amount_micros") != amount_micros or guard.get("kind") != kind:
            raise ConflictError(
                "This idempotency_key was already used for a different credit.", code="idempotency_key_reused"
            )
        entry = self._get(f"TENANT#{tenant_id}", guard["entry_sk"])
        if entry is None:
            raise ServiceUnavailableError("The ledger entry is not readable yet. Retry shortly.")
        return _entry_from(entry)

    # -- reads --------------------------------------------------------------------------------------------

    def _get(self, pk: str, sk: str) -> dict[str, Any] | None:
        response = self._call(
            "get_item", TableName=self._table, Key={"pk": _s(pk), "sk": _s(sk)}, ConsistentRead=True
        )
        item = response.get("Item")
        return from_item(item) if item else None

    def account(self, tenant_id: str) -> Account:
        item = self._get(f"TENANT#{tenant_id}", "ACCOUNT") or {}
        return Account(
            tenant_id=tenant_id,
            available_micros=item.get("available", 0),
            held_micros=item.get("held", 0),
            charged_micros=item.get("charged_total", 0),
            starter_granted_micros=item.get("starter_granted", 0) if item.get("starter_open") else 0,
            starter_expires_at=item.get("starter_expires_at") if item.get("starter_open") else None,
        )

    def entries(
        self, tenant_id: str, *, limit: int, after: str | None = None
    ) -> tuple[list[Entry], str | None]:
        """Entries newest first; ``after`` is the cursor a previous page returned."""
        arguments: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :entry)",
            "ExpressionAttributeValues": {":pk": _s(f"TENANT#{tenant_id}"), ":entry": _s("ENTRY#")},
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if after:
            arguments["ExclusiveStartKey"] = {"pk": _s(f"TENANT#{tenant_id}"), "sk": _s(after)}
        response = self._call("query", **arguments)
        entries = [_entry_from(from_item(item)) for item in response.get("Items", [])]
        last = response.get("LastEvaluatedKey")
        return entries, last["sk"]["S"] if last else None

    def all_entries(self, tenant_id: str) -> Iterator[Entry]:
        cursor: str | None = None
        while True:
            page, cursor = self.entries(tenant_id, limit=500, after=cursor)
            yield from page
            if cursor is None:
                return

    def budget_spent(self, account: AccountRef) -> int:
        item = self._get(account.pk, account.sk) or {}
        spent = item.get("spent", 0)
        return spent if isinstance(spent, int) else 0

    # -- sweeping -----------------------------------------------------------------------------------------

    def accounts_with_holds(self) -> Iterator[dict[str, Any]]:
        """Every account item (credits and budgets), shard by shard, through the sparse index."""
        for shard in range(ACCOUNT_SHARDS):
            arguments: dict[str, Any] = {
                "TableName": self._table,
                "IndexName": _ACCOUNTS_INDEX,
                "KeyConditionExpression": "account_shard = :s",
                "ExpressionAttributeValues": {":s": _s(f"ACCOUNTS#{shard}")},
            }
            while True:
                response = self._call("query", **arguments)
                for item in response.get("Items", []):
                    yield from_item(item)
                if "LastEvaluatedKey" not in response:
                    break
                arguments["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def expire_starter(self, tenant_id: str, *, amount_micros: int, seen_charged: int, now_ms: int) -> bool:
        """Removes unused starter credits once, on the condition that nothing was charged meanwhile."""
        pk = f"TENANT#{tenant_id}"
        entry = Entry(
            tenant_id=tenant_id,
            kind="expire",
            amount_micros=-amount_micros,
            created_at_ms=now_ms,
            reference=f"starter-expiry:{tenant_id}",
            note="unused starter credits expired",
        )
        items: list[dict[str, Any]] = [
            {
                "Update": {
                    "TableName": self._table,
                    "Key": {"pk": _s(pk), "sk": _s("ACCOUNT")},
                    "UpdateExpression": "SET available = available - :a REMOVE starter_open",
                    "ConditionExpression": (
                        "starter_open = :true AND charged_total = :seen AND available >= :a"
                    ),
                    "ExpressionAttributeValues": {
                        ":a": _n(amount_micros),
                        ":true": {"BOOL": True},
                        ":seen": _n(seen_charged),
                    },
                }
            }
        ]
        if amount_micros:
            items.append(
                {
                    "Put": {
                        "TableName": self._table,
                        "Item": _entry_item(entry),
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                }
            )
        return self._settle_items(items)


def _budget_exceeded(account: AccountRef) -> RateLimitError:
    retry_after = max(1, account.period_end - int(time.time())) if account.period_end else None
    return RateLimitError(
        "The spending budget for this period is used up.", retry_after=retry_after, code="budget_exceeded"
    )


def _entry_sk(entry: Entry) -> str:
    return f"ENTRY#{entry.created_at_ms:013d}#{entry.kind}#{entry.reference}"


def _entry_item(entry: Entry) -> dict[str, Any]:
    return to_item(
        {
            "pk": f"TENANT#{entry.tenant_id}",
            "sk": _entry_sk(entry),
            "kind": entry.kind,
            "amount_micros": entry.amount_micros,
            "created_at_ms": entry.created_at_ms,
            "reference": entry.reference,
            "note": entry.note,
            "actor": entry.actor,
        }
    )


def _entry_from(item: dict[str, Any]) -> Entry:
    return Entry(
        tenant_id=item["pk"].removeprefix("TENANT#"),
        kind=item["kind"],
        amount_micros=item["amount_micros"],
        created_at_ms=item["created_at_ms"],
        reference=item["reference"],
        note=item.get("note"),
        actor=item.get("actor"),
    )


def _credits_left(response: dict[str, Any], held: int) -> int | None:
    """The credits a hold of ``held`` left, from the balance before it (``UPDATED_OLD``): what its
    update expression computed. None for a budget account (it has no ``available``)."""
    available = from_item(response.get("Attributes", {})).get("available")
    return available - held if isinstance(available, int) else None


def _reasons(error: Exception) -> list[str]:
    reasons = getattr(error, "response", {}).get("CancellationReasons", [])
    return [reason.get("Code", "None") for reason in reasons]


def _is_client_error(error: Exception, codes: set[str]) -> bool:
    response = getattr(error, "response", None)
    return isinstance(response, dict) and response.get("Error", {}).get("Code") in codes
