"""Tenant isolation (BOLA): a tenant admin reaches nothing of another tenant's, through any route.

Two tenants, each with keys, credits, usage and audit entries. Each tenant's admin then asks for the
other's objects through every admin route that takes an object id (in the path, the query or the
body). Expected, for every request:

* the answer is the one a missing object gets (404, the same body but for the id), or 403 for the
  global catalog, which a tenant admin may not touch at all;
* nothing of the other tenant appears in any answer (0 leaks);
* no table changes (0 changes), except audit entries recording the denial, under the caller's tenant.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.functional.conftest import bearer

TENANTS = {"alpha": "Alpha Industries", "beta": "Beta Holdings"}
#: A route taking an object id: (method, path, body, expected statuses). ``{x}`` fields are filled
#: from the victim tenant's objects.
Case = tuple[str, str, dict[str, Any] | None, set[int]]


@dataclass
class TenantWorld:
    tenant_id: str
    name: str
    data_key: dict[str, Any] = field(default_factory=dict)
    admin_key: dict[str, Any] = field(default_factory=dict)
    audit_seq: int = 0

    def secrets(self) -> list[str]:
        """What only this tenant's side should ever see."""
        return [
            self.name,
            self.data_key["id"],
            self.data_key["key"],
            self.data_key["name"],
            self.admin_key["id"],
            self.admin_key["key"],
            self.admin_key["name"],
            f"{self.tenant_id}-grant",
            f"note for {self.tenant_id}",
        ]


@pytest.fixture
def world(client, admin_headers, issue_key) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    tenants = {}
    for tenant_id, name in TENANTS.items():
        assert (
            client.post(
                "/admin/v1/tenants", json={"id": tenant_id, "name": name}, headers=admin_headers
            ).status_code
            == 201
        )
        side = TenantWorld(tenant_id, name)
        side.data_key = issue_key(
            tenant_id=tenant_id, name=f"{tenant_id}-data-key", allowed_models=["fake/echo"]
        )
        side.admin_key = issue_key(
            tenant_id=tenant_id, name=f"{tenant_id}-admin-key", scope="admin", role="tenant_admin"
        )
        credit = {"amount": "3", "idempotency_key": f"{tenant_id}-grant", "note": f"note for {tenant_id}"}
        assert (
            client.post(
                f"/admin/v1/tenants/{tenant_id}/credits", json=credit, headers=admin_headers
            ).status_code
            == 201
        )
        chat = {"model": "fake/echo", "messages": [{"role": "user", "content": f"hello from {tenant_id}"}]}
        assert (
            client.post("/v1/chat/completions", json=chat, headers=bearer(side.data_key["key"])).status_code
            == 200
        )
        entries = client.get(f"/admin/v1/audit?tenant_id={tenant_id}", headers=admin_headers).json()["data"]
        side.audit_seq = entries[0]["seq"]
        tenants[tenant_id] = side
    global_key = issue_key(scope="admin", role="viewer", name="global-viewer")
    client.put("/admin/v1/providers/shared", json={"type": "fake"}, headers=admin_headers)
    client.put(
        "/admin/v1/models/shared-model",
        json={"provider": "shared", "upstream_model": "echo"},
        headers=admin_headers,
    )
    price = {"cost": {"input": "1", "output": "2"}}
    client.put("/admin/v1/models/shared-model/prices", json=price, headers=admin_headers)
    return {"tenants": tenants, "global_key": global_key}


