"""Creates, in whatever AWS endpoint the environment points at, what the CDK stack would create:
the tables (from ``store.schema``), the KMS key and the secrets. Idempotent.

Only local mode and tests use this; in AWS the stack owns these resources.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from typing import Any

from tollgate.container import aws_client
from tollgate.store.schema import ALL_TABLES, TableSchema


@dataclass(frozen=True, slots=True)
class LocalResources:
    """Names of the resources; ``environment()`` gives the ``TOLLGATE_*`` variables for them."""

    prefix: str
    kms_key_id: str = ""

    def table_name(self, table: TableSchema) -> str:
        return f"{self.prefix}-{table.logical_name.lower()}"

    @property
    def pepper_secret(self) -> str:
        return f"{self.prefix}/pepper"

    @property
    def admin_key_secret(self) -> str:
        return f"{self.prefix}/admin-key"

    @property
    def provider_secret_prefix(self) -> str:
        return f"{self.prefix}/providers/"

    def environment(self) -> dict[str, str]:
        env = {table.env_var: self.table_name(table) for table in ALL_TABLES}
        env |= {
            "TOLLGATE_PEPPER_SECRET": self.pepper_secret,
            "TOLLGATE_ADMIN_KEY_SECRET": self.admin_key_secret,
            "TOLLGATE_PROVIDER_SECRET_PREFIX": self.provider_secret_prefix,
            "TOLLGATE_KMS_KEY_ID": self.kms_key_id,
        }
        return env


def create_table(client: Any, name: str, table: TableSchema) -> None:
    key_schema = [{"AttributeName": table.partition_key, "KeyType": "HASH"}]
    if table.sort_key:
        key_schema.append({"AttributeName": table.sort_key, "KeyType": "RANGE"})
    arguments: dict[str, Any] = {
        "TableName": name,
        "BillingMode": "PAY_PER_REQUEST",
        "KeySchema": key_schema,
        "AttributeDefinitions": [{"AttributeName": a, "AttributeType": "S"} for a in table.key_attributes()],
    }
    if table.indexes:
        arguments["GlobalSecondaryIndexes"] = [
            {
                "IndexName": index.name,
                "KeySchema": [
                    {"AttributeName": index.partition_key, "KeyType": "HASH"},
                    *([{"AttributeName": index.sort_key, "KeyType": "RANGE"}] if index.sort_key else []),
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
            for index in table.indexes
        ]
    try:
        client.create_table(**arguments)
    except client.exceptions.ResourceInUseException:
        return
    if table.ttl_attribute:
        client.update_time_to_live(
            TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": table.ttl_attribute}
        )


def _ensure_secret(client: Any, name: str, value: str, kms_key_id: str, *, replace: bool) -> None:
    try:
        client.create_secret(Name=name, SecretString=value, KmsKeyId=kms_key_id)
    except client.exceptions.ResourceExistsException:
        if replace:
            client.put_secret_value(SecretId=name, SecretString=value)


def bootstrap(prefix: str, *, admin_key: str) -> LocalResources:
    """Creates every resource under ``prefix`` and returns their names (with the new KMS key id)."""
    kms = aws_client("kms")
    alias = f"alias/{prefix}"
    try:
        key_id = kms.describe_key(KeyId=alias)["KeyMetadata"]["KeyId"]
    except kms.exceptions.NotFoundException:
        key_id = kms.create_key(Description=f"{prefix} provider credentials")["KeyMetadata"]["KeyId"]
        kms.create_alias(AliasName=alias, TargetKeyId=key_id)
    resources = LocalResources(prefix=prefix, kms_key_id=key_id)

    dynamodb = aws_client("dynamodb")
    for table in ALL_TABLES:
        create_table(dynamodb, resources.table_name(table), table)

    secretsmanager = aws_client("secretsmanager")
    # A new pepper would orphan every issued key, so an existing one is kept.
    _ensure_secret(secretsmanager, resources.pepper_secret, secrets.token_urlsafe(32), key_id, replace=False)
    _ensure_secret(secretsmanager, resources.admin_key_secret, admin_key, key_id, replace=True)
    return resources


def apply_environment(resources: LocalResources, **extra: str) -> None:
    """Exports the resources' ``TOLLGATE_*`` variables (and ``extra``) into this process."""
    os.environ.update(resources.environment())
    os.environ.update(extra)
