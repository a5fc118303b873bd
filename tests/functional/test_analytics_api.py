"""The analytics API: answers from rollups only, scoped to a tenant admin's tenant, paginated.

Every test here reads one world, built once per module (moto, 30 days of usage, one rollup):
building it costs seconds on moto, reading it milliseconds. A test that changes the world puts it
back before it ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.conftest import _AWS_ENV, ADMIN_KEY
from tests.support.records import usage_record
from tollgate.admin.principal import AdminPrincipal
from tollgate.api.admin_deps import AdminDep
from tollgate.api.apps import fastapi_app
from tollgate.store.records import UsageRecord

HOUR = 3_600_000
DAY = 24 * HOUR
BASE = 1_714_521_600_000  # 2024-05-01T00:00:00Z
MODELS = ("fake/echo", "loop/alpha", "loop/beta")
THIRTY_DAYS = {"since": "2024-05-01T00:00:00Z", "until": "2024-05-31T00:00:00Z"}


#: The figures every record here has unless a test says otherwise.
usage = partial(
    usage_record,
    prompt_tokens=100,
    completion_tokens=50,
    ttfb_ms=80,
    cost_micros=1_000,
    charged_micros=1_250,
)


def thirty_days_of_usage() -> list[UsageRecord]:
    """30 days: 2 tenants, 3 models, 2 requests per tenant and model a day, one in ten failing."""
    return [
        usage(
            f"req-{day}-{tenant}-{index}-{model}",
            BASE + day * DAY + (index * 7 + 3) * HOUR,
            tenant_id=tenant,
            key_id=f"{tenant}-key",
            model=model,
            latency_ms=100 * (day + 1) + index,
            status=502 if (day + index) % 10 == 0 else 200,
        )
        for day in range(30)
        for tenant in ("acme", "globex")
        for model in MODELS
        for index in range(2)
    ]


@dataclass(frozen=True)
class World:
    services: Any
    client: TestClient
    records: list[UsageRecord]


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    from moto import mock_aws

    from tollgate.api.apps import local_app
    from tollgate.container import Services
    from tollgate.local.bootstrap import bootstrap
    from tollgate.settings import Settings, get_settings

    with pytest.MonkeyPatch.context() as patch, mock_aws():
        for name, value in _AWS_ENV.items():
            patch.setenv(name, value)
        patch.delenv("AWS_ENDPOINT_URL", raising=False)
        patch.delenv("AWS_PROFILE", raising=False)
        for name, value in bootstrap("tollgate-analytics", admin_key=ADMIN_KEY).environment().items():
            patch.setenv(name, value)
        get_settings.cache_clear()
        services = Services(Settings.from_environment())
        records = thirty_days_of_usage()
        for record in records:
            services.usage_log.put(record)
        services.rollup.run(BASE + 31 * DAY, since_ms=BASE)
        with TestClient(local_app(services), raise_server_exceptions=False) as client:
            yield World(services, client, records)
        get_settings.cache_clear()


@pytest.fixture
def client(world: World) -> TestClient:
    return world.client


@pytest.fixture
def services(world: World) -> Any:
    return world.services


@pytest.fixture
def thirty_days(world: World) -> list[UsageRecord]:
    return world.records


def delete_raw_usage(services) -> None:  # type: ignore[no-untyped-def]
    """What the usage table's TTL does once the retention has passed."""
    client, table = services.dynamodb, services.settings.usage_table
    for item in client.scan(TableName=table)["Items"]:
        client.delete_item(TableName=table, Key={"pk": item["pk"], "sk": item["sk"]})
    assert client.scan(TableName=table)["Count"] == 0


@pytest.fixture
def as_tenant_admin(client: TestClient) -> Iterator[Any]:
    """``as_tenant_admin("acme")``: admin requests come from a tenant admin of acme, until the test ends."""
    app = fastapi_app(client.app)  # type: ignore[arg-type]
    dependency = AdminDep.__metadata__[0].dependency

    def become(tenant_id: str) -> None:
        app.dependency_overrides[dependency] = lambda: AdminPrincipal(
            actor="key:test", role="tenant_admin", tenant_id=tenant_id
        )

    yield become
    app.dependency_overrides.pop(dependency, None)


