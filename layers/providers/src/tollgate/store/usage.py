"""The usage table: one immutable record per request (see ``store.schema``)."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from tollgate.errors import InvalidRequestError
from tollgate.store.dynamo import from_item, to_item
from tollgate.store.records import UsageRecord
from tollgate.store.schema import USAGE

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

_BY_KEY, _BY_DAY = (index.name for index in USAGE.indexes)
#: The widest window a query without a tenant or key may span (one by_day partition a day).
MAX_UNSCOPED_DAYS = 31


def _iso_ms(epoch_ms: int) -> str:
    """``2026-11-22T03:04:05.678Z``: sort keys order by time as strings."""
    return f"{_iso_second(epoch_ms // 1000)}{epoch_ms % 1000:03d}Z"


@lru_cache(maxsize=8)
def _iso_second(epoch_s: int) -> str:
    """The second's part; a request's records fall in the last few seconds (strftime is not cheap)."""
    return datetime.fromtimestamp(epoch_s, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.")


def sort_key(record: UsageRecord) -> str:
    return f"{_iso_ms(record.created_at_ms)}#{record.request_id}"


def _encode_cursor(state: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(state, separators=(",", ":")).encode()).decode()


def _decode_cursor(cursor: str) -> dict[str, Any]:
    try:
        state = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidRequestError("The cursor is not valid.", param="cursor") from error
    if not isinstance(state, dict) or not isinstance(state.get("lek"), dict):
        raise InvalidRequestError("The cursor is not valid.", param="cursor")
    return state


def usage_item(record: UsageRecord, *, retention_seconds: int) -> dict[str, Any]:
    """The DynamoDB item of a usage record (also written inside the ledger's settlement)."""
    sk = sort_key(record)
    return to_item(
        {
            **record.model_dump(),
            "pk": f"TENANT#{record.tenant_id}",
            "sk": sk,
            "day": sk[:10],
            "expires_at": record.created_at_ms // 1000 + retention_seconds,
        }
    )


class DynamoUsageLog:
    """Writes and queries usage records. Blocking (boto3): call it off the event loop."""

    def __init__(self, client: DynamoDBClient, table: str, *, retention_days: int) -> None:
        self._client = client
        self._table = table
        self._retention_seconds = retention_days * 86_400

    def put(self, record: UsageRecord) -> None:
        """Writes one record; keyed by request id, so a retried write is a no-op, never a second record."""
        with contextlib.suppress(self._client.exceptions.ConditionalCheckFailedException):
            self._client.put_item(
                TableName=self._table,
                Item=usage_item(record, retention_seconds=self._retention_seconds),
                ConditionExpression="attribute_not_exists(pk)",
            )

    def query(
        self,
        *,
        since_ms: int,
        until_ms: int,
        tenant_id: str | None = None,
        key_id: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[UsageRecord], str | None]:
        """One page of records in ``[since, until)``, newest first, and the cursor of the next page."""
        if since_ms >= until_ms:
            raise InvalidRequestError("'since' must be before 'until'.", param="since")
        low, high = f"{_iso_ms(since_ms)}#", f"{_iso_ms(until_ms)}#"
        state = _decode_cursor(cursor) if cursor else {}
        base: dict[str, Any] = {
            "TableName": self._table,
            "ScanIndexForward": False,
            "ExpressionAttributeValues": {":lo": {"S": low}, ":hi": {"S": high}},
        }
        filters: list[str] = []
        if key_id is not None:
            base |= {
                "IndexName": _BY_KEY,
                "KeyConditionExpression": "key_id = :part AND sk BETWEEN :lo AND :hi",
            }
            base["ExpressionAttributeValues"][":part"] = {"S": key_id}
            if tenant_id is not None:
                filters.append("tenant_id = :tenant")
                base["ExpressionAttributeValues"][":tenant"] = {"S": tenant_id}
            partitions: list[str | None] = [None]
        elif tenant_id is not None:
            base["KeyConditionExpression"] = "pk = :part AND sk BETWEEN :lo AND :hi"
            base["ExpressionAttributeValues"][":part"] = {"S": f"TENANT#{tenant_id}"}
            partitions = [None]
        else:
            partitions = list[str | None](_days_descending(since_ms, until_ms))
            if len(partitions) > MAX_UNSCOPED_DAYS:
                raise InvalidRequestError(
                    f"Without tenant_id or key_id, a usage query may span at most {MAX_UNSCOPED_DAYS} days.",
                    param="since",
                )
            base |= {
                "IndexName": _BY_DAY,
                "KeyConditionExpression": "#day = :part AND sk BETWEEN :lo AND :hi",
            }
            base["ExpressionAttributeNames"] = {"#day": "day"}
        if filters:
            base["FilterExpression"] = " AND ".join(filters)

        records: list[UsageRecord] = []
        position = int(state.get("day_index", 0))
        start_key = state.get("lek")
        while position < len(partitions) and len(records) < limit:
            arguments = {**base, "Limit": limit - len(records)}
            day = partitions[position]
            if day is not None:
                arguments["ExpressionAttributeValues"] = {
                    **base["ExpressionAttributeValues"],
                    ":part": {"S": day},
                }
            if start_key:
                arguments["ExclusiveStartKey"] = start_key
            response = self._client.query(**arguments)
            records.extend(UsageRecord.model_validate(from_item(item)) for item in response.get("Items", []))
            start_key = response.get("LastEvaluatedKey")
            if start_key is None:
                position += 1
        if position >= len(partitions):
            return records, None
        return records, _encode_cursor({"day_index": position, "lek": start_key or {}})

    def records_between(
        self, since_ms: int, until_ms: int, *, tenant_id: str | None = None
    ) -> Iterator[UsageRecord]:
        """Every record created in ``[since, until)``, oldest first: one tenant's from the table, or
        everyone's from the ``by_day`` index (one partition a day). For the rollup and reconciliation.
        """
        if since_ms >= until_ms:
            return
        # BETWEEN is inclusive, but a record made at exactly ``until`` has ``<until>#<id>``, after ``:hi``.
        low, high = f"{_iso_ms(since_ms)}#", f"{_iso_ms(until_ms)}#"
        values = {":lo": {"S": low}, ":hi": {"S": high}}
        if tenant_id is not None:
            yield from self._pages(
                {
                    "TableName": self._table,
                    "KeyConditionExpression": "pk = :part AND sk BETWEEN :lo AND :hi",
                    "ExpressionAttributeValues": {**values, ":part": {"S": f"TENANT#{tenant_id}"}},
                }
            )
            return
        for day in reversed(_days_descending(since_ms, until_ms)):
            yield from self._pages(
                {
                    "TableName": self._table,
                    "IndexName": _BY_DAY,
                    "KeyConditionExpression": "#day = :part AND sk BETWEEN :lo AND :hi",
                    "ExpressionAttributeNames": {"#day": "day"},
                    "ExpressionAttributeValues": {**values, ":part": {"S": day}},
                }
            )

    def _pages(self, arguments: dict[str, Any]) -> Iterator[UsageRecord]:
        while True:
            response = self._client.query(**arguments)
            for item in response.get("Items", []):
                yield UsageRecord.model_validate(from_item(item))
            if "LastEvaluatedKey" not in response:
                return
            arguments = {**arguments, "ExclusiveStartKey": response["LastEvaluatedKey"]}


def _days_descending(since_ms: int, until_ms: int) -> list[str]:
    first = datetime.fromtimestamp(since_ms / 1000, tz=UTC).date()
    last = datetime.fromtimestamp((until_ms - 1) / 1000, tz=UTC).date()
    days = []
    while last >= first:
        days.append(last.isoformat())
        last -= timedelta(days=1)
    return days
