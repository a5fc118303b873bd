"""The audit table: the admin plane's append-only, hash-chained log (see ``store.schema``).

Each entry stores ``prev_hash``, the hash of the entry before it, and ``hash``, the SHA-256 of its own
canonical JSON (every field but ``hash``). An append puts the entry on the condition that its sequence
number is free, so two concurrent appends can never both take one: the loser reads the winner's entry
and chains onto it. The head item (last sequence number and hash) then moves forward, conditionally.
(Single-item conditional writes rather than a transaction: as safe here, half the write cost.)

Tampering shows: an edited entry no longer matches its hash, a deleted one leaves a gap, a removed
tail leaves the head pointing past the end. ``verify`` walks the chain from the first entry and reports
the first broken link. Nothing in Tollgate updates or deletes an entry, and the admin role cannot
delete one (``infra/functions.py``). Someone able to rewrite the table could recompute every hash, so
each append also logs its sequence number and hash: CloudWatch Logs is the outside witness to compare.

>>> record = AuditRecord(seq=1, at_ms=0, request_id="req_1", actor="bootstrap", action="tenant.create",
...                      target="tenant:acme", outcome="ok", status=201, prev_hash=GENESIS_HASH, hash="")
>>> len(record.computed_hash())
64
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from tollgate.errors import InvalidRequestError, ServiceUnavailableError
from tollgate.observability import logger
from tollgate.store.dynamo import from_item, to_item
from tollgate.store.schema import AUDIT

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

GENESIS_HASH = "0" * 64
_PK = "LOG"
_HEAD = "HEAD"
_SEQ_PREFIX = "SEQ#"
_BY_TENANT = AUDIT.indexes[0].name
#: Losing this many races in a row means something is wrong, not merely busy.
_APPEND_ATTEMPTS = 100
#: At most this many DynamoDB pages are read for one page of a filtered listing.
_MAX_PAGES_PER_LISTING = 5
_FILTERED_PAGE = 1000

Outcome = Literal["ok", "denied"]


def _sk(seq: int) -> str:
    return f"{_SEQ_PREFIX}{seq:016d}"


class AuditRecord(BaseModel):
    """One audit entry, exactly as stored and hashed."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    seq: int
    at_ms: int
    request_id: str
    #: ``bootstrap``, ``key:<id>``, ``oidc:<issuer>#<subject>``, or ``anonymous`` for a refused credential.
    actor: str
    role: str | None = None
    #: ``<object>.<verb>`` such as ``key.create``, or ``auth.denied`` / ``access.denied``.
    action: str
    #: What was acted on: ``key:<id>``, ``tenant:<id>``, ``provider:<name>``... or ``<METHOD> <path>``.
    target: str
    #: The tenant the entry belongs to (what a tenant admin may read), if any.
    tenant_id: str | None = None
    outcome: Outcome
    status: int
    reason: str | None = None
    #: Canonical JSON of ``{field: [before, after]}``, secrets removed before it gets here.
    diff: str | None = None
    prev_hash: str
    hash: str

    def canonical(self) -> bytes:
        fields = self.model_dump(exclude={"hash"})
        return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()

    def computed_hash(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()


@dataclass(frozen=True, slots=True)
class AuditDraft:
    """What the caller knows about an entry; the log adds its place in the chain and its time."""

    request_id: str
    actor: str
    action: str
    target: str
    outcome: Outcome
    status: int
    role: str | None = None
    tenant_id: str | None = None
    reason: str | None = None
    diff: str | None = None


@dataclass(frozen=True, slots=True)
class AuditFilter:
    tenant_id: str | None = None
    actor: str | None = None
    action: str | None = None
    outcome: Outcome | None = None
    since_ms: int | None = None
    until_ms: int | None = None


@dataclass(frozen=True, slots=True)
class ChainCheck:
    """The outcome of ``verify``: ``first_broken_seq`` is None when every link holds."""

    entries: int
    head_seq: int
    first_broken_seq: int | None
    reason: str | None

    @property
    def verified(self) -> bool:
        return self.first_broken_seq is None


class DynamoAuditLog:
    """Appends, reads and verifies audit entries. Blocking (boto3): call it off the event loop."""

    def __init__(
        self,
        client: DynamoDBClient,
        table: str,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = client
        self._table = table
        self._clock = clock
        self._sleep = sleep
        self._tail: tuple[int, str] | None = None

    # -- appending -------------------------------------------------------------------------------

    def _head(self) -> tuple[int, str]:
        response = self._client.get_item(
            TableName=self._table, Key={"pk": {"S": _PK}, "sk": {"S": _HEAD}}, ConsistentRead=True
        )
        item = response.get("Item")
        if not item:
            return 0, GENESIS_HASH
        head = from_item(item)
        return int(head["seq"]), str(head["hash"])

    def append(self, draft: AuditDraft) -> AuditRecord:
        """Adds ``draft`` at the end of the chain and returns the stored entry.

        The entry is put on the condition that its sequence number is free; a writer that loses
        that race reads the winner's entry and tries the next number, so entries form one chain
        whatever the concurrency. The head then moves forward (never back), conditionally. A writer
        that dies between the two leaves the head one entry behind; the next append walks past it.
        """
        # This process's last append is usually still the tail; if not, the first put says so.
        seq, prev_hash = self._tail or self._head()
        for attempt in range(_APPEND_ATTEMPTS):
            record = self._draft_at(draft, seq + 1, prev_hash)
            try:
                self._client.put_item(
                    TableName=self._table,
                    Item=to_item({**record.model_dump(), "pk": _PK, "sk": _sk(record.seq)}),
                    ConditionExpression="attribute_not_exists(pk)",
                )
            except self._client.exceptions.ConditionalCheckFailedException:
                head_seq, head_hash = self._head()
                if head_seq > seq + 1:  # far behind: jump to the head
                    seq, prev_hash = head_seq, head_hash
                elif (taken := self.get(seq + 1)) is not None:  # another writer's entry: chain onto it
                    seq, prev_hash = taken.seq, taken.hash
                if attempt:
                    self._sleep(random.uniform(0, min(0.05, 0.002 * 2**attempt)))  # noqa: S311  # jitter only
                continue
            self._advance_head(record)
            self._tail = (record.seq, record.hash)
            logger.info("audit entry appended", extra={"audit_seq": record.seq, "audit_hash": record.hash})
            return record
        raise ServiceUnavailableError("The audit log is busy; try again.")

    def _draft_at(self, draft: AuditDraft, seq: int, prev_hash: str) -> AuditRecord:
        unhashed = AuditRecord(
            seq=seq,
            at_ms=int(self._clock() * 1000),
            request_id=draft.request_id,
            actor=draft.actor,
            role=draft.role,
            action=draft.action,
            target=draft.target,
            tenant_id=draft.tenant_id,
            outcome=draft.outcome,
            status=draft.status,
            reason=draft.reason,
            diff=draft.diff,
            prev_hash=prev_hash,
            hash="",
        )
        return unhashed.model_copy(update={"hash": unhashed.computed_hash()})

    def _advance_head(self, record: AuditRecord) -> None:
        """Moves the head to ``record`` unless a later entry already moved it further."""
        with contextlib.suppress(self._client.exceptions.ConditionalCheckFailedException):
            self._client.update_item(
                TableName=self._table,
                Key={"pk": {"S": _PK}, "sk": {"S": _HEAD}},
                UpdateExpression="SET seq = :seq, #hash = :hash",
                ConditionExpression="attribute_not_exists(seq) OR seq < :seq",
                ExpressionAttributeNames={"#hash": "hash"},
                ExpressionAttributeValues={":seq": {"N": str(record.seq)}, ":hash": {"S": record.hash}},
            )

    # -- reading ---------------------------------------------------------------------------------

    def get(self, seq: int) -> AuditRecord | None:
        response = self._client.get_item(
            TableName=self._table, Key={"pk": {"S": _PK}, "sk": {"S": _sk(seq)}}, ConsistentRead=True
        )
        item = response.get("Item")
        return AuditRecord.model_validate(from_item(item)) if item else None

    def query(
        self, where: AuditFilter, *, limit: int, before_seq: int | None = None
    ) -> tuple[list[AuditRecord], int | None]:
        """One page of entries, newest first, and the ``before_seq`` of the next page (or None)."""
        if before_seq is not None and before_seq <= 1:
            return [], None
        high = _sk(before_seq - 1) if before_seq is not None else f"{_SEQ_PREFIX}~"
        values: dict[str, Any] = {":lo": {"S": _SEQ_PREFIX}, ":hi": {"S": high}}
        arguments: dict[str, Any] = {"TableName": self._table, "ScanIndexForward": False}
        if where.tenant_id is not None:
            arguments |= {
                "IndexName": _BY_TENANT,
                "KeyConditionExpression": "tenant_id = :t AND sk BETWEEN :lo AND :hi",
            }
            values[":t"] = {"S": where.tenant_id}
        else:
            arguments["KeyConditionExpression"] = "pk = :pk AND sk BETWEEN :lo AND :hi"
            values[":pk"] = {"S": _PK}
        filters: list[str] = []
        names: dict[str, str] = {}
        for field, value in (("actor", where.actor), ("action", where.action), ("outcome", where.outcome)):
            if value is not None:
                filters.append(f"#{field} = :{field}")
                names[f"#{field}"] = field
                values[f":{field}"] = {"S": value}
        if where.since_ms is not None:
            filters.append("at_ms >= :since")
            values[":since"] = {"N": str(where.since_ms)}
        if where.until_ms is not None:
            filters.append("at_ms < :until")
            values[":until"] = {"N": str(where.until_ms)}
        if filters:
            arguments["FilterExpression"] = " AND ".join(filters)
        if names:
            arguments["ExpressionAttributeNames"] = names
        arguments["ExpressionAttributeValues"] = values

        # DynamoDB applies Limit before the filter: with filters, read in large pages (up to 1 MB).
        page_size = _FILTERED_PAGE if filters else limit
        records: list[AuditRecord] = []
        for _ in range(_MAX_PAGES_PER_LISTING):
            response = self._client.query(**arguments, Limit=page_size)
            records.extend(AuditRecord.model_validate(from_item(item)) for item in response.get("Items", []))
            last = response.get("LastEvaluatedKey")
            if len(records) >= limit:
                more = len(records) > limit or last is not None
                records = records[:limit]
                return records, records[-1].seq if more else None
            if last is None:
                return records, None
            arguments["ExclusiveStartKey"] = last
        # Many entries filtered out: hand back where the reading stopped, so the caller can go on.
        resume = int(arguments["ExclusiveStartKey"]["sk"]["S"].removeprefix(_SEQ_PREFIX))
        return records, resume

    def _ascending(self) -> Iterator[AuditRecord]:
        arguments: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :seq)",
            "ExpressionAttributeValues": {":pk": {"S": _PK}, ":seq": {"S": _SEQ_PREFIX}},
            "ConsistentRead": True,
        }
        while True:
            response = self._client.query(**arguments)
            for item in response.get("Items", []):
                yield AuditRecord.model_validate(from_item(item))
            if "LastEvaluatedKey" not in response:
                return
            arguments["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def verify(self) -> ChainCheck:
        """Walks the whole chain; reports the first entry whose link or hash does not hold."""
        head_seq, head_hash = self._head()
        expected_seq, prev_hash, count = 1, GENESIS_HASH, 0
        for record in self._ascending():
            count += 1
            if record.seq != expected_seq:
                return ChainCheck(count, head_seq, expected_seq, "an entry is missing")
            if record.prev_hash != prev_hash:
                return ChainCheck(count, head_seq, record.seq, "the link to the previous entry is broken")
            if record.computed_hash() != record.hash:
                return ChainCheck(count, head_seq, record.seq, "the entry does not match its hash")
            prev_hash, expected_seq = record.hash, expected_seq + 1
        last = expected_seq - 1
        if last < head_seq:
            return ChainCheck(
                count, head_seq, last + 1, "entries after this one are missing (the head is further)"
            )
        if head_seq and self._hash_at(head_seq) != head_hash:
            return ChainCheck(count, head_seq, head_seq, "the entry at the head does not match the head")
        # A head behind the last entry is a writer that died between its two writes: no break.
        return ChainCheck(count, head_seq, None, None)

    def _hash_at(self, seq: int) -> str | None:
        record = self.get(seq)
        return record.hash if record else None


def parse_cursor(cursor: str | None) -> int | None:
    """An audit listing's cursor is the sequence number to read below."""
    if cursor is None:
        return None
    if not cursor.isdigit() or len(cursor) > 16:
        raise InvalidRequestError("The cursor is not valid.", param="cursor")
    return int(cursor)