def test_a_30_day_daily_query_is_one_call(client, admin_headers, thirty_days):  # type: ignore[no-untyped-def]
    response = client.get(
        "/admin/v1/analytics", params={**THIRTY_DAYS, "group_by": "model"}, headers=admin_headers
    )

    assert response.status_code == 200, response.text
    page = response.json()
    assert page["next_cursor"] is None
    assert len(page["data"]) == 30 * len(MODELS)
    assert [row["period"] for row in page["data"][:4]] == ["2024-05-01"] * 3 + ["2024-05-02"]
    assert sum(row["requests"] for row in page["data"]) == len(thirty_days)
    assert sum(row["errors"] for row in page["data"]) == sum(1 for r in thirty_days if r.status >= 400)
    first = page["data"][0]
    assert first["group"] == "fake/echo"
    assert first["tokens"] == {
        "prompt": 400,
        "completion": 200,
        "cached": 0,
        "cache_write": 0,
        "reasoning": 0,
        "total": 600,
    }
    assert (first["cost"], first["charged"], first["currency"]) == ("0.004000", "0.005000", "USD")
    # 100 and 101 ms share the histogram bin [100, 101]: its percentiles read 100 (within 1/64).
    assert first["latency_ms"] == {
        "count": 4,
        "mean": 100,
        "p50": 100,
        "p90": 100,
        "p95": 100,
        "p99": 100,
        "max": 101,
    }
    assert first["ttfb_ms"]["p99"] == 80


def test_the_answer_comes_from_rollups_not_raw_records(
    client, admin_headers, services, thirty_days, monkeypatch
):  # type: ignore[no-untyped-def]
    params = {**THIRTY_DAYS, "group_by": "tenant"}
    before = client.get("/admin/v1/analytics", params=params, headers=admin_headers)

    delete_raw_usage(services)
    try:
        after_expiry = client.get("/admin/v1/analytics", params=params, headers=admin_headers)
        rerun = services.rollup.run(BASE + 31 * DAY, since_ms=BASE)  # finds no records: buckets stay
        with monkeypatch.context() as patch:  # and the route never reads the usage table at all
            for name in ("query", "records_between"):
                patch.setattr(type(services.usage_log), name, lambda *_, **__: pytest.fail("read raw usage"))
            after_rerun = client.get("/admin/v1/analytics", params=params, headers=admin_headers)
    finally:
        for record in thirty_days:  # put the world back
            services.usage_log.put(record)

    assert before.status_code == 200
    assert sum(row["requests"] for row in before.json()["data"]) == len(thirty_days)
    assert after_expiry.json()["data"] == before.json()["data"]
    assert (rerun.records, rerun.hour_buckets_written, rerun.day_buckets_written) == (0, 0, 0)
    assert after_rerun.json()["data"] == before.json()["data"]


def test_a_30_day_query_reads_day_buckets_and_never_the_usage_table(client, admin_headers, services):  # type: ignore[no-untyped-def]
    """Every DynamoDB call the one HTTP call makes, as botocore builds it: queries of day buckets in
    the analytics table (one per day, or one per tenant), the watermark, and never the usage table."""
    calls: list[tuple[str, dict[str, Any]]] = []

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        calls.append((model.name, params))

    events = services.dynamodb.meta.events
    for group_by, tenant in (("model", None), ("key", "acme")):
        calls.clear()
        events.register("before-parameter-build.dynamodb", record)
        try:
            response = client.get(
                "/admin/v1/analytics",
                params={**THIRTY_DAYS, "group_by": group_by, **({"tenant_id": tenant} if tenant else {})},
                headers=admin_headers,
            )
        finally:
            events.unregister("before-parameter-build.dynamodb", record)

        assert response.status_code == 200
        assert response.json()["data"], group_by
        tables = {params.get("TableName") for _, params in calls}
        assert services.settings.usage_table not in tables
        queries = [params for name, params in calls if name == "Query"]
        assert {params["TableName"] for params in queries} == {services.settings.analytics_table}
        bounds = [
            value["S"]
            for params in queries
            for name, value in params["ExpressionAttributeValues"].items()
            if name in {":p", ":lo", ":hi"}
        ]
        assert bounds
        assert all(bound.startswith("D#") for bound in bounds), "a daily query reads day buckets only"
        assert len(queries) == (30 if tenant is None else 1)  # one per day, or one per tenant
        assert {name for name, _ in calls} <= {"Query", "GetItem"}  # GetItem: the rollup watermark