def cases(victim: TenantWorld, global_key_id: str) -> list[Case]:
    tenant, data_key, admin_key = victim.tenant_id, victim.data_key["id"], victim.admin_key["id"]
    hidden: set[int] = {404}
    forbidden: set[int] = {403}
    found: list[Case] = [
        ("GET", f"/admin/v1/tenants/{tenant}", None, hidden),
        ("PATCH", f"/admin/v1/tenants/{tenant}", {"name": "pwned"}, hidden),
        (
            "POST",
            f"/admin/v1/tenants/{tenant}/credits",
            {"amount": "100", "idempotency_key": "steal"},
            hidden,
        ),
        ("GET", f"/admin/v1/tenants/{tenant}/balance", None, hidden),
        ("GET", f"/admin/v1/tenants/{tenant}/ledger", None, hidden),
        ("GET", f"/admin/v1/keys?tenant_id={tenant}", None, hidden),
        ("POST", "/admin/v1/keys", {"tenant_id": tenant, "name": "planted"}, hidden),
        (
            "POST",
            "/admin/v1/keys",
            {"tenant_id": tenant, "name": "planted", "scope": "admin", "role": "tenant_admin"},
            hidden,
        ),
        ("GET", f"/admin/v1/usage?tenant_id={tenant}", None, hidden),
        ("GET", f"/admin/v1/usage?key_id={data_key}", None, hidden),
        ("GET", f"/admin/v1/audit?tenant_id={tenant}", None, hidden),
        ("GET", f"/admin/v1/audit/{victim.audit_seq}", None, hidden),
        ("GET", f"/admin/v1/analytics?tenant_id={tenant}", None, hidden),
        ("GET", f"/admin/v1/analytics/quota?tenant_id={tenant}", None, hidden),
        ("GET", f"/admin/v1/analytics/reconcile?tenant_id={tenant}", None, hidden),
        ("GET", f"/admin/v1/analytics?key_id={data_key}", None, hidden),
        ("GET", f"/admin/v1/analytics?group_by=key&key_id={admin_key}", None, hidden),
    ]
    for key_id in (data_key, admin_key, global_key_id):
        found += [
            ("GET", f"/admin/v1/keys/{key_id}", None, hidden),
            ("PATCH", f"/admin/v1/keys/{key_id}", {"name": "pwned", "allowed_models": None}, hidden),
            ("DELETE", f"/admin/v1/keys/{key_id}", None, hidden),
            ("POST", f"/admin/v1/keys/{key_id}/rotate", {"grace_seconds": 3600}, hidden),
        ]
    # The global catalog has no tenant: a tenant admin may neither read nor change it.
    found += [
        ("GET", "/admin/v1/providers/shared", None, forbidden),
        ("PUT", "/admin/v1/providers/shared", {"type": "fake", "enabled": False}, forbidden),
        ("PUT", "/admin/v1/providers/shared/credential", {"api_key": "sk-planted-0123456789"}, forbidden),
        ("GET", "/admin/v1/models/shared-model", None, forbidden),
        ("PUT", "/admin/v1/models/shared-model", {"provider": "shared", "upstream_model": "evil"}, forbidden),
        ("DELETE", "/admin/v1/models/shared-model", None, forbidden),
        ("GET", "/admin/v1/models/shared-model/prices", None, forbidden),
        ("PUT", "/admin/v1/models/shared-model/prices", {"cost": {"input": "0"}, "force": True}, forbidden),
    ]
    return found


