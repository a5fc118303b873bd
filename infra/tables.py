"""DynamoDB tables, built from ``tollgate.store.schema``: the one place that knows each table's keys."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from constructs import Construct

from tollgate.store.schema import ALL_TABLES, TableSchema


def _string_key(name: str) -> dynamodb.Attribute:
    return dynamodb.Attribute(name=name, type=dynamodb.AttributeType.STRING)


class TollgateTables(Construct):
    """Every table in ``ALL_TABLES``: on-demand, point-in-time recovery on, retained, deletion-protected.

    Data outlives the stack: a ``cdk destroy`` leaves the tables (and the pepper that their key hashes
    depend on) in place.
    """

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self._tables: dict[str, tuple[TableSchema, dynamodb.Table]] = {}
        for schema in ALL_TABLES:
            self._tables[schema.logical_name] = (schema, self._build(schema))

    def _build(self, schema: TableSchema) -> dynamodb.Table:
        table = dynamodb.Table(
            self,
            schema.logical_name,
            partition_key=_string_key(schema.partition_key),
            sort_key=_string_key(schema.sort_key) if schema.sort_key else None,
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            time_to_live_attribute=schema.ttl_attribute,
            deletion_protection=True,
            removal_policy=RemovalPolicy.RETAIN,
        )
        for index in schema.indexes:
            table.add_global_secondary_index(
                index_name=index.name,
                partition_key=_string_key(index.partition_key),
                sort_key=_string_key(index.sort_key) if index.sort_key else None,
                projection_type=dynamodb.ProjectionType.ALL,
            )
        return table

    def table(self, schema: TableSchema) -> dynamodb.Table:
        return self._tables[schema.logical_name][1]

    @property
    def environment(self) -> dict[str, str]:
        """``{schema.env_var: table name}`` for every table, as the runtime's settings read them."""
        return {schema.env_var: table.table_name for schema, table in self._tables.values()}

    def grant(self, grantee: iam.IGrantable, schema: TableSchema, *actions: str, indexes: bool) -> iam.Grant:
        """Allow ``actions`` on the table and, with ``indexes``, on each of its named GSIs.

        Index ARNs are spelled out one by one (``table/<name>/index/<gsi>``), never ``index/*``.
        """
        table = self.table(schema)
        resources = [table.table_arn]
        if indexes:
            resources += [f"{table.table_arn}/index/{index.name}" for index in schema.indexes]
        return iam.Grant.add_to_principal(grantee=grantee, actions=list(actions), resource_arns=resources)

    def grant_index(
        self, grantee: iam.IGrantable, schema: TableSchema, index: str, *actions: str
    ) -> iam.Grant:
        """Allow ``actions`` (e.g. ``dynamodb:Query``) on one named GSI of the table, and not on the table."""
        if index not in {i.name for i in schema.indexes}:
            raise ValueError(f"{schema.logical_name} has no index {index!r}")
        resources = [f"{self.table(schema).table_arn}/index/{index}"]
        return iam.Grant.add_to_principal(grantee=grantee, actions=list(actions), resource_arns=resources)
