"""Privilege escalation: mass assignment, scope widening and role changes are all refused.

Every attempt below is made by a principal that is otherwise allowed to call the route; each must
fail (400 for a field that does not exist, 403 for a ceiling, 404 for another tenant, 405 for a
method that does not exist), leave no key or change behind, and be audited when it is a denial.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.functional.conftest import bearer


@pytest.fixture
def acme(make_tenant, tenant_key) -> str:  # type: ignore[no-untyped-def]
    """Tenants 'acme' (made by ``tenant_key``, with a data key) and 'other'."""
    make_tenant("other")
    return "acme"


def key_count(client: Any, admin_headers: dict[str, str]) -> int:
    total = 0
    for tenant in (None, "acme", "other"):
        params = {"tenant_id": tenant, "limit": 1000} if tenant else {"limit": 1000}
        total += len(client.get("/admin/v1/keys", params=params, headers=admin_headers).json()["data"])
    return total


# -- mass assignment: fields that do not exist in a request are refused, never stored ---------------

MASS_ASSIGNMENT = [
    ("POST", "/admin/v1/keys", {"tenant_id": "acme", "name": "x", "secret_hash": "0" * 64}),
    ("POST", "/admin/v1/keys", {"tenant_id": "acme", "name": "x", "id": "0123456789abcdef"}),
    (
        "POST",
        "/admin/v1/keys",
        {"tenant_id": "acme", "name": "x", "revoked_at": None, "created_by": "bootstrap"},
    ),
    ("POST", "/admin/v1/keys", {"tenant_id": "acme", "name": "x", "previous_secret_hash": "0" * 64}),
    ("POST", "/admin/v1/keys", {"tenant_id": "acme", "name": "x", "previous_valid_until": 4102444800}),
    ("POST", "/admin/v1/keys", {"tenant_id": "acme", "name": "x", "is_admin": True}),
    ("POST", "/admin/v1/keys", {"tenant_id": "acme", "name": "x", "role": "owner"}),  # a data key has no role
    ("POST", "/admin/v1/keys", {"tenant_id": "acme", "name": "x", "scope": "both"}),
    ("POST", "/admin/v1/keys", {"tenant_id": "acme", "name": "x", "scope": "admin", "role": "root"}),
    ("POST", "/admin/v1/keys", {"name": "x", "scope": "admin", "role": "tenant_admin"}),  # no tenant
    ("POST", "/admin/v1/keys", {"tenant_id": "acme", "name": "x", "scope": "admin", "role": "owner"}),
    ("POST", "/admin/v1/keys", {"tenant_id": "acme", "name": "x", "limits": {"rpm": 1, "unlimited": True}}),
    ("POST", "/admin/v1/keys/0123456789abcdef/rotate", {"grace_seconds": 0, "role": "owner"}),
    ("PATCH", "/admin/v1/keys/0123456789abcdef", {"role": "owner"}),
    ("PATCH", "/admin/v1/keys/0123456789abcdef", {"scope": "admin"}),
    ("PATCH", "/admin/v1/keys/0123456789abcdef", {"tenant_id": "other"}),
    ("PATCH", "/admin/v1/keys/0123456789abcdef", {"secret_hash": "0" * 64}),
    ("PATCH", "/admin/v1/keys/0123456789abcdef", {"created_by": "bootstrap"}),
    ("POST", "/admin/v1/tenants", {"id": "t2", "name": "T", "created_at": 0}),
    ("POST", "/admin/v1/tenants", {"id": "t2", "name": "T", "credits": "1000000"}),
    ("PATCH", "/admin/v1/tenants/acme", {"id": "other"}),
    ("PATCH", "/admin/v1/tenants/acme", {"tenant_admins": ["mallory"]}),
    ("POST", "/admin/v1/tenants/acme/credits", {"amount": "1", "idempotency_key": "k", "kind": "starter"}),
    ("POST", "/admin/v1/tenants/acme/credits", {"amount": "1", "idempotency_key": "k", "actor": "bootstrap"}),
    ("PUT", "/admin/v1/providers/p", {"type": "fake", "secret_id": "tollgate/other/providers/openai"}),
    ("PUT", "/admin/v1/providers/p", {"type": "fake", "api_key_hint": "sk-...real"}),
    ("PUT", "/admin/v1/providers/p/credential", {"api_key": "sk-0123456789abcdef", "secret_id": "x"}),
]


@pytest.mark.parametrize(("method", "path", "body"), MASS_ASSIGNMENT, ids=lambda v: str(v)[:60])
def test_mass_assignment_is_refused(client, admin_headers, acme, method, path, body) -> None:
    before = key_count(client, admin_headers)

    response = client.request(method, path, json=body, headers=admin_headers)

    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert key_count(client, admin_headers) == before
    assert client.get("/admin/v1/tenants/t2", headers=admin_headers).status_code == 404
    assert client.get("/admin/v1/tenants/acme", headers=admin_headers).json()["name"] == "Acme"


# -- scope widening: a key's creator is its ceiling -----------------------------------------------


def test_a_tenant_admin_cannot_widen_its_reach(client, admin_headers, issue_key, acme) -> None:
    tenant_admin = bearer(issue_key(tenant_id=acme, scope="admin", role="tenant_admin")["key"])
    before = key_count(client, admin_headers)

    attempts = {
        "another tenant's data key": ({"tenant_id": "other", "name": "x"}, 404),
        "another tenant's admin key": (
            {"tenant_id": "other", "name": "x", "scope": "admin", "role": "tenant_admin"},
            404,
        ),
        "a global admin key": ({"name": "x", "scope": "admin", "role": "admin"}, 403),
        "an owner key": ({"name": "x", "scope": "admin", "role": "owner"}, 403),
        "a viewer key (sees every tenant)": ({"name": "x", "scope": "admin", "role": "viewer"}, 403),
    }
    results = {
        name: client.post("/admin/v1/keys", json=body, headers=tenant_admin).status_code
        for name, (body, _) in attempts.items()
    }

    assert results == {name: status for name, (_, status) in attempts.items()}
    assert key_count(client, admin_headers) == before
    # Within its ceiling it may: its own tenant's data and tenant_admin keys.
    assert (
        client.post(
            "/admin/v1/keys", json={"tenant_id": acme, "name": "ok"}, headers=tenant_admin
        ).status_code
        == 201
    )


def test_an_admin_cannot_mint_an_owner_or_touch_owner_keys(client, admin_headers, issue_key, acme) -> None:
    admin = bearer(issue_key(scope="admin", role="admin")["key"])
    owner = issue_key(scope="admin", role="owner", name="the owner")

    assert (
        client.post(
            "/admin/v1/keys", json={"name": "x", "scope": "admin", "role": "owner"}, headers=admin
        ).status_code
        == 403
    )
    assert client.post(f"/admin/v1/keys/{owner['id']}/rotate", json={}, headers=admin).status_code == 403
    assert client.delete(f"/admin/v1/keys/{owner['id']}", headers=admin).status_code == 403
    assert client.get("/admin/v1/tenants", headers=bearer(owner["key"])).status_code == 200  # untouched
    # Its own level and below are fine.
    assert (
        client.post(
            "/admin/v1/keys", json={"name": "x", "scope": "admin", "role": "admin"}, headers=admin
        ).status_code
        == 201
    )


def test_a_viewer_changes_nothing(client, admin_headers, issue_key, acme, tenant_key) -> None:
    viewer = bearer(issue_key(scope="admin", role="viewer")["key"])
    data_key_id = tenant_key.split("-")[1]
    writes = [
        ("POST", "/admin/v1/keys", {"tenant_id": acme, "name": "x"}),
        ("POST", "/admin/v1/keys", {"name": "x", "scope": "admin", "role": "viewer"}),
        ("DELETE", f"/admin/v1/keys/{data_key_id}", None),
        ("POST", f"/admin/v1/keys/{data_key_id}/rotate", {}),
        ("PATCH", f"/admin/v1/keys/{data_key_id}", {"allowed_models": ["fake/echo"]}),
        ("POST", "/admin/v1/tenants", {"name": "x"}),
        ("PATCH", f"/admin/v1/tenants/{acme}", {"name": "x"}),
        ("POST", f"/admin/v1/tenants/{acme}/credits", {"amount": "5", "idempotency_key": "v"}),
        ("PUT", "/admin/v1/providers/p", {"type": "fake"}),
        ("PUT", "/admin/v1/models/m", {"provider": "fake", "upstream_model": "echo"}),
        ("PUT", "/admin/v1/models/fake/echo/prices", {"cost": {"input": "1"}}),
        ("DELETE", "/admin/v1/models/m", None),
    ]

    statuses = {
        f"{method} {path}": client.request(method, path, json=body, headers=viewer).status_code
        for method, path, body in writes
    }

    assert set(statuses.values()) == {403}, statuses
    assert client.get("/v1/models", headers=bearer(tenant_key)).status_code == 200  # not revoked, not rotated


def test_an_admin_key_with_limited_models_and_expiry_is_the_ceiling_of_its_keys(
    client, admin_headers, issue_key, acme, tenant_key
) -> None:
    expiry = int(time.time()) + 3600
    limited = bearer(
        issue_key(scope="admin", role="admin", allowed_models=["fake/echo"], expires_at=expiry)["key"]
    )
    body = {"tenant_id": acme, "name": "child"}

    refused = {
        "every model": {**body, "expires_at": expiry},
        "a model beyond its own": {
            **body,
            "allowed_models": ["fake/echo", "fake/image"],
            "expires_at": expiry,
        },
        "no expiry": {**body, "allowed_models": ["fake/echo"]},
        "a later expiry": {**body, "allowed_models": ["fake/echo"], "expires_at": expiry + 1},
        "an admin key beyond its models": {
            "name": "x",
            "scope": "admin",
            "role": "viewer",
            "expires_at": expiry,
        },
    }
    statuses = {
        name: client.post("/admin/v1/keys", json=value, headers=limited).status_code
        for name, value in refused.items()
    }

    assert set(statuses.values()) == {403}, statuses
    within = {**body, "allowed_models": ["fake/echo"], "expires_at": expiry}
    assert client.post("/admin/v1/keys", json=within, headers=limited).status_code == 201
    # Rotating hands out a working secret, so a wider key cannot be rotated by it either.
    wide_key_id = tenant_key.split("-")[1]
    assert client.post(f"/admin/v1/keys/{wide_key_id}/rotate", json={}, headers=limited).status_code == 403
    assert client.get("/v1/models", headers=bearer(tenant_key)).status_code == 200


def test_there_is_no_way_to_change_a_role(client, admin_headers, issue_key, acme) -> None:
    tenant_admin = issue_key(tenant_id=acme, scope="admin", role="tenant_admin")
    headers = bearer(tenant_admin["key"])
    path = f"/admin/v1/keys/{tenant_admin['id']}"

    # PATCH updates a key's name, models, expiry, budget and limits; role, scope and tenant are not fields.
    assert client.patch(path, json={"role": "owner"}, headers=headers).status_code == 400
    assert client.put(path, json={"role": "owner"}, headers=headers).status_code == 405
    assert client.patch(path, json={"role": "owner"}, headers=admin_headers).status_code == 400
    assert (
        client.patch(path, json={"scope": "data", "tenant_id": None}, headers=admin_headers).status_code
        == 400
    )
    assert client.post(f"{path}/rotate", json={"role": "owner"}, headers=headers).status_code == 400
    assert (
        client.post(f"{path}/rotate", json={"scope": "admin", "tenant_id": None}, headers=headers).status_code
        == 400
    )
    # Rotating itself keeps its role and tenant.
    rotated = client.post(f"{path}/rotate", json={}, headers=headers).json()
    assert (rotated["role"], rotated["tenant_id"]) == ("tenant_admin", acme)
    assert client.get("/admin/v1/providers", headers=bearer(rotated["key"])).status_code == 403


def test_planes_never_cross(client, admin_headers, issue_key, acme, tenant_key) -> None:
    owner_key = issue_key(scope="admin", role="owner")["key"]
    for admin_credential in (owner_key, admin_headers["Authorization"].removeprefix("Bearer ")):
        assert client.get("/v1/models", headers=bearer(admin_credential)).status_code == 401
        chat = {"model": "fake/echo", "messages": [{"role": "user", "content": "hi"}]}
        assert (
            client.post("/v1/chat/completions", json=chat, headers=bearer(admin_credential)).status_code
            == 401
        )
    for admin_route in (
        "/admin/v1/tenants",
        "/admin/v1/keys?tenant_id=acme",
        f"/admin/v1/tenants/{acme}/balance",
    ):
        assert client.get(admin_route, headers=bearer(tenant_key)).status_code == 401


def test_denials_are_audited(client, admin_headers, issue_key, acme) -> None:
    viewer = issue_key(scope="admin", role="viewer")
    client.post("/admin/v1/tenants", json={"name": "x"}, headers=bearer(viewer["key"]))

    [entry] = client.get(
        "/admin/v1/audit", params={"actor": f"key:{viewer['id']}"}, headers=admin_headers
    ).json()["data"]
    assert (entry["action"], entry["outcome"], entry["status"], entry["role"]) == (
        "tenant.create",
        "denied",
        403,
        "viewer",
    )


# -- scope widening through an update (PATCH): the caller's ceiling applies to the key it leaves ----


def test_an_update_cannot_widen_a_key_beyond_its_callers_ceiling(
    client, admin_headers, issue_key, acme, tenant_key
) -> None:
    expiry = int(time.time()) + 3600
    limited_key = issue_key(scope="admin", role="admin", allowed_models=["fake/echo"], expires_at=expiry)
    limited = bearer(limited_key["key"])
    child = issue_key(tenant_id=acme, name="child", allowed_models=["fake/echo"], expires_at=expiry)
    path = f"/admin/v1/keys/{child['id']}"
    before = client.get(path, headers=admin_headers).json()

    refused = {
        "every model": {"allowed_models": None},
        "a model beyond its own": {"allowed_models": ["fake/echo", "fake/image"]},
        "no expiry": {"expires_at": None},
        "a later expiry": {"expires_at": expiry + 1},
    }
    statuses = {
        name: client.patch(path, json=body, headers=limited).status_code for name, body in refused.items()
    }

    assert set(statuses.values()) == {403}, statuses
    assert client.get(path, headers=admin_headers).json() == before
    # A key already wider than the caller cannot be touched, only narrowed into its reach...
    wide = f"/admin/v1/keys/{tenant_key.split('-')[1]}"
    assert client.patch(wide, json={"name": "renamed"}, headers=limited).status_code == 403
    narrowed = client.patch(
        wide, json={"allowed_models": ["fake/echo"], "expires_at": expiry}, headers=limited
    )
    assert narrowed.status_code == 200, narrowed.text
    # ...and within its ceiling it may.
    assert (
        client.patch(path, json={"name": "ok", "expires_at": expiry - 60}, headers=limited).status_code == 200
    )
    # It cannot lift its own ceiling either.
    own = f"/admin/v1/keys/{limited_key['id']}"
    assert client.patch(own, json={"allowed_models": None}, headers=limited).status_code == 403
    assert client.patch(own, json={"expires_at": expiry + 3600}, headers=limited).status_code == 403
    denied = client.get(
        "/admin/v1/audit",
        params={"actor": f"key:{limited_key['id']}", "action": "key.update", "outcome": "denied"},
        headers=admin_headers,
    ).json()["data"]
    assert len(denied) == len(refused) + 3


def test_an_update_respects_roles_and_tenants(client, admin_headers, issue_key, acme) -> None:
    admin = bearer(issue_key(scope="admin", role="admin")["key"])
    owner = issue_key(scope="admin", role="owner", name="the owner")
    expiring = int(time.time()) + 600
    tenant_admin_key = issue_key(tenant_id=acme, scope="admin", role="tenant_admin", expires_at=expiring)
    tenant_admin = bearer(tenant_admin_key["key"])
    other_key = issue_key(tenant_id="other", name="theirs")

    assert client.patch(f"/admin/v1/keys/{owner['id']}", json={"name": "x"}, headers=admin).status_code == 403
    assert (
        client.patch(
            f"/admin/v1/keys/{other_key['id']}", json={"name": "x"}, headers=tenant_admin
        ).status_code
        == 404
    )
    own = f"/admin/v1/keys/{tenant_admin_key['id']}"
    assert client.patch(own, json={"expires_at": None}, headers=tenant_admin).status_code == 403
    assert client.patch(own, json={"expires_at": expiring + 3600}, headers=tenant_admin).status_code == 403
    assert client.get(f"/admin/v1/keys/{owner['id']}", headers=admin_headers).json()["name"] == "the owner"
    assert client.get(f"/admin/v1/keys/{other_key['id']}", headers=admin_headers).json()["name"] == "theirs"
    assert client.get(own, headers=admin_headers).json()["expires_at"] == expiring