def snapshot(services: Any) -> dict[str, list[str]]:
    """Every item of every table but the audit log, canonically."""
    from tollgate.store.schema import ALL_TABLES, AUDIT

    client = services.dynamodb
    tables: dict[str, list[str]] = {}
    for schema in ALL_TABLES:
        if schema is AUDIT:
            continue
        name = getattr(services.settings, f"{schema.logical_name.lower()}_table")
        items: list[str] = []
        arguments: dict[str, Any] = {"TableName": name}
        while True:
            page = client.scan(**arguments)
            items += [json.dumps(item, sort_keys=True) for item in page["Items"]]
            if "LastEvaluatedKey" not in page:
                break
            arguments["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        tables[name] = sorted(items)
    return tables


def _send(client: Any, method: str, path: str, body: dict[str, Any] | None, headers: dict[str, str]) -> Any:
    return client.request(method, path, json=body, headers=headers)


def _mask(text: str, *ids: str) -> str:
    for value in ids:
        text = text.replace(value, "<id>")
    return text


@pytest.mark.parametrize(("attacker", "victim"), [("alpha", "beta"), ("beta", "alpha")])
def test_bola_matrix_no_leaks_and_no_changes(
    client, services, admin_headers, world, attacker, victim
) -> None:
    sides: dict[str, TenantWorld] = world["tenants"]
    mine, theirs = sides[attacker], sides[victim]
    headers = bearer(mine.admin_key["key"])
    matrix = cases(theirs, world["global_key"]["id"])
    audit_head = client.get("/admin/v1/audit?limit=1", headers=admin_headers).json()["data"][0]["seq"]
    before = snapshot(services)

    leaks: list[str] = []
    wrong_status: list[str] = []
    oracles: list[str] = []
    attempts: dict[str, str] = {}
    for method, path, body, expected in matrix:
        response = _send(client, method, path, body, headers)
        attempts[response.headers["x-request-id"]] = f"{method} {path}"
        request_text = path + json.dumps(body)
        label = f"{method} {path}"
        if response.status_code not in expected:
            wrong_status.append(f"{label}: {response.status_code} {response.text[:200]}")
        secrets = [value for value in theirs.secrets() if value not in request_text]
        leaks += [f"{label} leaks {value!r}" for value in secrets if value in response.text]
        if response.status_code == 404:
            # A missing object of the same shape gets exactly the same answer: no existence oracle.
            ids = [theirs.tenant_id, theirs.data_key["id"], theirs.admin_key["id"], world["global_key"]["id"]]
            ghost_path = path
            for value in ids:
                ghost_path = ghost_path.replace(f"/{value}", "/ghost0000000000ff").replace(
                    f"={value}", "=ghost0000000000ff"
                )
            ghost_body = (
                json.loads(json.dumps(body).replace(f'"{theirs.tenant_id}"', '"ghost0000000000ff"'))
                if body
                else None
            )
            if f"/audit/{theirs.audit_seq}" in path:
                ghost_path = "/admin/v1/audit/999999"
                ids.append(str(theirs.audit_seq))
                ghost = _send(client, method, ghost_path, ghost_body, headers)
                same = ghost.status_code == 404 and _mask(ghost.text, "999999") == _mask(response.text, *ids)
            else:
                ghost = _send(client, method, ghost_path, ghost_body, headers)
                same = ghost.status_code == 404 and _mask(ghost.text, "ghost0000000000ff") == _mask(
                    response.text, *ids
                )
            if not same:
                oracles.append(f"{label}: {response.text} vs {ghost.text}")

    assert wrong_status == []
    assert leaks == []
    assert oracles == []
    assert snapshot(services) == before  # 0 changes

    new_entries = client.get("/admin/v1/audit?limit=1000", headers=admin_headers).json()["data"]
    new_entries = [entry for entry in new_entries if entry["seq"] > audit_head]
    unaudited = set(attempts) - {entry["request_id"] for entry in new_entries}
    assert [attempts[request_id] for request_id in unaudited] == [], "every denied attempt is audited"
    assert {entry["outcome"] for entry in new_entries} == {"denied"}
    assert {entry["tenant_id"] for entry in new_entries} == {attacker}  # never filed under the victim
    assert {entry["actor"] for entry in new_entries} == {f"key:{mine.admin_key['id']}"}


@pytest.mark.parametrize("attacker", ["alpha", "beta"])
def test_unfiltered_listings_show_only_the_callers_tenant(client, world, attacker) -> None:
    sides: dict[str, TenantWorld] = world["tenants"]
    victim = "beta" if attacker == "alpha" else "alpha"
    headers = bearer(sides[attacker].admin_key["key"])

    for path in ("/admin/v1/tenants", "/admin/v1/keys", "/admin/v1/usage", "/admin/v1/audit?limit=1000"):
        response = client.get(path, headers=headers)
        assert response.status_code == 200, path
        assert response.json()["data"], f"{path} shows the caller's own objects"
        for value in sides[victim].secrets():
            assert value not in response.text, f"{path} leaks {value!r}"
        assert f'"{victim}"' not in response.text, path

    usage = client.get("/admin/v1/usage", headers=headers).json()["data"]
    assert {record["tenant_id"] for record in usage} == {attacker}


#: Path parameters name objects; so do query parameters and body fields ending in ``_id``.
ID_SUFFIX = "_id"


def id_inputs(schema: dict[str, Any]) -> set[tuple[str, str, str]]:
    """``(METHOD, path template, parameter)`` for every input of an admin operation that names an
    object: every path parameter, and every query parameter or body field ending in ``_id``."""
    components = schema["components"]["schemas"]
    found: set[tuple[str, str, str]] = set()
    for path, item in schema["paths"].items():
        if not path.startswith("/admin/"):
            continue
        for method, operation in item.items():
            for param in operation.get("parameters", []):
                if param["in"] == "path" or param["name"].endswith(ID_SUFFIX):
                    found.add((method.upper(), path, param["name"]))
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
            reference = body.get("schema", {}).get("$ref")
            if reference:
                properties = components[reference.rsplit("/", 1)[1]].get("properties", {})
                for name in properties:
                    if name.endswith(ID_SUFFIX):
                        found.add((method.upper(), path, name))
    return found


def covered_inputs(schema: dict[str, Any], matrix: list[Case]) -> set[tuple[str, str, str]]:
    """The same triples, as the matrix exercises them: each case matched to its path template."""
    import re
    from urllib.parse import parse_qs, urlsplit

    templates = [
        (path, re.compile("^" + re.sub(r"\\{([a-z_]+)\\}", r"(?P<\1>[^/]+)", re.escape(path)) + "$"))
        for path in schema["paths"]
        if path.startswith("/admin/")
    ]
    covered: set[tuple[str, str, str]] = set()
    for method, url, body, _ in matrix:
        parts = urlsplit(url)
        matches = [(path, pattern.match(parts.path)) for path, pattern in templates]
        [(template, match)] = [(path, match) for path, match in matches if match]
        names = {*match.groupdict(), *parse_qs(parts.query), *(body or {})}
        covered |= {(method, template, name) for name in names}
    return covered


def test_the_matrix_covers_every_id_taking_admin_route(client, world) -> None:
    """Every admin input that names an object, in the OpenAPI document, is in the matrix above: a new
    route (or a new id parameter of an old one) fails here until the matrix exercises it."""
    schema = client.get("/openapi.json").json()
    taking_ids = id_inputs(schema)
    matrix = cases(world["tenants"]["beta"], world["global_key"]["id"])

    # The finder itself finds what it must (so this test can fail).
    assert {
        ("PATCH", "/admin/v1/keys/{key_id}", "key_id"),
        ("GET", "/admin/v1/analytics", "key_id"),
        ("GET", "/admin/v1/analytics/quota", "tenant_id"),
        ("POST", "/admin/v1/keys", "tenant_id"),
        ("GET", "/admin/v1/audit/{seq}", "seq"),
        ("GET", "/admin/v1/usage", "key_id"),
    } <= taking_ids
    assert taking_ids - covered_inputs(schema, matrix) == set()
