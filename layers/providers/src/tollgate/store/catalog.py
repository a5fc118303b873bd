"""The catalog table: providers, model routes, tenants and hub keys (see ``store.schema``)."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from tollgate.errors import ConflictError, NotFoundError
from tollgate.store.dynamo import from_item, to_attribute, to_item
from tollgate.store.records import KeyRecord, PriceRecord, ProviderRecord, Record, RouteRecord, TenantRecord
from tollgate.store.schema import CATALOG

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

R = TypeVar("R", bound=Record)

_META = "META"
#: What ``update_key`` may change: never the secret hash, tenant, scope, role or timestamps.
UPDATABLE_KEY_FIELDS = frozenset({"name", "allowed_models", "expires_at", "budget", "limits"})
_GSI = CATALOG.indexes[0].name


def _provider_keys(name: str) -> dict[str, str]:
    return {"pk": f"PROVIDER#{name}", "sk": _META, "gsi1pk": "PROVIDER", "gsi1sk": name}


def _route_keys(model: str) -> dict[str, str]:
    return {"pk": f"MODEL#{model}", "sk": _META, "gsi1pk": "MODEL", "gsi1sk": model}


def _tenant_keys(tenant_id: str) -> dict[str, str]:
    return {"pk": f"TENANT#{tenant_id}", "sk": _META, "gsi1pk": "TENANT", "gsi1sk": tenant_id}


def _key_partition(tenant_id: str | None) -> str:
    """A tenant's keys share one gsi1 partition; global admin keys (no tenant) have their own."""
    return f"TENANT#{tenant_id}#KEY" if tenant_id is not None else "ADMIN#KEY"


def _key_keys(key_id: str, tenant_id: str | None) -> dict[str, str]:
    return {"pk": f"KEY#{key_id}", "sk": _META, "gsi1pk": _key_partition(tenant_id), "gsi1sk": key_id}


def _session_pk(actor: str) -> str:
    """One item per signed-in admin (``oidc:<issuer>#<subject>``), under a fixed-length key."""
    return f"SESSION#{hashlib.sha256(actor.encode()).hexdigest()}"


def _price_sk(effective_at_ms: int) -> str:
    return f"PRICE#{effective_at_ms:013d}"


