"""The analytics table: hour and day buckets of usage, and the rollup's watermark (see ``store.schema``).

A bucket is written whole (``PutItem``), on a condition that makes the write monotonic and
idempotent: it replaces the stored bucket only when it was built from **more** source records, or
from as many with different content. Usage records are immutable and only ever added, so a bucket
built from more records is the more complete one; a rerun (same records, same content) writes
nothing, and a concurrent run working from an older view cannot overwrite a newer one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from tollgate.analytics import Bucket, Cell, Granularity
from tollgate.store.dynamo import from_item, to_item
from tollgate.store.schema import ANALYTICS

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

_BY_PERIOD = ANALYTICS.indexes[0].name
_PREFIX: dict[Granularity, str] = {"hour": "H", "day": "D"}
_WATERMARK_KEY = {"pk": {"S": "ROLLUP"}, "sk": {"S": "WATERMARK"}}


def _part(value: str) -> str:
    """A key part with ``%`` and ``#`` (the separator) percent-encoded."""
    return value.replace("%", "%25").replace("#", "%23")


def period_key(granularity: Granularity, period: str) -> str:
    return f"{_PREFIX[granularity]}#{period}"


def bucket_keys(granularity: Granularity, period: str, cell: Cell) -> dict[str, str]:
    return {
        "pk": f"TENANT#{cell.tenant_id}",
        "sk": "#".join(
            (period_key(granularity, period), _part(cell.key_id), _part(cell.model), _part(cell.provider))
        ),
    }


def _from_item(item: dict[str, Any]) -> tuple[str, Cell, Bucket]:
    values = from_item(item)
    cell = Cell(values["tenant_id"], values["key_id"], values["model"], values["provider"])
    return values["period"], cell, Bucket.from_value(values)


class DynamoAnalytics:
    """Blocking (boto3): call it off the event loop."""

    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self._table = table

    def put_bucket(self, granularity: Granularity, period: str, cell: Cell, bucket: Bucket) -> bool:
        """Stores ``bucket`` unless the stored one is as complete and the same. True when written."""
        digest = bucket.digest()
        keys = bucket_keys(granularity, period, cell)
        item = to_item(
            {
                **keys,
                "period_key": period_key(granularity, period),
                "granularity": granularity,
                "period": period,
                "tenant_id": cell.tenant_id,
                "key_id": cell.key_id,
                "model": cell.model,
                "provider": cell.provider,
                **bucket.to_value(),
                "digest": digest,
            }
        )
        try:
            self._client.put_item(
                TableName=self._table,
                Item=item,
                ConditionExpression="attribute_not_exists(pk) OR #n < :n OR (#n = :n AND #d <> :d)",
                # Names through placeholders: DynamoDB reserves hundreds of plain words.
                ExpressionAttributeNames={"#n": "requests", "#d": "digest"},
                ExpressionAttributeValues={":n": {"N": str(bucket.requests)}, ":d": {"S": digest}},
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def tenant_buckets(
        self,
        tenant_id: str,
        granularity: Granularity,
        first_period: str,
        last_period: str,
        *,
        consistent: bool = False,
    ) -> Iterator[tuple[str, Cell, Bucket]]:
        """One tenant's buckets of ``[first, last]`` (periods inclusive), oldest period first."""
        arguments: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :lo AND :hi",
            "ExpressionAttributeValues": {
                ":pk": {"S": f"TENANT#{tenant_id}"},
                ":lo": {"S": f"{period_key(granularity, first_period)}#"},
                # '$' sorts right after '#': the bound takes in every cell of the last period.
                ":hi": {"S": f"{period_key(granularity, last_period)}$"},
            },
            "ConsistentRead": consistent,
        }
        yield from self._pages(arguments)

    def period_buckets(self, granularity: Granularity, period: str) -> Iterator[tuple[str, Cell, Bucket]]:
        """Every tenant's buckets of one period (the ``by_period`` index; eventually consistent)."""
        arguments: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": _BY_PERIOD,
            "KeyConditionExpression": "period_key = :p",
            "ExpressionAttributeValues": {":p": {"S": period_key(granularity, period)}},
        }
        yield from self._pages(arguments)

    def _pages(self, arguments: dict[str, Any]) -> Iterator[tuple[str, Cell, Bucket]]:
        while True:
            response = self._client.query(**arguments)
            for item in response.get("Items", []):
                yield _from_item(item)
            if "LastEvaluatedKey" not in response:
                return
            arguments = {**arguments, "ExclusiveStartKey": response["LastEvaluatedKey"]}

    # -- the rollup's watermark ---------------------------------------------------------------------

    def watermark(self) -> int | None:
        """Where the last successful rollup run stopped reading (epoch ms), if one ran."""
        response = self._client.get_item(TableName=self._table, Key=_WATERMARK_KEY, ConsistentRead=True)
        value = from_item(response.get("Item") or {}).get("watermark_ms")
        return value if isinstance(value, int) else None

    def advance_watermark(self, watermark_ms: int) -> bool:
        """Moves the watermark forward (never back: two runs at once keep the later one)."""
        try:
            self._client.update_item(
                TableName=self._table,
                Key=_WATERMARK_KEY,
                UpdateExpression="SET watermark_ms = :w",
                ConditionExpression="attribute_not_exists(watermark_ms) OR watermark_ms < :w",
                ExpressionAttributeValues={":w": {"N": str(watermark_ms)}},
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            return False
        return True
