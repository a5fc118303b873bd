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

audit
    The admin audit log: append-only and hash-chained (``tollgate.store.audit``).

    ==================  ==========  ===========================  ===========================
    item                pk          sk                           by_tenant (tenant_id / sk)
    ==================  ==========  ===========================  ===========================
    entry               ``LOG``     ``SEQ#<seq, 16 digits>``     the entry's tenant, if any
    chain head          ``LOG``     ``HEAD``                     (none: sparse)
    ==================  ==========  ===========================  ===========================

    Each entry stores the hash of the one before it; the head holds the last sequence number and
    hash, and every append conditionally moves it, so the chain stays linear under concurrency.
    No TTL: entries are never removed.

analytics
    Usage rollups (``tollgate.analytics``, written by ``tollgate.rollup``): one bucket per cell
    (tenant, key, model, provider) per UTC hour and per UTC day. Kept forever (no TTL).

    ==================  ====================  ==================================================
    item                pk                    sk
    ==================  ====================  ==================================================
    hour bucket         ``TENANT#<id>``       ``H#<YYYY-MM-DDTHH>#<key id>#<model>#<provider>``
    day bucket          ``TENANT#<id>``       ``D#<YYYY-MM-DD>#<key id>#<model>#<provider>``
    rollup watermark    ``ROLLUP``            ``WATERMARK``
    ==================  ====================  ==================================================

    GSI ``by_period``: ``period_key`` (``H#<hour>`` or ``D#<day>``) / ``sk``: every tenant's
    buckets of one period. The watermark has no ``period_key``, so it stays out of the index.
    ``#`` and ``%`` inside a key part are percent-encoded.
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

AUDIT = TableSchema(
    logical_name="Audit",
    env_var="TOLLGATE_AUDIT_TABLE",
    partition_key="pk",
    sort_key="sk",
    indexes=(Index("by_tenant", "tenant_id", "sk"),),
)

ANALYTICS = TableSchema(
    logical_name="Analytics",
    env_var="TOLLGATE_ANALYTICS_TABLE",
    partition_key="pk",
    sort_key="sk",
    indexes=(Index("by_period", "period_key", "sk"),),
)

ALL_TABLES: tuple[TableSchema, ...] = (CATALOG, USAGE, LEDGER, AUDIT, ANALYTICS)
