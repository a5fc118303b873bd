"""The quota view and what reconciliation reports when the three sources disagree (credit mode)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tollgate.store.records import UsageRecord

DAY = 86_400_000


def usage(request_id: str, at_ms: int, **changes: Any) -> UsageRecord:
    values: dict[str, Any] = {
        "request_id": request_id,
        "tenant_id": "acme",
        "key_id": "k1",
        "model": "fake/echo",
        "provider": "fake",
        "endpoint": "chat.completions",
        "stream": False,
        "status": 200,
        "prompt_tokens": 100,
        "completion_tokens": 50,
        "usage_source": "provider",
        "latency_ms": 200,
        "created_at_ms": at_ms,
        "cost_micros": 1_000,
        "charged_micros": 1_250,
    }
    return UsageRecord.model_validate(values | changes)


# -- quota ----------------------------------------------------------------------------------------


@pytest.fixture
def credit_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOLLGATE_BILLING_MODE", "credits")
    monkeypatch.setenv("TOLLGATE_STARTER_CREDITS", "10")


def test_quota_is_balance_burn_rate_and_days_left(credit_mode, client, admin_headers, services):  # type: ignore[no-untyped-def]
    """Given 10 credits and 1.5 credits spent a day over the last week, the credits last 6.6 days."""
    assert (
        client.post(
            "/admin/v1/tenants", json={"id": "acme", "name": "Acme"}, headers=admin_headers
        ).status_code
        == 201
    )
    now = time.time_ns() // 1_000_000
    for day in range(7):
        services.usage_log.put(usage(f"req-{day}", now - day * DAY - 60_000, charged_micros=1_500_000))
    services.usage_log.put(usage("req-old", now - 9 * DAY, charged_micros=50_000_000))  # outside the week
    services.rollup.run(now, since_ms=now - 10 * DAY)

    quota = client.get(
        "/admin/v1/analytics/quota", params={"tenant_id": "acme"}, headers=admin_headers
    ).json()

    assert quota["available"] == "10.000000"
    assert quota["spent_in_window"] == "10.500000"
    assert quota["burn_rate_per_day"] == "1.500000"
    assert quota["days_left"] == 6.6
    assert quota["runs_out_at"] is not None


def test_quota_of_a_tenant_that_spent_nothing_has_no_end(credit_mode, client, admin_headers):  # type: ignore[no-untyped-def]
    client.post("/admin/v1/tenants", json={"id": "acme", "name": "Acme"}, headers=admin_headers)

    quota = client.get(
        "/admin/v1/analytics/quota", params={"tenant_id": "acme"}, headers=admin_headers
    ).json()

    assert (quota["burn_rate_per_day"], quota["days_left"], quota["runs_out_at"]) == ("0.000000", None, None)


def test_quota_needs_a_tenant(client, admin_headers):  # type: ignore[no-untyped-def]
    assert client.get("/admin/v1/analytics/quota", headers=admin_headers).status_code == 400
    assert (
        client.get(
            "/admin/v1/analytics/quota", params={"tenant_id": "ghost"}, headers=admin_headers
        ).status_code
        == 404
    )


# -- reconciliation finds what disagrees ----------------------------------------------------------


def test_reconciliation_reports_each_kind_of_difference(credit_mode, client, admin_headers, services):  # type: ignore[no-untyped-def]

    from tollgate.keys import Principal
    from tollgate.schemas.openai import ChatRequest

    client.post("/admin/v1/tenants", json={"id": "acme", "name": "Acme"}, headers=admin_headers)
    client.put(
        "/admin/v1/models/fake/echo/prices",
        json={"cost": {"input": "1", "output": "2"}},
        headers=admin_headers,
    )
    request = ChatRequest.model_validate(
        {"model": "fake/echo", "messages": [{"role": "user", "content": "hi"}]}
    )

    async def three() -> None:
        for index in range(3):
            call = await services.chat.begin(Principal("acme", "k1", None), request, f"req-{index}")
            await call.complete()

    asyncio.run(three())
    services.rollup.run()
    today = time.strftime("%Y-%m-%d", time.gmtime())
    params = {"since": today, "until": today}
    clean = client.get("/admin/v1/analytics/reconcile", params=params, headers=admin_headers).json()

    # A charge entry goes missing, and a record arrives after the rollup ran.
    ledger, table = services.dynamodb, services.settings.ledger_table
    (entry,) = [e for e in services.ledger.all_entries("acme") if e.reference == "req-0"]
    ledger.delete_item(
        TableName=table,
        Key={"pk": {"S": "TENANT#acme"}, "sk": {"S": f"ENTRY#{entry.created_at_ms:013d}#charge#req-0"}},
    )
    services.usage_log.put(usage("req-unrolled", time.time_ns() // 1_000_000, charged_micros=0))
    broken = client.get("/admin/v1/analytics/reconcile", params=params, headers=admin_headers).json()

    assert clean["ok"] is True
    assert clean["data"][0]["usage_requests"] == clean["data"][0]["rollup_requests"] == 3
    assert broken["ok"] is False
    assert broken["rows_with_differences"] == 1
    assert broken["data"][0]["differences"] == [
        "rollup_requests",
        "rollup_cost",
        "rollup_tokens",
        "ledger_charged",
        "ledger_charges",
    ]
