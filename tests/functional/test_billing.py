"""Credits, prices and budgets through the real app, on moto.

Given/When/Then in each test; every amount is compared exactly, as decimal strings or micros.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from tollgate.money import Money

HELLO = {"model": "fake/echo", "messages": [{"role": "user", "content": "Hello there"}]}


@pytest.fixture
def credit_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOLLGATE_BILLING_MODE", "credits")
    monkeypatch.setenv("TOLLGATE_STARTER_CREDITS", "1.00")


@pytest.fixture
def priced(client, admin_headers) -> dict:  # type: ignore[no-untyped-def]
    """fake/echo at cost 1.00 in / 2.00 out per 1M tokens, sold with a 25% margin."""
    response = client.put(
        "/admin/v1/models/fake/echo/prices",
        json={"cost": {"input": "1.00", "output": "2.00"}, "margin_bps": 2500},
        headers=admin_headers,
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def bearer(key: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **extra}


def balance(client, admin_headers, tenant: str = "acme") -> dict:  # type: ignore[no-untyped-def]
    return client.get(f"/admin/v1/tenants/{tenant}/balance", headers=admin_headers).json()  # type: ignore[no-any-return]


def entries(client, admin_headers, tenant: str = "acme") -> list[dict]:  # type: ignore[no-untyped-def]
    return client.get(f"/admin/v1/tenants/{tenant}/ledger", headers=admin_headers).json()["data"]  # type: ignore[no-any-return]


def micros(amount: str) -> int:
    return Money.parse(amount).micros


# -- prices ------------------------------------------------------------------------------------


def test_margin_sets_the_selling_price(credit_mode, priced):
    assert priced["sell"] == {"input": "1.250000", "output": "2.500000"}
    assert priced["cost"] == {"input": "1.000000", "output": "2.000000"}


def test_selling_below_cost_is_refused_unless_forced(client, admin_headers):
    body = {"cost": {"input": "1.00", "output": "2.00"}, "sell": {"input": "0.50", "output": "2.00"}}

    refused = client.put("/admin/v1/models/m/prices", json=body, headers=admin_headers)
    forced = client.put("/admin/v1/models/m/prices", json={**body, "force": True}, headers=admin_headers)

    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "sell"
    assert forced.status_code == 201


def test_prices_are_effective_dated_and_never_reprice_the_past(client, admin_headers):
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    now_price = {"cost": {"input": "1", "output": "1"}}

    assert client.put("/admin/v1/models/m/prices", json=now_price, headers=admin_headers).status_code == 201
    refused = client.put(
        "/admin/v1/models/m/prices", json={**now_price, "effective_at": past}, headers=admin_headers
    )
    later = client.put(
        "/admin/v1/models/m/prices",
        json={"cost": {"input": "3", "output": "3"}, "effective_at": future},
        headers=admin_headers,
    )

    assert refused.status_code == 400
    assert later.status_code == 201
    history = client.get("/admin/v1/models/m/prices", headers=admin_headers).json()["data"]
    assert [p["cost"]["input"] for p in history] == ["1.000000", "3.000000"]


# -- credits -----------------------------------------------------------------------------------


def test_starter_credits_are_granted_once_on_creation(credit_mode, client, admin_headers):
    first = client.post("/admin/v1/tenants", json={"id": "new", "name": "New"}, headers=admin_headers)
    again = client.post("/admin/v1/tenants", json={"id": "new", "name": "New"}, headers=admin_headers)

    assert first.status_code == 201
    assert again.status_code == 409
    assert balance(client, admin_headers, "new")["available"] == "1.000000"
    assert [e["kind"] for e in entries(client, admin_headers, "new")] == ["starter"]


def test_top_ups_are_idempotent(credit_mode, client, admin_headers, tenant_key):
    body = {"amount": "5.50", "idempotency_key": "invoice-42"}

    first = client.post("/admin/v1/tenants/acme/credits", json=body, headers=admin_headers)
    replay = client.post("/admin/v1/tenants/acme/credits", json=body, headers=admin_headers)
    clash = client.post("/admin/v1/tenants/acme/credits", json={**body, "amount": "6"}, headers=admin_headers)

    assert (first.status_code, replay.status_code, clash.status_code) == (201, 200, 409)
    assert replay.json() == first.json()
    assert balance(client, admin_headers)["available"] == "6.500000"


def test_an_adjustment_cannot_make_the_balance_negative(credit_mode, client, admin_headers, tenant_key):
    response = client.post(
        "/admin/v1/tenants/acme/credits",
        json={"amount": "-2", "idempotency_key": "oops", "kind": "adjust"},
        headers=admin_headers,
    )
    assert response.status_code == 409
    assert balance(client, admin_headers)["available"] == "1.000000"


# -- charging ----------------------------------------------------------------------------------


def test_a_completion_is_charged_exactly_and_reported(credit_mode, priced, client, admin_headers, tenant_key):
    before = micros(balance(client, admin_headers)["available"])

    response = client.post("/v1/chat/completions", json=HELLO, headers=bearer(tenant_key))

    assert response.status_code == 200, response.text
    usage = response.json()["usage"]
    expected = Money(
        -(-(usage["prompt_tokens"] * 1_250_000 + usage["completion_tokens"] * 2_500_000) // 10**6)
    )
    assert usage["cost"] == str(expected)
    assert response.headers["x-tollgate-cost"] == str(expected)
    after = balance(client, admin_headers)
    assert after["held"] == "0.000000"
    assert micros(after["available"]) == before - expected.micros
    assert response.headers["x-tollgate-balance"] == after["available"]
    assert sum(micros(e["amount"]) for e in entries(client, admin_headers)) == micros(after["available"])


def test_a_stream_is_charged_and_reports_cost_in_its_usage_chunk(
    credit_mode, priced, client, admin_headers, tenant_key
):
    request = {**HELLO, "stream": True, "stream_options": {"include_usage": True}}

    response = client.post("/v1/chat/completions", json=request, headers=bearer(tenant_key))

    payloads = [line[6:] for line in response.text.split("\n") if line.startswith("data: ")]
    usage = json.loads(payloads[-2])["usage"]
    assert payloads[-1] == "[DONE]"
    assert micros(usage["cost"]) > 0
    charges = [e for e in entries(client, admin_headers) if e["kind"] == "charge"]
    assert [c["amount"] for c in charges] == [f"-{usage['cost']}"]


def test_unpriced_models_are_refused_in_credit_mode(credit_mode, client, admin_headers, tenant_key):
    response = client.post("/v1/chat/completions", json=HELLO, headers=bearer(tenant_key))

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "model_not_priced"
    assert balance(client, admin_headers)["available"] == "1.000000"


def test_insufficient_credits_is_402_before_anything_runs(credit_mode, client, admin_headers, tenant_key):
    client.put(
        "/admin/v1/models/fake/echo/prices",
        json={"cost": {"input": "100", "output": "1000"}},
        headers=admin_headers,
    )

    response = client.post("/v1/chat/completions", json=HELLO, headers=bearer(tenant_key))

    assert response.status_code == 402
    assert response.json()["error"]["code"] == "insufficient_credits"
    assert balance(client, admin_headers) | {} == balance(client, admin_headers)
    assert balance(client, admin_headers)["held"] == "0.000000"
    records = client.get("/admin/v1/usage", params={"tenant_id": "acme"}, headers=admin_headers).json()[
        "data"
    ]
    assert [(r["status"], r["charged_micros"]) for r in records] == [(402, 0)]


def test_idempotency_key_replays_the_first_response_and_charges_once(
    credit_mode, priced, client, admin_headers, tenant_key
):
    headers = bearer(tenant_key, **{"Idempotency-Key": "retry-me"})

    first = client.post("/v1/chat/completions", json=HELLO, headers=headers)
    second = client.post("/v1/chat/completions", json=HELLO, headers=headers)
    other = client.post("/v1/chat/completions", json={**HELLO, "user": "x"}, headers=headers)

    assert first.status_code == second.status_code == 200
    assert second.headers["idempotent-replayed"] == "true"
    assert second.json() == first.json()
    assert other.status_code == 422
    assert len([e for e in entries(client, admin_headers) if e["kind"] == "charge"]) == 1


# -- enterprise mode ---------------------------------------------------------------------------


def test_enterprise_mode_meters_at_cost_and_flags_unpriced_models(client, admin_headers, tenant_key):
    unpriced = client.post("/v1/chat/completions", json=HELLO, headers=bearer(tenant_key))
    client.put(
        "/admin/v1/models/fake/echo/prices",
        json={"cost": {"input": "1", "output": "2"}},
        headers=admin_headers,
    )
    priced_response = client.post("/v1/chat/completions", json=HELLO, headers=bearer(tenant_key))

    assert unpriced.status_code == 200
    assert unpriced.json()["usage"]["priced"] is False
    usage = priced_response.json()["usage"]
    assert micros(usage["cost"]) == -(-(usage["prompt_tokens"] + 2 * usage["completion_tokens"]) // 1)
    records = client.get("/admin/v1/usage", params={"tenant_id": "acme"}, headers=admin_headers).json()[
        "data"
    ]
    assert sorted(r["priced"] for r in records) == [False, True]


def test_a_key_budget_stops_spending_with_429(client, admin_headers):
    """Given a daily budget of 4.20 and requests whose worst case is about 1.90, spending stops
    before the budget is exceeded, and stays stopped."""
    client.put(
        "/admin/v1/models/fake/echo/prices",
        json={"cost": {"input": "100000", "output": "100000"}},
        headers=admin_headers,
    )
    client.post("/admin/v1/tenants", json={"id": "b", "name": "B"}, headers=admin_headers)
    key = client.post(
        "/admin/v1/keys",
        json={"tenant_id": "b", "name": "capped", "budget": {"amount": "4.20", "period": "day"}},
        headers=admin_headers,
    ).json()["key"]
    small = {**HELLO, "max_tokens": 5}

    responses = [client.post("/v1/chat/completions", json=small, headers=bearer(key)) for _ in range(8)]

    statuses = [r.status_code for r in responses]
    admitted = statuses.count(200)
    assert admitted >= 1
    assert statuses == [200] * admitted + [429] * (8 - admitted)
    assert responses[-1].json()["error"]["code"] == "budget_exceeded"
    assert 0 < int(responses[-1].headers["retry-after"]) <= 86_400
    spent = sum(micros(r.json()["usage"]["cost"]) for r in responses if r.status_code == 200)
    assert spent <= micros("4.20")


def test_rpm_limit_gives_429_with_retry_after(client, admin_headers):
    client.post("/admin/v1/tenants", json={"id": "r", "name": "R"}, headers=admin_headers)
    key = client.post(
        "/admin/v1/keys", json={"tenant_id": "r", "name": "slow", "limits": {"rpm": 2}}, headers=admin_headers
    ).json()["key"]

    statuses = [
        client.post("/v1/chat/completions", json=HELLO, headers=bearer(key)).status_code for _ in range(3)
    ]

    assert statuses == [200, 200, 429]


# -- failing closed ----------------------------------------------------------------------------


def test_a_throttled_ledger_fails_closed_with_503_and_no_upstream_call(
    credit_mode, priced, client, tenant_key, services, monkeypatch
):
    from botocore.exceptions import ClientError

    from tollgate.providers.fake import FakeProvider

    def throttled(**_: object) -> None:
        raise ClientError(
            {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}},
            "UpdateItem",
        )

    def never(*_: object, **__: object) -> None:
        raise AssertionError("the provider must not be called without a hold")

    monkeypatch.setattr(services.ledger._client, "update_item", throttled)
    monkeypatch.setattr(FakeProvider, "chat", never)

    response = client.post("/v1/chat/completions", json=HELLO, headers=bearer(tenant_key))

    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "ledger_unavailable"


def test_concurrency_limit_counts_requests_in_flight(client, admin_headers, services):
    """Given max_concurrency 1 and one request still in flight, the next gets 429; once the first
    settles, the next is admitted again."""
    import asyncio

    from tollgate.keys import Principal
    from tollgate.schemas.openai import ChatRequest

    client.post("/admin/v1/tenants", json={"id": "c", "name": "C"}, headers=admin_headers)
    issued = client.post(
        "/admin/v1/keys",
        json={"tenant_id": "c", "name": "one", "limits": {"max_concurrency": 1}},
        headers=admin_headers,
    ).json()
    principal = asyncio.run(services.keys.authenticate(issued["key"]))
    assert isinstance(principal, Principal)
    request = ChatRequest.model_validate(HELLO)

    async def scenario() -> list[int]:
        first = await services.chat.begin(principal, request, "req-c-1")  # admitted, not finished
        second = client.post("/v1/chat/completions", json=HELLO, headers=bearer(issued["key"]))
        await first.complete()
        third = client.post("/v1/chat/completions", json=HELLO, headers=bearer(issued["key"]))
        return [second.status_code, third.status_code]

    assert asyncio.run(scenario()) == [429, 200]


def test_tpm_limit_refuses_a_worst_case_larger_than_the_limit(client, admin_headers):
    client.post("/admin/v1/tenants", json={"id": "t", "name": "T"}, headers=admin_headers)
    key = client.post(
        "/admin/v1/keys",
        json={"tenant_id": "t", "name": "tpm", "limits": {"tpm": 100}},
        headers=admin_headers,
    ).json()["key"]

    small = client.post("/v1/chat/completions", json={**HELLO, "max_tokens": 20}, headers=bearer(key))
    large = client.post("/v1/chat/completions", json={**HELLO, "max_tokens": 500}, headers=bearer(key))
    rest = [
        client.post("/v1/chat/completions", json={**HELLO, "max_tokens": 20}, headers=bearer(key)).status_code
        for _ in range(4)
    ]

    assert small.status_code == 200
    assert large.status_code == 429
    assert large.json()["error"]["code"] == "tokens_per_minute_exceeded"
    assert rest.count(429) >= 1  # about 34 tokens of worst case each: the 100-token minute fills up
