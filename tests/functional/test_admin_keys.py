"""Hub keys through the admin API: scopes, rotation with a grace period, revocation within 60 s,
write-only provider credentials and paginated lists."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.functional.conftest import bearer
from tollgate.errors import AuthenticationError
from tollgate.keys import REFRESH_AFTER_MISMATCH_SECONDS, KeyAuthenticator


class Clock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def another_process(settings, clock: Clock) -> KeyAuthenticator:  # type: ignore[no-untyped-def]
    """A second warm Lambda: its own caches over the same tables, and a clock the test moves."""
    from tollgate.container import Services

    other = Services(settings)
    return KeyAuthenticator(other.catalog, other.secrets, cache_ttl=settings.cache_ttl_seconds, clock=clock)


def accepts(authenticator: KeyAuthenticator, token: str) -> bool:
    try:
        asyncio.run(authenticator.authenticate(token))
    except AuthenticationError:
        return False
    return True


@pytest.fixture
def acme(make_tenant) -> str:  # type: ignore[no-untyped-def]
    make_tenant("acme")
    return "acme"


def test_rotation_keeps_the_key_id_and_the_old_secret_works_until_the_grace_ends(
    client, admin_headers, settings, issue_key, acme
) -> None:
    import time

    old = issue_key(tenant_id=acme)
    clock = Clock(time.time())
    process = another_process(settings, clock)

    rotated = client.post(
        f"/admin/v1/keys/{old['id']}/rotate", json={"grace_seconds": 120}, headers=admin_headers
    )

    assert rotated.status_code == 200, rotated.text
    new = rotated.json()
    assert new["id"] == old["id"]
    assert new["key"] != old["key"] and new["key"].startswith(f"tg-{old['id']}-")
    assert new["previous_valid_until"] == new["rotated_at"] + 120
    assert accepts(process, new["key"]) and accepts(process, old["key"])
    clock.now = new["previous_valid_until"] - 1
    assert accepts(process, old["key"])
    clock.now = new["previous_valid_until"]
    assert not accepts(process, old["key"])
    assert accepts(process, new["key"])
    # The key is shown once: reads never carry it.
    shown = client.get(f"/admin/v1/keys/{old['id']}", headers=admin_headers).json()
    assert "key" not in shown and new["key"] not in json.dumps(shown)


def test_without_a_grace_the_old_secret_stops_at_once(client, admin_headers, tenant_key) -> None:
    assert client.get("/v1/models", headers=bearer(tenant_key)).status_code == 200
    key_id = tenant_key.split("-")[1]

    new = client.post(f"/admin/v1/keys/{key_id}/rotate", json={}, headers=admin_headers).json()["key"]

    assert client.get("/v1/models", headers=bearer(tenant_key)).status_code == 401
    assert client.get("/v1/models", headers=bearer(new)).status_code == 200


def test_a_process_that_cached_the_key_accepts_the_new_secret_at_once(
    client, admin_headers, settings, issue_key, acme
) -> None:
    import time

    old = issue_key(tenant_id=acme)
    clock = Clock(time.time())
    process = another_process(settings, clock)
    assert accepts(process, old["key"])  # the old record is now cached there

    new = client.post(f"/admin/v1/keys/{old['id']}/rotate", json={}, headers=admin_headers).json()
    # That process lives on past the rotation. (A clock left before it, in the second before the
    # rotation's whole-second stamp, would still see the old secret in its zero-second grace.)
    clock.now = time.time()

    assert accepts(process, new["key"])  # a mismatch re-reads the key (at most every few seconds)
    assert not accepts(process, old["key"])


def test_wrong_secrets_for_a_real_key_do_not_each_cost_a_read(settings, issue_key, acme, monkeypatch) -> None:
    import time

    key = issue_key(tenant_id=acme)
    clock = Clock(time.time())
    process = another_process(settings, clock)
    reads: list[str] = []
    original = process._catalog.get_key
    monkeypatch.setattr(process._catalog, "get_key", lambda key_id: reads.append(key_id) or original(key_id))
    wrong = f"tg-{key['id']}-{'A' * 43}"

    for _ in range(50):
        assert not accepts(process, wrong)
    assert len(reads) == 2  # the first lookup, and one re-read after the first mismatch

    clock.now += REFRESH_AFTER_MISMATCH_SECONDS + 0.1
    assert not accepts(process, wrong)
    assert len(reads) == 3


def test_a_revocation_reaches_every_process_within_60_seconds(
    client, admin_headers, settings, issue_key, acme
) -> None:
    import time

    key = issue_key(tenant_id=acme)
    clock = Clock(time.time())
    process = another_process(settings, clock)
    assert accepts(process, key["key"])  # cached there

    assert client.delete(f"/admin/v1/keys/{key['id']}", headers=admin_headers).status_code == 200

    assert client.get("/v1/models", headers=bearer(key["key"])).status_code == 401  # this process: at once
    assert settings.cache_ttl_seconds <= 60
    clock.now += settings.cache_ttl_seconds + 0.01
    assert not accepts(process, key["key"])


def test_the_key_cache_cannot_be_configured_beyond_60_seconds(settings) -> None:
    from pydantic import ValidationError

    from tollgate.settings import Settings

    with pytest.raises(ValidationError):
        Settings.model_validate({**settings.model_dump(), "cache_ttl_seconds": 61})


def test_rotation_limits(client, admin_headers, settings, issue_key, acme) -> None:
    key = issue_key(tenant_id=acme)
    too_long = settings.key_rotation_max_grace_seconds + 1  # within the schema's 30 days, beyond the cap
    response = client.post(
        f"/admin/v1/keys/{key['id']}/rotate", json={"grace_seconds": too_long}, headers=admin_headers
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "grace_seconds"
    assert (
        client.post(
            f"/admin/v1/keys/{key['id']}/rotate", json={"grace_seconds": -1}, headers=admin_headers
        ).status_code
        == 400
    )
    client.delete(f"/admin/v1/keys/{key['id']}", headers=admin_headers)
    revoked = client.post(f"/admin/v1/keys/{key['id']}/rotate", json={}, headers=admin_headers)
    assert revoked.status_code == 409
    assert (
        client.post("/admin/v1/keys/0000000000000000/rotate", json={}, headers=admin_headers).status_code
        == 404
    )


def test_admin_keys_work_on_the_admin_plane_only(client, admin_headers, issue_key, tenant_key) -> None:
    admin = issue_key(scope="admin", role="admin", name="automation")

    assert client.get("/admin/v1/tenants", headers=bearer(admin["key"])).status_code == 200
    assert client.get("/v1/models", headers=bearer(admin["key"])).status_code == 401
    assert client.post("/v1/messages", json={}, headers={"x-api-key": admin["key"]}).status_code == 401
    # ...and data-plane keys (and the bootstrap key) the other way round.
    assert client.get("/admin/v1/tenants", headers=bearer(tenant_key)).status_code == 401
    assert client.get("/admin/v1/tenants", headers={"x-api-key": tenant_key}).status_code == 401
    assert client.get("/v1/models", headers=admin_headers).status_code == 401


def test_revoked_and_expired_admin_keys_are_refused(client, admin_headers, issue_key, settings) -> None:
    import time

    revoked = issue_key(scope="admin", role="viewer")
    client.delete(f"/admin/v1/keys/{revoked['id']}", headers=admin_headers)
    assert client.get("/admin/v1/tenants", headers=bearer(revoked["key"])).status_code == 401

    expiring = issue_key(scope="admin", role="viewer", expires_at=int(time.time()) + 100)
    clock = Clock(time.time() + 101)
    process = another_process(settings, clock)
    with pytest.raises(AuthenticationError, match="expired"):
        process.authenticate_admin(expiring["key"])


def test_keys_keep_their_budgets_limits_and_models(client, admin_headers, issue_key, acme) -> None:
    key = issue_key(
        tenant_id=acme,
        allowed_models=["fake/echo"],
        budget={"amount": "5", "period": "day"},
        limits={"rpm": 10, "tpm": 1000, "max_concurrency": 2},
    )

    shown = client.get(f"/admin/v1/keys/{key['id']}", headers=admin_headers).json()
    assert shown["budget"] == {"amount": "5.000000", "period": "day"}
    assert shown["limits"] == {"rpm": 10, "tpm": 1000, "max_concurrency": 2}
    assert shown["allowed_models"] == ["fake/echo"]
    assert shown["scope"] == "data" and shown["role"] is None
    models = client.get("/v1/models", headers=bearer(key["key"])).json()["data"]
    assert [model["id"] for model in models] == ["fake/echo"]


def test_a_provider_credential_is_rotated_write_only(client, admin_headers, services) -> None:
    first, second = "sk-first-credential-0123456789", "sk-second-credential-9876543210"
    created = client.put(
        "/admin/v1/providers/openai", json={"type": "openai", "api_key": first}, headers=admin_headers
    )
    assert created.status_code == 200

    rotated = client.put(
        "/admin/v1/providers/openai/credential", json={"api_key": second}, headers=admin_headers
    )

    assert rotated.status_code == 200
    assert rotated.json()["api_key_hint"] == "sk-...3210"
    for response in (created, rotated, client.get("/admin/v1/providers", headers=admin_headers)):
        assert first not in response.text and second not in response.text
    record = services.catalog.get_provider("openai")
    assert services.secrets.provider_key(record.secret_id, force=True) == second
    missing = client.put(
        "/admin/v1/providers/nobody/credential", json={"api_key": second}, headers=admin_headers
    )
    assert missing.status_code == 404


@pytest.mark.parametrize(
    "path", ["/admin/v1/providers", "/admin/v1/models", "/admin/v1/tenants", "/admin/v1/keys"]
)
def test_lists_paginate(client, admin_headers, issue_key, path) -> None:
    for n in range(3):
        client.put(f"/admin/v1/providers/p{n}", json={"type": "fake"}, headers=admin_headers)
        client.put(
            f"/admin/v1/models/m{n}",
            json={"provider": f"p{n}", "upstream_model": "echo"},
            headers=admin_headers,
        )
        client.post("/admin/v1/tenants", json={"id": f"t{n}", "name": "T"}, headers=admin_headers)
        issue_key(scope="admin", role="viewer", name=f"v{n}")

    seen: list[str] = []
    cursor = None
    for _ in range(10):
        query = {"limit": 1} | ({"cursor": cursor} if cursor else {})
        page = client.get(path, params=query, headers=admin_headers).json()
        assert len(page["data"]) <= 1
        seen += [json.dumps(item, sort_keys=True) for item in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) >= 3


# -- updating a key (PATCH): absent fields stay, null clears, the key id and secret never change ----


def test_a_key_is_updated_in_place_and_the_data_plane_sees_it_at_once(
    client, admin_headers, issue_key, acme
) -> None:
    import time

    key = issue_key(tenant_id=acme, name="before", allowed_models=["fake/echo", "fake/image"])
    expiry = int(time.time()) + 3600
    change = {
        "name": "after",
        "allowed_models": ["fake/echo"],
        "expires_at": expiry,
        "budget": {"amount": "7.5", "period": "week"},
        "limits": {"rpm": 5},
    }

    updated = client.patch(f"/admin/v1/keys/{key['id']}", json=change, headers=admin_headers)

    assert updated.status_code == 200, updated.text
    shown = client.get(f"/admin/v1/keys/{key['id']}", headers=admin_headers).json()
    assert shown == updated.json()
    assert (shown["id"], shown["name"], shown["allowed_models"], shown["expires_at"]) == (
        key["id"],
        "after",
        ["fake/echo"],
        expiry,
    )
    assert shown["budget"] == {"amount": "7.500000", "period": "week"}
    assert shown["limits"] == {"rpm": 5, "tpm": None, "max_concurrency": None}
    assert "key" not in shown
    # The same secret keeps working, within the narrower scope, in this process at once.
    models = client.get("/v1/models", headers=bearer(key["key"])).json()["data"]
    assert [model["id"] for model in models] == ["fake/echo"]


def test_absent_fields_stay_and_null_clears(client, admin_headers, issue_key, acme) -> None:
    import time

    key = issue_key(
        tenant_id=acme,
        allowed_models=["fake/echo"],
        expires_at=int(time.time()) + 3600,
        budget={"amount": "5", "period": "day"},
        limits={"rpm": 10},
    )
    path = f"/admin/v1/keys/{key['id']}"

    renamed = client.patch(path, json={"name": "renamed"}, headers=admin_headers).json()
    assert (renamed["allowed_models"], renamed["expires_at"], renamed["budget"], renamed["limits"]) == (
        key["allowed_models"],
        key["expires_at"],
        key["budget"],
        key["limits"],
    )

    cleared = client.patch(
        path,
        json={"allowed_models": None, "expires_at": None, "budget": None, "limits": None},
        headers=admin_headers,
    )
    assert cleared.status_code == 200, cleared.text
    body = cleared.json()
    assert (body["name"], body["allowed_models"], body["expires_at"], body["budget"], body["limits"]) == (
        "renamed",
        None,
        None,
        None,
        None,
    )
    assert client.patch(path, json={"name": None}, headers=admin_headers).status_code == 400


def test_a_key_update_is_audited_without_secrets(client, admin_headers, issue_key, acme) -> None:
    key = issue_key(tenant_id=acme, name="before")

    client.patch(f"/admin/v1/keys/{key['id']}", json={"name": "after"}, headers=admin_headers)

    [entry] = client.get("/admin/v1/audit?action=key.update", headers=admin_headers).json()["data"]
    assert (entry["target"], entry["tenant_id"], entry["outcome"]) == (f"key:{key['id']}", acme, "ok")
    assert entry["diff"] == {"name": ["before", "after"]}
    secret = key["key"].split("-", 2)[2]  # the secret itself may hold a "-"
    assert key["key"] not in json.dumps(entry) and secret not in json.dumps(entry)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"role": "owner"}, 400),
        ({"scope": "admin"}, 400),
        ({"tenant_id": "other"}, 400),
        ({"secret_hash": "0" * 64}, 400),
        ({"revoked_at": None}, 400),
        ({"previous_valid_until": 4102444800}, 400),
        ({"expires_at": 1}, 400),  # in the past
        ({"limits": {"rpm": 0}}, 400),
        ({"limits": {"rpm": 1, "unlimited": True}}, 400),
        ({"allowed_models": [""]}, 400),
    ],
)
def test_invalid_key_updates_change_nothing(client, admin_headers, issue_key, acme, body, status) -> None:
    key = issue_key(tenant_id=acme)
    before = client.get(f"/admin/v1/keys/{key['id']}", headers=admin_headers).json()

    response = client.patch(f"/admin/v1/keys/{key['id']}", json=body, headers=admin_headers)

    assert response.status_code == status, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert client.get(f"/admin/v1/keys/{key['id']}", headers=admin_headers).json() == before


def test_budgets_and_limits_are_for_data_plane_keys_only(client, admin_headers, issue_key) -> None:
    admin_key = issue_key(scope="admin", role="viewer")
    path = f"/admin/v1/keys/{admin_key['id']}"

    for body in ({"budget": {"amount": "1", "period": "day"}}, {"limits": {"rpm": 1}}):
        response = client.patch(path, json=body, headers=admin_headers)
        assert response.status_code == 400, body
    # An admin key's models and expiry are the ceiling of what it issues, and may change.
    assert (
        client.patch(path, json={"allowed_models": ["fake/echo"]}, headers=admin_headers).status_code == 200
    )


def test_a_revoked_or_missing_key_cannot_be_updated(client, admin_headers, issue_key, acme) -> None:
    key = issue_key(tenant_id=acme)
    client.delete(f"/admin/v1/keys/{key['id']}", headers=admin_headers)

    assert (
        client.patch(f"/admin/v1/keys/{key['id']}", json={"name": "x"}, headers=admin_headers).status_code
        == 409
    )
    missing = client.patch("/admin/v1/keys/0000000000000000", json={"name": "x"}, headers=admin_headers)
    assert missing.status_code == 404


def test_an_update_reaches_every_process_within_60_seconds(
    client, admin_headers, settings, issue_key, acme
) -> None:
    import time

    key = issue_key(tenant_id=acme)
    clock = Clock(time.time())
    process = another_process(settings, clock)
    assert asyncio.run(process.authenticate(key["key"])).allowed_models is None  # cached there

    client.patch(f"/admin/v1/keys/{key['id']}", json={"allowed_models": ["fake/echo"]}, headers=admin_headers)

    clock.now += settings.cache_ttl_seconds + 0.01
    assert asyncio.run(process.authenticate(key["key"])).allowed_models == frozenset({"fake/echo"})