class DynamoCatalog:
    """Reads and writes catalog items. Blocking (boto3): call it off the event loop."""

    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self._table = table

    # -- generic helpers ---------------------------------------------------------------------

    def _get(self, pk: str, model: type[R]) -> R | None:
        response = self._client.get_item(TableName=self._table, Key={"pk": {"S": pk}, "sk": {"S": _META}})
        item = response.get("Item")
        return model.model_validate(from_item(item)) if item else None

    def _put(self, keys: dict[str, str], record: Record, *, must_not_exist: bool = False) -> None:
        arguments: dict[str, Any] = {
            "TableName": self._table,
            "Item": to_item({**record.model_dump(), **keys}),
        }
        if must_not_exist:
            arguments["ConditionExpression"] = "attribute_not_exists(pk)"
        try:
            self._client.put_item(**arguments)
        except self._client.exceptions.ConditionalCheckFailedException as error:
            raise ConflictError(f"'{keys['gsi1sk']}' already exists") from error

    def _list(
        self, partition: str, model: type[R], *, limit: int = 100, after: str | None = None
    ) -> tuple[list[R], str | None]:
        """One page of the items under a gsi1 partition, in sort-key order, and the next cursor."""
        arguments: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": _GSI,
            "KeyConditionExpression": "gsi1pk = :p",
            "ExpressionAttributeValues": {":p": {"S": partition}},
            "Limit": limit,
        }
        if after is not None:
            arguments["KeyConditionExpression"] += " AND gsi1sk > :after"
            arguments["ExpressionAttributeValues"][":after"] = {"S": after}
        response = self._client.query(**arguments)
        records = [model.model_validate(from_item(item)) for item in response.get("Items", [])]
        cursor = response["LastEvaluatedKey"]["gsi1sk"]["S"] if "LastEvaluatedKey" in response else None
        return records, cursor

    def _all(self, partition: str, model: type[R]) -> Iterator[R]:
        cursor: str | None = None
        while True:
            page, cursor = self._list(partition, model, limit=500, after=cursor)
            yield from page
            if cursor is None:
                return

    # -- providers ---------------------------------------------------------------------------

    def get_provider(self, name: str) -> ProviderRecord | None:
        return self._get(f"PROVIDER#{name}", ProviderRecord)

    def put_provider(self, record: ProviderRecord) -> None:
        self._put(_provider_keys(record.name), record)

    def list_providers(self) -> list[ProviderRecord]:
        return list(self._all("PROVIDER", ProviderRecord))

    # -- model routes ------------------------------------------------------------------------

    def get_route(self, model: str) -> RouteRecord | None:
        return self._get(f"MODEL#{model}", RouteRecord)

    def put_route(self, record: RouteRecord) -> None:
        # The first deployment also goes in the single-deployment fields that older code reads, so
        # a rolled-back function still serves the route (from its first deployment).
        legacy = {"provider": record.primary.provider, "upstream_model": record.primary.upstream_model}
        self._put({**_route_keys(record.model), **legacy}, record)

    def delete_route(self, model: str) -> None:
        try:
            self._client.delete_item(
                TableName=self._table,
                Key={"pk": {"S": f"MODEL#{model}"}, "sk": {"S": _META}},
                ConditionExpression="attribute_exists(pk)",
            )
        except self._client.exceptions.ConditionalCheckFailedException as error:
            raise NotFoundError(f"No model route '{model}'.") from error

    def list_routes(self) -> list[RouteRecord]:
        return list(self._all("MODEL", RouteRecord))

    # -- prices (effective-dated, append-only) -----------------------------------------------

    def put_price(self, record: PriceRecord) -> None:
        """Adds a price; one already effective at that exact millisecond is a conflict, never an edit."""
        item = to_item(
            {**record.model_dump(), "pk": f"MODEL#{record.model}", "sk": _price_sk(record.effective_at_ms)}
        )
        try:
            self._client.put_item(
                TableName=self._table, Item=item, ConditionExpression="attribute_not_exists(pk)"
            )
        except self._client.exceptions.ConditionalCheckFailedException as error:
            raise ConflictError("A price with that effective time already exists.") from error

    def prices(self, model: str) -> list[PriceRecord]:
        """Every price of a model, oldest first (the history is short: one item per change)."""
        arguments: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :price)",
            "ExpressionAttributeValues": {":pk": {"S": f"MODEL#{model}"}, ":price": {"S": "PRICE#"}},
        }
        records: list[PriceRecord] = []
        while True:
            response = self._client.query(**arguments)
            records.extend(PriceRecord.model_validate(from_item(item)) for item in response.get("Items", []))
            if "LastEvaluatedKey" not in response:
                return records
            arguments["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    # -- tenants -----------------------------------------------------------------------------

    def create_tenant(self, record: TenantRecord) -> None:
        self._put(_tenant_keys(record.id), record, must_not_exist=True)

    def get_tenant(self, tenant_id: str) -> TenantRecord | None:
        return self._get(f"TENANT#{tenant_id}", TenantRecord)

    def list_tenants(self, *, limit: int, after: str | None) -> tuple[list[TenantRecord], str | None]:
        return self._list("TENANT", TenantRecord, limit=limit, after=after)

    # -- hub keys ----------------------------------------------------------------------------

    def update_tenant(self, record: TenantRecord) -> None:
        self._put(_tenant_keys(record.id), record)

    def create_key(self, record: KeyRecord) -> None:
        self._put(_key_keys(record.id, record.tenant_id), record, must_not_exist=True)

    def get_key(self, key_id: str) -> KeyRecord | None:
        return self._get(f"KEY#{key_id}", KeyRecord)

    def list_keys(
        self, tenant_id: str | None, *, limit: int, after: str | None
    ) -> tuple[list[KeyRecord], str | None]:
        """A tenant's keys, or with ``tenant_id=None`` the global admin keys."""
        return self._list(_key_partition(tenant_id), KeyRecord, limit=limit, after=after)

    def rotate_key(
        self, key_id: str, *, expected_hash: str, new_hash: str, previous_valid_until: int, rotated_at: int
    ) -> KeyRecord:
        """Replaces a live key's secret hash, keeping the old one valid until ``previous_valid_until``.

        Conditional on the hash the caller read, so of two concurrent rotations exactly one wins (the
        other is a conflict), and on the key not being revoked.
        """
        try:
            response = self._client.update_item(
                TableName=self._table,
                Key={"pk": {"S": f"KEY#{key_id}"}, "sk": {"S": _META}},
                UpdateExpression="SET secret_hash = :new, previous_secret_hash = :old, "
                "previous_valid_until = :until, rotated_at = :now",
                ConditionExpression="secret_hash = :old AND attribute_not_exists(revoked_at)",
                ExpressionAttributeValues={
                    ":new": {"S": new_hash},
                    ":old": {"S": expected_hash},
                    ":until": {"N": str(previous_valid_until)},
                    ":now": {"N": str(rotated_at)},
                },
                ReturnValues="ALL_NEW",
            )
        except self._client.exceptions.ConditionalCheckFailedException as error:
            raise ConflictError("The key was rotated or revoked meanwhile; read it and try again.") from error
        return KeyRecord.model_validate(from_item(response["Attributes"]))

    def update_key(self, key_id: str, changes: Mapping[str, Any]) -> KeyRecord:
        """Sets a live key's updatable fields (``None``: removes one). Never its secret, tenant, scope
        or role: any other field name is a programming error. Conditional on the key existing and not
        being revoked, so a revocation cannot be undone or raced by an update."""
        unknown = set(changes) - UPDATABLE_KEY_FIELDS
        if unknown or not changes:
            raise ValueError(f"nothing to update, or not updatable: {', '.join(sorted(unknown))}")
        fields = list(enumerate(changes.items()))
        names = {f"#f{index}": name for index, (name, _) in fields}
        values = {f":v{index}": to_attribute(value) for index, (_, value) in fields if value is not None}
        sets = [f"#f{index} = :v{index}" for index, (_, value) in fields if value is not None]
        removals = [f"#f{index}" for index, (_, value) in fields if value is None]
        clauses = [f"SET {', '.join(sets)}"] if sets else []
        clauses += [f"REMOVE {', '.join(removals)}"] if removals else []
        expression = " ".join(clauses)
        arguments: dict[str, Any] = {
            "TableName": self._table,
            "Key": {"pk": {"S": f"KEY#{key_id}"}, "sk": {"S": _META}},
            "UpdateExpression": expression,
            "ExpressionAttributeNames": names,
            "ConditionExpression": "attribute_exists(pk) AND attribute_not_exists(revoked_at)",
            "ReturnValues": "ALL_NEW",
        }
        if values:
            arguments["ExpressionAttributeValues"] = values
        try:
            response = self._client.update_item(**arguments)
        except self._client.exceptions.ConditionalCheckFailedException as error:
            raise ConflictError("The key was revoked meanwhile, or does not exist.") from error
        return KeyRecord.model_validate(from_item(response["Attributes"]))

    def revoke_key(self, key_id: str, revoked_at: int) -> KeyRecord:
        """Marks a key revoked (idempotent: a second revoke keeps the first time)."""
        try:
            response = self._client.update_item(
                TableName=self._table,
                Key={"pk": {"S": f"KEY#{key_id}"}, "sk": {"S": _META}},
                UpdateExpression="SET revoked_at = if_not_exists(revoked_at, :now)",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues={":now": {"N": str(revoked_at)}},
                ReturnValues="ALL_NEW",
            )
        except self._client.exceptions.ConditionalCheckFailedException as error:
            raise NotFoundError(f"No key '{key_id}'.") from error
        return KeyRecord.model_validate(from_item(response["Attributes"]))

    # -- admin sessions ----------------------------------------------------------------------------

    def revoke_admin_sessions(self, actor: str, *, before: int, by: str) -> int:
        """Refuses every token of ``actor`` issued at or before ``before`` (epoch seconds). A later
        revocation only moves the bound forward. Returns the bound now in force."""
        # A failed condition means a later bound is already in force: it stays.
        with contextlib.suppress(self._client.exceptions.ConditionalCheckFailedException):
            self._client.update_item(
                TableName=self._table,
                Key={"pk": {"S": _session_pk(actor)}, "sk": {"S": _META}},
                UpdateExpression="SET actor = :a, revoked_before = :b, revoked_by = :by",
                ConditionExpression="attribute_not_exists(revoked_before) OR revoked_before < :b",
                ExpressionAttributeValues={":a": {"S": actor}, ":b": {"N": str(before)}, ":by": {"S": by}},
            )
        bound = self.admin_sessions_revoked_before(actor)
        assert bound is not None
        return bound

    def admin_sessions_revoked_before(self, actor: str) -> int | None:
        """The bound set by ``revoke_admin_sessions``, or None when ``actor`` was never revoked."""
        response = self._client.get_item(
            TableName=self._table, Key={"pk": {"S": _session_pk(actor)}, "sk": {"S": _META}}
        )
        item = response.get("Item")
        return int(item["revoked_before"]["N"]) if item else None
