"""The quota view (credits, and enterprise budgets) and what reconciliation reports when the three
sources disagree (credit mode)."""

from __future__ import annotations

import asyncio
import time
from functools import partial

import pytest

from tests.support.records import usage_record
from tollgate.money import Money

DAY = 86_400_000


usage = partial(
    usage_record, prompt_tokens=100, completion_tokens=50, cost_micros=1_000, charged_micros=1_250
)


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


# -- enterprise budgets ---------------------------------------------------------------------------

MAY_11 = 1_715_385_600_000  # 2024-05-11T00:00:00Z, a Saturday: 10 days into May, 5 into ISO week 19


def spend_on_budget(services, pk: str, period: str, label: str, spent: str) -> None:  # type: ignore[no-untyped-def]
    """What settled requests leave on a budget account: ``spent`` of this period (as the ledger stores it)."""
    services.dynamodb.put_item(
        TableName=services.settings.ledger_table,
        Item={
            "pk": {"S": pk},
            "sk": {"S": f"BUDGET#{period}#{label}"},
            "spent": {"N": str(Money.parse(spent).micros)},
            "held": {"N": "0"},
        },
    )


def test_enterprise_quota_reports_every_budget_with_its_burn_rate_and_time_left(  # type: ignore[no-untyped-def]
    client, admin_headers, services
):
    """At 18:00 on 11 May: the tenant's 100 a month, 20 spent in 10.75 days, lasts another 43 days at
    that rate, past the 20.25 left in May; the key's 10 a day, 7.50 spent in 18 hours, lasts 6 more
    hours, exactly to the end of its day. Neither runs out before its period ends. A key without a
    budget, and a revoked key, have no entry."""
    client.post(
        "/admin/v1/tenants",
        json={"id": "acme", "name": "Acme", "budget": {"amount": "100", "period": "month"}},
        headers=admin_headers,
    )
    capped = client.post(
        "/admin/v1/keys",
        json={"tenant_id": "acme", "name": "capped", "budget": {"amount": "10", "period": "day"}},
        headers=admin_headers,
    ).json()
    client.post("/admin/v1/keys", json={"tenant_id": "acme", "name": "free"}, headers=admin_headers)
    revoked = client.post(
        "/admin/v1/keys",
        json={"tenant_id": "acme", "name": "gone", "budget": {"amount": "5", "period": "week"}},
        headers=admin_headers,
    ).json()
    client.delete(f"/admin/v1/keys/{revoked['id']}", headers=admin_headers)
    now = MAY_11 + 18 * 3_600_000
    spend_on_budget(services, "TENANT#acme", "month", "2024-05", "20")
    spend_on_budget(services, "TENANT#acme", "month", "2024-04", "99")  # last month: not this period
    spend_on_budget(services, f"KEY#{capped['id']}", "day", "2024-05-11", "7.5")

    quota = services.reports.quota("acme", now_ms=now).model_dump(mode="json")

    assert quota["billing_mode"] == "enterprise"
    tenant, key = quota["budgets"]
    assert tenant == {
        "scope": "tenant",
        "key_id": None,
        "period": "month",
        "period_id": "2024-05",
        "period_start": "2024-05-01T00:00:00Z",
        "period_end": "2024-06-01T00:00:00Z",
        "limit": "100.000000",
        "spent": "20.000000",
        "remaining": "80.000000",
        "burn_rate_per_day": "1.860465",  # 20 over 10.75 days
        "days_left": 20.25,  # it would last 43 days: it lasts to the end of May
        "runs_out_at": None,
    }
    assert key == {
        "scope": "key",
        "key_id": capped["id"],
        "period": "day",
        "period_id": "2024-05-11",
        "period_start": "2024-05-11T00:00:00Z",
        "period_end": "2024-05-12T00:00:00Z",
        "limit": "10.000000",
        "spent": "7.500000",
        "remaining": "2.500000",
        "burn_rate_per_day": "10.000000",  # 7.50 in 18 hours
        "days_left": 0.25,  # 2.50 at 10 a day: 6 hours, just as the day ends
        "runs_out_at": None,
    }


