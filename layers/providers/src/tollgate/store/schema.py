"""The one place that knows each DynamoDB table's keys.

Both the runtime (data access) and the CDK stack (``infra/tables.py``) and the local bootstrap
read these definitions, so a table's shape can never drift between code and infrastructure.

Tables
------
catalog
    Providers, model routes, tenants and hub keys, one item each.

    ========================  =====================  ==========================  =================
    item                      pk                     sk                          gsi1 (pk / sk)
    ========================  =====================  ==========================  =================
    provider                  ``PROVIDER#<name>``    ``META``                    ``PROVIDER`` / name
    model route               ``MODEL#<model>``      ``META``                    ``MODEL`` / model
    tenant                    ``TENANT#<id>``        ``META``                    ``TENANT`` / id
    hub key                   ``KEY#<key id>``       ``META``                    ``TENANT#<id>#KEY`` / key id
    ========================  =====================  ==========================  =================

ledger
    Money and admission state, per tenant and per key. Every entry is immutable.

    ===============================  ======================================  =======================
    item                             pk                                      sk
    ===============================  ======================================  =======================
    credit account (balance)         ``TENANT#<id>``                         ``ACCOUNT``
    budget account (one period)      ``TENANT#<id>`` or ``KEY#<key id>``     ``BUDGET#<period>#<n>``
    ledger entry                     ``TENANT#<id>``                         ``ENTRY#<ms>#<kind>#<id>``
    grant guard (idempotency)        ``TENANT#<id>``                         ``GRANT#<key>``
    rate limits of a key             ``KEY#<key id>``                        ``LIMITS``
    client idempotency key           ``TENANT#<id>``                         ``IDEM#<sha256>``
    ===============================  ======================================  =======================

    An account holds in-flight reservations as top-level ``hold_<request id>`` attributes, so a
    hold and its release are single-item conditional updates. Accounts carry ``account_shard``
    (GSI ``accounts``), which is how the sweeper finds expired holds without scanning entries.
    ``expires_at`` is the TTL attribute (idempotency records, rate windows, old budget periods).

usage
    One immutable record per request.
    ``pk = TENANT#<tenant id>``, ``sk = <ISO-8601 UTC time>#<request id>``.
    GSI ``by_key``: ``key_id`` / ``sk``; GSI ``by_day``: ``day`` (``YYYY-MM-DD``) / ``sk``.
    ``expires_at`` (epoch seconds) is the TTL attribute.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Index:
    name: str
    partition_key: str
    sort_key: str | None = None


@dataclass(frozen=True, slots=True)
class TableSchema:
    """Key schema of one table; every key attribute is a string."""

    logical_name: str
    env_var: str
    partition_key: str
    sort_key: str | None = None
    indexes: tuple[Index, ...] = field(default_factory=tuple)
    ttl_attribute: str | None = None

    def key_attributes(self) -> list[str]:
        """Every attribute that appears in a key of the table or of one of its indexes."""
        names = [self.partition_key, *([self.sort_key] if self.sort_key else [])]
        for index in self.indexes:
            names.append(index.partition_key)
            if index.sort_key:
                names.append(index.sort_key)
        return list(dict.fromkeys(names))


CATALOG = TableSchema(
    logical_name="Catalog",
    env_var="TOLLGATE_CATALOG_TABLE",
    partition_key="pk",
    sort_key="sk",
    indexes=(Index("gsi1", "gsi1pk", "gsi1sk"),),
)

USAGE = TableSchema(
    logical_name="Usage",
    env_var="TOLLGATE_USAGE_TABLE",
    partition_key="pk",
    sort_key="sk",
    indexes=(Index("by_key", "key_id", "sk"), Index("by_day", "day", "sk")),
    ttl_attribute="expires_at",
)

LEDGER = TableSchema(
    logical_name="Ledger",
    env_var="TOLLGATE_LEDGER_TABLE",
    partition_key="pk",
    sort_key="sk",
    indexes=(Index("accounts", "account_shard", "pk"),),
    ttl_attribute="expires_at",
)

ALL_TABLES: tuple[TableSchema, ...] = (CATALOG, USAGE, LEDGER)
