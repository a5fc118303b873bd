"""The audit log: every admin change and every denied attempt, append-only and hash-chained."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from tests.functional.conftest import bearer
from tollgate.store.audit import AuditDraft, DynamoAuditLog

PROVIDER_SECRET = "sk-audit-canary-provider-0123456789"


def entries(client: Any, headers: dict[str, str], **query: Any) -> list[dict[str, Any]]:
    response = client.get("/admin/v1/audit", params={"limit": 1000, **query}, headers=headers)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["data"]
    return found


def test_every_change_is_recorded_with_actor_action_target_diff_request_id_and_time(
    client, admin_headers
) -> None:
    started = int(time.time() * 1000)
    changes = [
        (
            "PUT",
            "/admin/v1/providers/openai",
            {"type": "openai", "api_key": PROVIDER_SECRET},
            "provider.put",
            "provider:openai",
        ),
        (
            "PUT",
            "/admin/v1/providers/openai/credential",
            {"api_key": PROVIDER_SECRET + "x"},
            "provider.credential",
            "provider:openai",
        ),
        (
            "PUT",
            "/admin/v1/models/gpt",
            {"provider": "openai", "upstream_model": "gpt-4o-mini"},
            "model.put",
            "model:gpt",
        ),
        (
            "PUT",
            "/admin/v1/models/gpt/prices",
            {"cost": {"input": "0.15", "output": "0.6"}},
            "price.put",
            "model:gpt",
        ),
        ("POST", "/admin/v1/tenants", {"id": "acme", "name": "Acme"}, "tenant.create", "tenant:acme"),
        ("PATCH", "/admin/v1/tenants/acme", {"name": "Acme Corp"}, "tenant.update", "tenant:acme"),
        (
            "POST",
            "/admin/v1/tenants/acme/credits",
            {"amount": "10", "idempotency_key": "t1"},
            "credits.add",
            "tenant:acme",
        ),
        ("POST", "/admin/v1/keys", {"tenant_id": "acme", "name": "prod"}, "key.create", None),
        ("DELETE", "/admin/v1/models/gpt", None, "model.delete", "model:gpt"),
    ]
    made: list[tuple[str, str | None, str, str]] = []
    secrets = [PROVIDER_SECRET, PROVIDER_SECRET + "x"]
    key_id = ""
    for method, path, body, action, target in changes:
        response = client.request(method, path, json=body, headers=admin_headers)
        assert response.status_code < 300, response.text
        if action == "key.create":
            key_id = response.json()["id"]
            secrets.append(response.json()["key"])
            target = f"key:{key_id}"
        made.append((action, target, response.headers["x-request-id"], response.text))
    for method, path, action in (
        ("POST", f"/admin/v1/keys/{key_id}/rotate", "key.rotate"),
        ("DELETE", f"/admin/v1/keys/{key_id}", "key.revoke"),
    ):
        response = client.request(method, path, json={} if method == "POST" else None, headers=admin_headers)
        assert response.status_code == 200
        made.append((action, f"key:{key_id}", response.headers["x-request-id"], response.text))
        if action == "key.rotate":
            secrets.append(response.json()["key"])
    finished = int(time.time() * 1000)

    recorded = list(reversed(entries(client, admin_headers, outcome="ok")))
    assert [(e["action"], e["target"], e["request_id"]) for e in recorded] == [
        (a, t, r) for a, t, r, _ in made
    ]
    for entry in recorded:
        assert entry["actor"] == "bootstrap" and entry["role"] == "owner"
        assert started <= entry["at_ms"] <= finished
        assert entry["diff"], entry["action"]
    by_action = {entry["action"]: entry for entry in recorded}
    assert by_action["tenant.update"]["diff"]["name"] == ["Acme", "Acme Corp"]
    assert by_action["tenant.update"]["tenant_id"] == "acme"
    assert by_action["key.revoke"]["diff"]["revoked_at"][0] is None
    assert by_action["provider.credential"]["diff"]["api_key_hint"] == ["sk-...6789", "sk-...789x"]
    assert by_action["model.delete"]["diff"]["upstream_model"] == ["gpt-4o-mini", None]
    text = json.dumps(recorded)
    for secret in secrets:
        assert secret not in text
    assert "secret_hash" not in text


def test_denied_attempts_are_recorded(client, admin_headers, issue_key, make_tenant) -> None:
    make_tenant("acme")
    viewer = issue_key(scope="admin", role="viewer")
    unauthenticated = client.get("/admin/v1/tenants", headers={"Authorization": "Bearer not-a-key"})
    forbidden = client.post("/admin/v1/tenants", json={"name": "x"}, headers=bearer(viewer["key"]))

    denied = entries(client, admin_headers, outcome="denied")

    assert [(e["action"], e["status"], e["request_id"]) for e in denied] == [
        ("tenant.create", 403, forbidden.headers["x-request-id"]),
        ("auth.denied", 401, unauthenticated.headers["x-request-id"]),
    ]
    assert denied[1]["actor"] == "anonymous" and denied[1]["target"] == "GET /admin/v1/tenants"
    assert "not-a-key" not in json.dumps(denied)


def test_the_chain_verifies_and_a_tampered_entry_is_reported(
    client, admin_headers, services, make_tenant
) -> None:
    for n in range(5):
        make_tenant(f"t{n}")
    verified = client.get("/admin/v1/audit?verify=true", headers=admin_headers).json()["verification"]
    assert verified == {
        "verified": True,
        "entries": 5,
        "head_seq": 5,
        "first_broken_seq": None,
        "reason": None,
    }

    table, dynamodb = services.settings.audit_table, services.dynamodb
    key = {"pk": {"S": "LOG"}, "sk": {"S": f"SEQ#{3:016d}"}}
    original = dynamodb.get_item(TableName=table, Key=key)["Item"]
    dynamodb.put_item(TableName=table, Item={**original, "actor": {"S": "someone-else"}})

    report = client.get("/admin/v1/audit?verify=true", headers=admin_headers).json()["verification"]
    assert (report["verified"], report["first_broken_seq"]) == (False, 3)
    assert "hash" in report["reason"]

    dynamodb.put_item(TableName=table, Item=original)
    dynamodb.delete_item(TableName=table, Key={"pk": {"S": "LOG"}, "sk": {"S": f"SEQ#{2:016d}"}})
    report = client.get("/admin/v1/audit?verify=true", headers=admin_headers).json()["verification"]
    assert (report["first_broken_seq"], report["reason"]) == (2, "an entry is missing")


def test_a_rewritten_or_truncated_tail_is_reported(services) -> None:
    log = services.audit_log
    for n in range(3):
        log.append(
            AuditDraft(request_id=f"r{n}", actor="test", action="x.y", target="t", outcome="ok", status=200)
        )
    table, dynamodb = services.settings.audit_table, services.dynamodb
    dynamodb.delete_item(TableName=table, Key={"pk": {"S": "LOG"}, "sk": {"S": f"SEQ#{3:016d}"}})

    check = log.verify()
    assert (check.verified, check.first_broken_seq) == (False, 3)

    # Re-forging the last entry consistently still cannot match the head's hash.
    dynamodb.update_item(
        TableName=table,
        Key={"pk": {"S": "LOG"}, "sk": {"S": "HEAD"}},
        UpdateExpression="SET seq = :two",
        ExpressionAttributeValues={":two": {"N": "2"}},
    )
    check = log.verify()
    assert (check.verified, check.first_broken_seq, check.reason) == (
        False,
        2,
        "the entry at the head does not match the head",
    )


def test_concurrent_appends_keep_one_linear_chain(monkeypatch) -> None:
    """Against moto's server, which applies each conditional write atomically (as DynamoDB does)."""
    from tollgate.container import aws_client
    from tollgate.local.bootstrap import create_table
    from tollgate.local.runner import start_moto
    from tollgate.store.schema import AUDIT

    endpoint = start_moto(0)
    for name, value in {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    client = aws_client("dynamodb")
    create_table(client, "audit-race", AUDIT)
    log = DynamoAuditLog(client, "audit-race")
    workers, each = 6, 12
    failures: list[BaseException] = []

    def append(worker: int) -> None:
        try:
            for n in range(each):
                log.append(
                    AuditDraft(
                        request_id=f"{worker}-{n}",
                        actor=f"w{worker}",
                        action="race.append",
                        target="t",
                        outcome="ok",
                        status=200,
                    )
                )
        except BaseException as error:  # reported below
            failures.append(error)

    threads = [threading.Thread(target=append, args=(worker,)) for worker in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    check = log.verify()
    assert (check.verified, check.entries, check.head_seq) == (True, workers * each, workers * each)
    request_ids = {record.request_id for record in log._ascending()}
    assert len(request_ids) == workers * each  # every append landed exactly once


def test_a_tenant_admin_reads_only_its_tenants_entries(client, admin_headers, issue_key, make_tenant) -> None:
    make_tenant("acme")
    make_tenant("other")
    issue_key(tenant_id="other", name="theirs")
    mine = issue_key(tenant_id="acme", scope="admin", role="tenant_admin")
    headers = bearer(mine["key"])
    client.post(
        "/admin/v1/keys", json={"tenant_id": "acme", "name": "made by the tenant admin"}, headers=headers
    )

    visible = entries(client, headers)
    assert visible and {entry["tenant_id"] for entry in visible} == {"acme"}
    assert client.get("/admin/v1/audit?tenant_id=other", headers=headers).status_code == 404
    assert client.get("/admin/v1/audit?verify=true", headers=headers).status_code == 403
    others = entries(client, admin_headers, tenant_id="other")
    assert client.get(f"/admin/v1/audit/{others[0]['seq']}", headers=headers).status_code == 404
    assert client.get(f"/admin/v1/audit/{visible[0]['seq']}", headers=headers).json() == visible[0]


def test_listing_filters_and_pages(client, admin_headers, make_tenant) -> None:
    for n in range(7):
        make_tenant(f"t{n}")
    client.get("/admin/v1/tenants", headers={"Authorization": "Bearer wrong"})

    assert len(entries(client, admin_headers, action="tenant.create")) == 7
    assert len(entries(client, admin_headers, outcome="denied")) == 1
    assert entries(client, admin_headers, actor="nobody") == []
    assert [e["tenant_id"] for e in entries(client, admin_headers, tenant_id="t3")] == ["t3"]
    future = "2999-01-01T00:00:00Z"
    assert entries(client, admin_headers, since=future) == []
    assert len(entries(client, admin_headers, until=future)) == 8

    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = client.get("/admin/v1/audit", params=params, headers=admin_headers).json()
        seen += [entry["seq"] for entry in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(range(8, 0, -1))
    assert client.get("/admin/v1/audit?cursor=abc", headers=admin_headers).status_code == 400


@pytest.mark.parametrize("verify", ["true", "false"])
def test_an_empty_log_lists_and_verifies(client, admin_headers, verify) -> None:
    page = client.get(f"/admin/v1/audit?verify={verify}", headers=admin_headers).json()

    assert page["data"] == []
    if verify == "true":
        assert page["verification"]["verified"] is True