def test_a_budget_spent_faster_than_its_period_runs_out_before_the_period_ends(  # type: ignore[no-untyped-def]
    client, admin_headers, services
):
    client.post(
        "/admin/v1/tenants",
        json={"id": "acme", "name": "Acme", "budget": {"amount": "70", "period": "week"}},
        headers=admin_headers,
    )
    now = MAY_11 + 12 * 3_600_000  # Saturday noon: 5.5 days into the ISO week
    spend_on_budget(services, "TENANT#acme", "week", "2024-W19", "55")  # 10 a day

    (budget,) = services.reports.quota("acme", now_ms=now).model_dump(mode="json")["budgets"]

    assert (budget["period_id"], budget["period_start"]) == ("2024-W19", "2024-05-06T00:00:00Z")
    assert (budget["remaining"], budget["burn_rate_per_day"]) == ("15.000000", "10.000000")
    assert budget["days_left"] == 1.5
    assert budget["runs_out_at"] is None  # it lasts exactly to the end of the week
    spend_on_budget(services, "TENANT#acme", "week", "2024-W19", "60.5")  # 11 a day: 0.86 days left

    (faster,) = services.reports.quota("acme", now_ms=now).model_dump(mode="json")["budgets"]

    assert faster["days_left"] == 0.86
    assert faster["runs_out_at"].startswith("2024-05-12T08:43:38.181")  # 9.50 at 11 a day: 20.7 hours


def test_an_exhausted_budget_has_no_time_left(client, admin_headers, services):  # type: ignore[no-untyped-def]
    client.post(
        "/admin/v1/tenants",
        json={"id": "acme", "name": "Acme", "budget": {"amount": "5", "period": "day"}},
        headers=admin_headers,
    )
    now = MAY_11 + 6 * 3_600_000
    spend_on_budget(services, "TENANT#acme", "day", "2024-05-11", "5")

    (budget,) = services.reports.quota("acme", now_ms=now).model_dump(mode="json")["budgets"]

    assert (budget["remaining"], budget["days_left"]) == ("0.000000", 0.0)
    assert budget["runs_out_at"] == "2024-05-11T06:00:00Z"


def test_an_unspent_budget_lasts_its_period(client, admin_headers):  # type: ignore[no-untyped-def]
    """Through the route, on the real clock: nothing spent, so no burn and the whole period left."""
    client.post(
        "/admin/v1/tenants",
        json={"id": "acme", "name": "Acme", "budget": {"amount": "5", "period": "day"}},
        headers=admin_headers,
    )

    quota = client.get(
        "/admin/v1/analytics/quota", params={"tenant_id": "acme"}, headers=admin_headers
    ).json()

    (budget,) = quota["budgets"]
    assert (budget["spent"], budget["remaining"], budget["burn_rate_per_day"]) == (
        "0.000000",
        "5.000000",
        "0.000000",
    )
    assert 0 < budget["days_left"] <= 1
    assert budget["runs_out_at"] is None


def test_a_budgets_spent_is_what_requests_cost(client, admin_headers, services):  # type: ignore[no-untyped-def]
    """End to end in enterprise mode: requests metered at cost against a key budget."""
    from tests.functional.conftest import bearer

    client.put(
        "/admin/v1/models/fake/echo/prices",
        json={"cost": {"input": "1000", "output": "2000"}},
        headers=admin_headers,
    )
    client.post("/admin/v1/tenants", json={"id": "acme", "name": "Acme"}, headers=admin_headers)
    key = client.post(
        "/admin/v1/keys",
        json={"tenant_id": "acme", "name": "capped", "budget": {"amount": "50", "period": "month"}},
        headers=admin_headers,
    ).json()
    chat = {"model": "fake/echo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    costs = [
        client.post("/v1/chat/completions", json=chat, headers=bearer(key["key"])).json()["usage"]["cost"]
        for _ in range(3)
    ]

    quota = client.get(
        "/admin/v1/analytics/quota", params={"tenant_id": "acme"}, headers=admin_headers
    ).json()

    (budget,) = quota["budgets"]
    spent = sum(Money.parse(cost).micros for cost in costs)
    assert spent > 0
    assert (budget["scope"], budget["key_id"]) == ("key", key["id"])
    assert budget["spent"] == str(Money(spent))
    assert budget["remaining"] == str(Money(50_000_000 - spent))


def test_credit_mode_has_no_budgets(credit_mode, client, admin_headers):  # type: ignore[no-untyped-def]
    client.post(
        "/admin/v1/tenants",
        json={"id": "acme", "name": "Acme", "budget": {"amount": "5", "period": "day"}},
        headers=admin_headers,
    )

    quota = client.get(
        "/admin/v1/analytics/quota", params={"tenant_id": "acme"}, headers=admin_headers
    ).json()

    assert quota["budgets"] == []


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
