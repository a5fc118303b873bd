"""The admin routes answer the same whether ``DirectRoutes`` or FastAPI serves them.

The admin function serves its route tables without a framework (``admin_app``), as the data-plane
functions do; the local app serves them through ``DirectRoutes`` with FastAPI behind. This suite sends
one matrix of good and bad admin requests (path, query and body parameters, credentials, undeclared
query parameters, unknown paths and methods) to both, and to an app where FastAPI serves every route,
over the same services. Status, error bodies, headers and answers must match.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.functional.test_direct_routes import answer, same_answer
from tollgate.api.admin import admin_routes
from tollgate.api.analytics import analytics_routes
from tollgate.api.apps import admin_app, create_app
from tollgate.api.public import health_routes

ADMIN_TABLES = [admin_routes, analytics_routes, health_routes]
#: Fields that differ between two writes of the same request (timestamps).
VOLATILE = {"created_at", "updated_at"}


@pytest.fixture
def framework(services) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    """The admin routes over the same services, every one served by FastAPI."""
    with TestClient(
        create_app(ADMIN_TABLES, title="t", services=services), raise_server_exceptions=False
    ) as test_client:
        yield test_client


@pytest.fixture
def function(services) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    """The admin routes as the admin function serves them: no framework."""
    with TestClient(admin_app(services), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def acme(client, admin_headers) -> str:  # type: ignore[no-untyped-def]
    created = client.post("/admin/v1/tenants", json={"id": "acme", "name": "Acme"}, headers=admin_headers)
    assert created.status_code == 201, created.text
    return "acme"


READS: list[tuple[str, dict[str, Any]]] = [
    ("/admin/v1/tenants", {}),
    ("/admin/v1/tenants", {"limit": "2"}),
    ("/admin/v1/tenants", {"limit": "0"}),
    ("/admin/v1/tenants", {"limit": "1001"}),
    ("/admin/v1/tenants", {"limit": "many"}),
    ("/admin/v1/tenants", {"limit": ""}),
    ("/admin/v1/tenants", {"cursor": ""}),
    ("/admin/v1/tenants", {"cursor": "not a cursor!"}),
    ("/admin/v1/tenants", {"cursor": "x" * 1025}),
    ("/admin/v1/tenants", {"tenant": "acme"}),
    ("/admin/v1/tenants", {"zeta": "1", "alpha": "2", "limit": "many"}),
    ("/admin/v1/tenants/acme", {}),
    ("/admin/v1/tenants/nobody", {}),
    ("/admin/v1/tenants/-bad", {}),
    ("/admin/v1/tenants/acme/balance", {}),
    ("/admin/v1/tenants/acme/ledger", {"limit": "1"}),
    ("/admin/v1/keys", {"tenant_id": "acme"}),
    ("/admin/v1/keys", {"tenant_id": "a b"}),
    ("/admin/v1/keys/nokey", {}),
    ("/admin/v1/providers", {}),
    ("/admin/v1/providers/Bad_Name", {}),
    ("/admin/v1/providers/nobody", {}),
    ("/admin/v1/models", {}),
    ("/admin/v1/models/fake/echo", {}),
    ("/admin/v1/models/fake/echo/prices", {}),
    ("/admin/v1/models/fake/echo/prices", {"limit": "-1"}),
    ("/admin/v1/models/", {}),
    ("/admin/v1/models/%2Fleading", {}),
    ("/admin/v1/usage", {"since": "2024-05-01T00:00:00Z", "until": "2024-05-02T00:00:00Z"}),
    ("/admin/v1/usage", {"since": "yesterday"}),
    ("/admin/v1/usage", {"since": "0001-01-01T00:00:00Z"}),
    ("/admin/v1/audit", {"outcome": "denied", "verify": "true", "limit": "5"}),
    ("/admin/v1/audit", {"outcome": "maybe"}),
    ("/admin/v1/audit", {"verify": "perhaps"}),
    ("/admin/v1/audit", {"limit": "5", "limit ": "6"}),
    ("/admin/v1/audit/0", {}),
    ("/admin/v1/audit/abc", {}),
    ("/admin/v1/audit/999999", {}),
    ("/admin/v1/analytics", {"granularity": "week"}),
    (
        "/admin/v1/analytics",
        {"group_by": "model", "since": "2024-05-01T00:00:00Z", "until": "2024-05-02T00:00:00Z"},
    ),
    ("/admin/v1/analytics", {"limit": "5001"}),
    ("/admin/v1/analytics/quota", {}),
    ("/admin/v1/analytics/quota", {"tenant_id": "acme"}),
    ("/admin/v1/analytics/reconcile", {"since": "2024-13-01"}),
    ("/admin/v1/analytics/reconcile", {"since": "2024-05-01", "until": "2024-05-02"}),
    ("/admin/v1/nothing", {}),
]


@pytest.mark.parametrize(("path", "params"), READS, ids=[f"{path}?{params}" for path, params in READS])
def test_reads(client, function, framework, admin_headers, acme, path, params):  # type: ignore[no-untyped-def]
    status, _, _ = same_answer(
        [client, function], framework, "GET", path, params=params, headers=admin_headers
    )
    assert status in (200, 400, 404)


def test_a_repeated_query_parameter_is_read_as_its_last_value(
    client, function, framework, admin_headers, acme
):  # type: ignore[no-untyped-def]
    for query in ("limit=abc&limit=1", "limit=1&limit=abc"):
        same_answer([client, function], framework, "GET", f"/admin/v1/tenants?{query}", headers=admin_headers)


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer tga-wrong"}, {"Authorization": "Basic abc"}, {"x-api-key": "tga-wrong"}],
    ids=["none", "wrong key", "basic", "x-api-key"],
)
@pytest.mark.parametrize(
    ("method", "path", "params"),
    [
        ("GET", "/admin/v1/tenants", {}),
        ("GET", "/admin/v1/tenants", {"tenant": "acme"}),  # the credential is checked first
        ("GET", "/admin/v1/tenants/-bad", {}),
        ("POST", "/admin/v1/tenants", {}),
        ("GET", "/admin/v1/analytics", {"granularity": "week"}),
    ],
)
def test_a_refused_credential_comes_first_and_is_audited(  # type: ignore[no-untyped-def]
    client, function, framework, admin_headers, headers, method, path, params
):
    same_answer([client, function], framework, method, path, params=params, headers=headers, json={"id": "x"})
    audit = client.get(
        "/admin/v1/audit", params={"action": "auth.denied", "limit": "3"}, headers=admin_headers
    )
    assert [entry["target"] for entry in audit.json()["data"]] == [f"{method} {path}"] * 3


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/admin/v1/tenants", {"id": "acme", "name": "Again"}),  # exists: a 409
        ("POST", "/admin/v1/tenants", {"id": "new one", "name": "x"}),
        ("POST", "/admin/v1/tenants", {"id": "t3"}),
        ("POST", "/admin/v1/tenants", {"id": "t2", "name": "x", "colour": "red"}),
        ("POST", "/admin/v1/tenants", None),
        ("PATCH", "/admin/v1/tenants/acme", {"name": ""}),
        ("PATCH", "/admin/v1/tenants/-bad", {"name": "x"}),
        ("POST", "/admin/v1/tenants/acme/credits", {"amount": "lots"}),
        ("POST", "/admin/v1/tenants/acme/credits", {"amount_micros": -1}),
        ("POST", "/admin/v1/keys", {"tenant_id": "nobody", "name": "k"}),
        ("POST", "/admin/v1/keys", {"name": "k", "scope": "root"}),
        ("PUT", "/admin/v1/providers/openai", {"family": "nobody"}),
        ("PUT", "/admin/v1/providers/openai/credential", {}),
        ("PUT", "/admin/v1/models/fake/echo/prices", {"input": "free"}),
        ("PUT", "/admin/v1/models/fake/echo", {"provider": 7}),
        ("POST", "/admin/v1/keys/nokey/rotate", {"grace_seconds": -5}),
        ("POST", "/admin/v1/sessions/revoke", {"actor": "nobody"}),
        ("DELETE", "/admin/v1/keys/nokey", None),
        ("DELETE", "/admin/v1/models/nobody/nothing", None),
    ],
)
def test_bad_writes(client, function, framework, admin_headers, acme, method, path, body):  # type: ignore[no-untyped-def]
    """Refused writes change nothing, so each app sees the same state."""
    request: dict[str, Any] = {"headers": admin_headers}
    if body is not None:
        request["json"] = body
    status, _, _ = same_answer([client, function], framework, method, path, **request)
    assert status >= 400


@pytest.mark.parametrize("content", [b"{", b"", b"[]", b'"text"'], ids=["broken", "empty", "list", "string"])
@pytest.mark.parametrize("headers", [{"Authorization": "Bearer tga-wrong"}, None], ids=["refused", "admin"])
def test_bodies_in_fastapis_order(client, function, framework, admin_headers, acme, content, headers):  # type: ignore[no-untyped-def]
    """Broken JSON is refused before the credential is looked at; a bad body after it."""
    same_answer(
        [client, function],
        framework,
        "POST",
        "/admin/v1/tenants/-bad/credits?limit=x",
        content=content,
        headers={"Content-Type": "application/json", **(headers or admin_headers)},
    )


def scrubbed(response: Any) -> tuple[int, dict[str, str], Any]:
    status, headers, body = answer(response)
    if isinstance(body, dict):
        body = {key: value for key, value in body.items() if key not in VOLATILE}
    return status, headers, body


def test_writes_answer_alike(client, function, framework, admin_headers, acme):  # type: ignore[no-untyped-def]
    """Each app makes its own objects; the answers differ only in ids and times."""
    for index, test_client in enumerate((client, function, framework)):
        tenant = f"t{index}"
        made = test_client.post("/admin/v1/tenants", json={"id": tenant, "name": "T"}, headers=admin_headers)
        credit = {"amount": "5.00", "idempotency_key": f"grant-{index}"}
        granted = test_client.post(f"/admin/v1/tenants/{tenant}/credits", json=credit, headers=admin_headers)
        replayed = test_client.post(f"/admin/v1/tenants/{tenant}/credits", json=credit, headers=admin_headers)
        price = test_client.put(
            f"/admin/v1/models/fake/echo-{index}/prices",
            json={"cost": {"input": "1.00", "output": "2.00"}},
            headers=admin_headers,
        )
        routed = test_client.put(
            f"/admin/v1/models/fake/echo-{index}",
            json={"provider": "fake", "upstream_model": "echo"},
            headers=admin_headers,
        )
        removed = test_client.delete(f"/admin/v1/models/fake/echo-{index}", headers=admin_headers)
        answers = [made, granted, replayed, price, routed, removed]
        statuses = [response.status_code for response in answers]
        assert statuses == [201, 201, 200, 201, 200, 204], [response.text for response in answers]
        assert removed.content == b""
        shapes = [
            (response.status_code, sorted(response.json()) if response.content else None)
            for response in answers
        ]
        if index == 0:
            first = shapes
        assert shapes == first
        assert granted.json()["amount"] == replayed.json()["amount"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/admin/v1/tenants"),
        ("POST", "/admin/v1/tenants/acme"),
        ("DELETE", "/admin/v1/providers/openai"),
        ("POST", "/admin/v1/models/fake/echo"),
        ("HEAD", "/admin/v1/tenants"),
        ("GET", "/admin/v1/sessions/revoke"),
    ],
)
def test_another_method_is_a_405_listing_every_method_of_the_path(  # type: ignore[no-untyped-def]
    client, function, framework, admin_headers, method, path
):
    """FastAPI names only the first route that matched in ``Allow``; the direct path names them all."""
    served_by_fastapi = framework.request(method, path, headers=admin_headers)
    for test_client in (client, function):
        response = test_client.request(method, path, headers=admin_headers)
        assert response.status_code == served_by_fastapi.status_code == 405
        if method != "HEAD":
            assert response.json() == served_by_fastapi.json()
        allowed = response.headers["allow"].split(", ")
        assert served_by_fastapi.headers["allow"] in allowed and method not in allowed


def test_the_admin_function_serves_api_gateway_events_under_mangum(services, admin_headers):  # type: ignore[no-untyped-def]
    from mangum import Mangum

    from tests.support.apigw import LambdaContext, rest_event

    def event(method: str, path: str, query: dict[str, str] | None, body: str | None) -> dict[str, Any]:
        headers = {"authorization": admin_headers["Authorization"]}
        return rest_event(method, path, headers=headers, query=query, body=body, resource="/admin/{proxy+}")

    handler = Mangum(admin_app(services), lifespan="off")
    made = handler(
        event("POST", "/admin/v1/tenants", None, '{"id": "acme", "name": "Acme"}'), LambdaContext()
    )  # type: ignore[arg-type]
    listed = handler(event("GET", "/admin/v1/tenants", {"limit": "5"}, None), LambdaContext())  # type: ignore[arg-type]
    refused = handler(event("GET", "/admin/v1/tenants", {"limit": "0"}, None), LambdaContext())  # type: ignore[arg-type]
    missing = handler(event("GET", "/admin/v1/tenants/nobody", None, None), LambdaContext())  # type: ignore[arg-type]

    assert made["statusCode"] == 201
    assert listed["statusCode"] == 200 and '"acme"' in listed["body"]
    assert refused["statusCode"] == 400 and '"param":"limit"' in refused["body"].replace(" ", "")
    assert missing["statusCode"] == 404