def test_pages_join_up_to_the_one_call_answer(client, admin_headers, thirty_days):  # type: ignore[no-untyped-def]
    params = {**THIRTY_DAYS, "group_by": "model", "tenant_id": "acme"}
    whole = client.get("/admin/v1/analytics", params=params, headers=admin_headers).json()["data"]

    pages, cursor = [], None
    while True:
        page = client.get(
            "/admin/v1/analytics",
            params={**params, "limit": 7, **({"cursor": cursor} if cursor else {})},
            headers=admin_headers,
        ).json()
        pages.extend(page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert pages == whole
    assert len(whole) == 90


@pytest.mark.parametrize(
    ("group_by", "groups"),
    [
        ("tenant", {"acme", "globex"}),
        ("key", {"acme-key", "globex-key"}),
        ("model", set(MODELS)),
        ("provider", {"fake"}),
    ],
)
def test_every_grouping_adds_up_to_the_same_total(client, admin_headers, thirty_days, group_by, groups):  # type: ignore[no-untyped-def]
    rows = client.get(
        "/admin/v1/analytics", params={**THIRTY_DAYS, "group_by": group_by}, headers=admin_headers
    ).json()["data"]

    assert {row["group"] for row in rows} == groups
    assert sum(row["requests"] for row in rows) == len(thirty_days)
    assert sum(int(row["charged"].replace(".", "")) for row in rows) == sum(
        r.charged_micros for r in thirty_days
    )


def test_hourly_rows_and_filters(client, admin_headers, thirty_days):  # type: ignore[no-untyped-def]
    rows = client.get(
        "/admin/v1/analytics",
        params={
            "since": "2024-05-02T00:00:00Z",
            "until": "2024-05-03T00:00:00Z",
            "granularity": "hour",
            "group_by": "tenant",
            "model": "loop/beta",
        },
        headers=admin_headers,
    ).json()["data"]

    assert [(row["period"], row["group"], row["requests"]) for row in rows] == [
        ("2024-05-02T03", "acme", 1),
        ("2024-05-02T03", "globex", 1),
        ("2024-05-02T10", "acme", 1),
        ("2024-05-02T10", "globex", 1),
    ]


def test_a_tenant_admin_sees_only_its_own_tenant(client, admin_headers, thirty_days, as_tenant_admin):  # type: ignore[no-untyped-def]
    as_tenant_admin("acme")

    mine = client.get(
        "/admin/v1/analytics", params={**THIRTY_DAYS, "group_by": "tenant"}, headers=admin_headers
    )
    other = client.get(
        "/admin/v1/analytics", params={**THIRTY_DAYS, "tenant_id": "globex"}, headers=admin_headers
    )
    quota = client.get("/admin/v1/analytics/quota", params={"tenant_id": "globex"}, headers=admin_headers)
    reconcile = client.get(
        "/admin/v1/analytics/reconcile",
        params={"since": "2024-05-01", "until": "2024-05-30"},
        headers=admin_headers,
    )

    assert {row["group"] for row in mine.json()["data"]} == {"acme"}
    assert sum(row["requests"] for row in mine.json()["data"]) == len(thirty_days) // 2
    assert other.status_code == quota.status_code == 404
    assert {row["tenant_id"] for row in reconcile.json()["data"]} == {"acme"}


@pytest.mark.parametrize(
    "params",
    [
        {"granularity": "hour", "since": "2024-05-01T00:00:00Z", "until": "2024-06-15T00:00:00Z"},
        {"since": "2024-05-02T00:00:00Z", "until": "2024-05-01T00:00:00Z"},
        {**THIRTY_DAYS, "cursor": "not-a-cursor"},
        {"group_by": "colour"},
        {"until": "0001-01-01T00:00:00Z"},
        {"since": "0001-01-01T00:00:00-23:59"},
        {"since": "9999-12-31T23:59:59+00:00", "until": "9999-12-31T23:59:59-23:59"},
        {"granularity": "hour", "since": "2000-01-01T00:00:00Z", "until": "2199-01-01T00:00:00Z"},
    ],
)
def test_bad_queries_are_400s(client, admin_headers, params):  # type: ignore[no-untyped-def]
    response = client.get("/admin/v1/analytics", params=params, headers=admin_headers)

    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "params",
    [
        {"since": "2024-05-10", "until": "2024-05-01"},
        {"since": "2024-01-01", "until": "2024-05-01"},
        {"until": "0001-01-01"},
        {"since": "2024-02-30"},
    ],
)
def test_bad_reconciliations_are_400s(client, admin_headers, params):  # type: ignore[no-untyped-def]
    response = client.get("/admin/v1/analytics/reconcile", params=params, headers=admin_headers)

    assert response.status_code == 400, response.text


def test_analytics_need_an_admin_credential(client):  # type: ignore[no-untyped-def]
    for path in ("/admin/v1/analytics", "/admin/v1/analytics/quota", "/admin/v1/analytics/reconcile"):
        assert client.get(path).status_code == 401, path


def test_operation_ids_are_stable(client):  # type: ignore[no-untyped-def]
    paths = client.get("/openapi.json").json()["paths"]

    assert paths["/admin/v1/analytics"]["get"]["operationId"] == "queryAnalytics"
    assert paths["/admin/v1/analytics/quota"]["get"]["operationId"] == "getQuota"
    assert paths["/admin/v1/analytics/reconcile"]["get"]["operationId"] == "reconcileUsage"
