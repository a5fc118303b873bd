"""DynamoDB tables are built from tollgate.store.schema, the one place that knows each table's keys."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from tollgate.store.schema import ALL_TABLES, LEDGER, TableSchema

if TYPE_CHECKING:
    from tests.infra.conftest import Synthesized


def _key_schema(partition_key: str, sort_key: str | None) -> list[dict[str, str]]:
    keys = [{"AttributeName": partition_key, "KeyType": "HASH"}]
    if sort_key:
        keys.append({"AttributeName": sort_key, "KeyType": "RANGE"})
    return keys


def _table(synthesized: Synthesized, schema: TableSchema) -> dict[str, Any]:
    return synthesized.resource(synthesized.stack.tables.table(schema))


def test_one_table_per_schema(resources: dict[str, Any]) -> None:
    tables = [r for r in resources.values() if r["Type"] == "AWS::DynamoDB::Table"]
    assert len(tables) == len(ALL_TABLES)


@pytest.mark.parametrize("schema", ALL_TABLES, ids=lambda s: s.logical_name)
def test_table_keys_and_indexes_come_from_the_schema(synthesized: Synthesized, schema: TableSchema) -> None:
    props = _table(synthesized, schema)["Properties"]

    assert props["KeySchema"] == _key_schema(schema.partition_key, schema.sort_key)
    assert sorted(props["AttributeDefinitions"], key=lambda a: a["AttributeName"]) == sorted(
        ({"AttributeName": name, "AttributeType": "S"} for name in schema.key_attributes()),
        key=lambda a: a["AttributeName"],
    )
    indexes = {gsi["IndexName"]: gsi for gsi in props.get("GlobalSecondaryIndexes", [])}
    assert set(indexes) == {index.name for index in schema.indexes}
    for index in schema.indexes:
        assert indexes[index.name]["KeySchema"] == _key_schema(index.partition_key, index.sort_key)
        assert indexes[index.name]["Projection"] == {"ProjectionType": "ALL"}


@pytest.mark.parametrize("schema", ALL_TABLES, ids=lambda s: s.logical_name)
def test_table_is_on_demand_recoverable_and_kept(synthesized: Synthesized, schema: TableSchema) -> None:
    table = _table(synthesized, schema)
    props = table["Properties"]

    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert "ProvisionedThroughput" not in props
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["DeletionProtectionEnabled"] is True
    assert table["DeletionPolicy"] == "Retain"
    assert table["UpdateReplacePolicy"] == "Retain"


@pytest.mark.parametrize("schema", ALL_TABLES, ids=lambda s: s.logical_name)
def test_ttl_is_set_exactly_where_the_schema_names_one(synthesized: Synthesized, schema: TableSchema) -> None:
    props = _table(synthesized, schema)["Properties"]

    if schema.ttl_attribute:
        assert props["TimeToLiveSpecification"] == {"AttributeName": schema.ttl_attribute, "Enabled": True}
    else:
        assert "TimeToLiveSpecification" not in props


@pytest.mark.parametrize("schema", ALL_TABLES, ids=lambda s: s.logical_name)
def test_every_function_reads_the_table_name_from_the_schemas_env_var(
    synthesized: Synthesized, function_resources: dict[str, Any], schema: TableSchema
) -> None:
    table_ref = {"Ref": synthesized.logical_id(synthesized.stack.tables.table(schema))}
    for name, function in function_resources.items():
        assert function["Properties"]["Environment"]["Variables"][schema.env_var] == table_ref, name


def test_ledger_table_has_pitr_the_accounts_index_and_a_ttl(synthesized: Synthesized) -> None:
    """Spelled out for the ledger (money): the parametrized tests above check it generically."""
    props = _table(synthesized, LEDGER)["Properties"]
    indexes = {gsi["IndexName"]: gsi for gsi in props["GlobalSecondaryIndexes"]}

    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert set(indexes) == {"accounts"}
    assert indexes["accounts"]["KeySchema"] == _key_schema("account_shard", "pk")
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
