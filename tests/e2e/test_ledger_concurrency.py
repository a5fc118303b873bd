"""Acceptance: the ledger under real concurrency, through live local servers on moto.

Threads released together by a barrier send real HTTP requests; the upstream is a loopback
server slow enough that every request is in flight before any settles, so the worst case is what
admission has to get right.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.live import LiveServer, start_server
from tests.support.openai_upstream import OpenAIUpstream, UpstreamScript
from tollgate.money import Money

ADMIN = "tga-ledger-concurrency-admin-key"
#: Prompt bound of the request below: 11 bytes of text + 3 tokens of framing; output: max_tokens.
WORST_TOKENS = 11 + 3 + 10
PRICE_PER_MILLION = "1000"  # so one worst case costs WORST_TOKENS * 1000 micros
REQUEST = {"model": "slow/model", "messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 10}


def fire(count: int, send: Callable[[int], httpx.Response]) -> list[httpx.Response]:
    """``count`` requests from ``count`` threads, released at the same instant."""
    barrier = threading.Barrier(count)
    results: list[httpx.Response | None] = [None] * count

    def worker(index: int) -> None:
        barrier.wait()
        results[index] = send(index)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert all(result is not None for result in results)
    return [result for result in results if result is not None]


@pytest.fixture(scope="module")
def upstream() -> Iterator[OpenAIUpstream]:
    with OpenAIUpstream.in_thread(api_key=None, script=UpstreamScript(reply="ok", latency=3.0)) as server:
        yield server


def setup_server(server: LiveServer, upstream: OpenAIUpstream) -> httpx.Client:
    admin = httpx.Client(base_url=f"{server.base_url}/admin/v1", headers={"Authorization": f"Bearer {ADMIN}"})
    assert admin.put(
        "/providers/slow", json={"type": "openai_compatible", "base_url": upstream.base_url}
    ).is_success
    price = {"cost": {"input": PRICE_PER_MILLION, "output": PRICE_PER_MILLION}}
    assert admin.put("/models/slow/model/prices", json=price).status_code in (201, 409)
    return admin


@pytest.fixture(scope="module")
def credit_server(tmp_path_factory: pytest.TempPathFactory, upstream: OpenAIUpstream) -> Iterator[LiveServer]:
    server = start_server(
        Path(tmp_path_factory.mktemp("credits")),
        admin_key=ADMIN,
        extra_env={"TOLLGATE_BILLING_MODE": "credits", "TOLLGATE_STARTER_CREDITS": "0"},
    )
    setup_server(server, upstream)
    yield server
    server.stop()


def new_tenant(admin: httpx.Client, tenant: str, **key_fields: object) -> str:
    assert admin.post("/tenants", json={"id": tenant, "name": tenant}).status_code == 201
    issued = admin.post("/keys", json={"tenant_id": tenant, "name": "load", **key_fields})
    assert issued.status_code == 201, issued.text
    key: str = issued.json()["key"]
    return key


def test_concurrent_requests_cannot_overdraw(credit_server: LiveServer, upstream: OpenAIUpstream) -> None:
    admin = setup_server(credit_server, upstream)
    key = new_tenant(admin, "overdraw")
    k = 7
    worst = Money(WORST_TOKENS * int(PRICE_PER_MILLION))
    topup = admin.post(
        "/tenants/overdraw/credits", json={"amount": str(Money(k * worst.micros)), "idempotency_key": "k"}
    )
    assert topup.status_code == 201
    before = Money.parse(admin.get("/tenants/overdraw/balance").json()["available"])

    with httpx.Client(
        base_url=credit_server.base_url, timeout=60, limits=httpx.Limits(max_connections=200)
    ) as http:
        # Warm the process's caches (this key; the route, provider and prices, through another
        # tenant's request), so the 200 requests reach admission together instead of trickling
        # through a cold cache's lookups: otherwise the first ones settle while later ones still
        # arrive, and the test no longer exercises the worst case it is about.
        assert http.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        warm = new_tenant(admin, "overdraw-warmup")
        assert admin.post(
            "/tenants/overdraw-warmup/credits", json={"amount": str(worst), "idempotency_key": "w"}
        ).is_success
        assert (
            http.post(
                "/v1/chat/completions", json=REQUEST, headers={"Authorization": f"Bearer {warm}"}
            ).status_code
            == 200
        )
        # Admitted requests then wait upstream long enough for every hold to be tried first, even
        # on a loaded machine (200 holds through local mode's one-at-a-time moto take seconds).
        upstream.script = UpstreamScript(reply="ok", latency=10.0)
        try:
            responses = fire(
                200,
                lambda _: http.post(
                    "/v1/chat/completions", json=REQUEST, headers={"Authorization": f"Bearer {key}"}
                ),
            )
        finally:
            upstream.script = UpstreamScript(reply="ok", latency=3.0)

    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 402}
    assert 1 <= statuses.count(200) <= k
    account = admin.get("/tenants/overdraw/balance").json()
    after = Money.parse(account["available"])
    assert account["held"] == "0.000000"
    assert after.micros >= 0
    entries = admin.get("/tenants/overdraw/ledger", params={"limit": 1000}).json()["data"]
    assert sum(Money.parse(e["amount"]).micros for e in entries) == after.micros
    charges = [e for e in entries if e["kind"] == "charge"]
    assert len(charges) == statuses.count(200)
    assert before.micros - after.micros == -sum(Money.parse(e["amount"]).micros for e in charges)


def test_one_idempotency_key_is_one_upstream_call_and_one_charge(
    credit_server: LiveServer, upstream: OpenAIUpstream
) -> None:
    admin = setup_server(credit_server, upstream)
    key = new_tenant(admin, "idem")
    admin.post("/tenants/idem/credits", json={"amount": "100", "idempotency_key": "seed"})
    calls_before = len(upstream.requests)
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": "same-for-all"}

    with httpx.Client(base_url=credit_server.base_url, timeout=60) as http:
        responses = fire(10, lambda _: http.post("/v1/chat/completions", json=REQUEST, headers=headers))
        statuses = sorted(r.status_code for r in responses)
        replay = http.post("/v1/chat/completions", json=REQUEST, headers=headers)
        mismatch = http.post("/v1/chat/completions", json={**REQUEST, "max_tokens": 11}, headers=headers)

    assert statuses == [200] + [409] * 9
    assert len(upstream.requests) - calls_before == 1
    charges = [e for e in admin.get("/tenants/idem/ledger").json()["data"] if e["kind"] == "charge"]
    assert len(charges) == 1
    winner = next(r for r in responses if r.status_code == 200)
    assert replay.status_code == 200
    assert replay.json() == winner.json()
    assert mismatch.status_code == 422


@pytest.fixture(scope="module")
def twin_servers(
    tmp_path_factory: pytest.TempPathFactory, upstream: OpenAIUpstream
) -> Iterator[tuple[LiveServer, LiveServer]]:
    """Two app processes sharing the same tables (one moto), as two Lambdas would."""
    log_dir = Path(tmp_path_factory.mktemp("twins"))
    first = start_server(log_dir, admin_key=ADMIN)
    second = start_server(log_dir, admin_key=ADMIN, extra_env={"TOLLGATE_AWS_ENDPOINT": first.moto_endpoint})
    setup_server(first, upstream)
    yield first, second
    second.stop()
    first.stop()


def wait_for_a_fresh_minute() -> None:
    """RPM windows are UTC minutes: start a burst early in one, so it cannot straddle two."""
    if time.time() % 60 > 40:
        time.sleep(61 - time.time() % 60)


def test_rpm_holds_across_two_processes(twin_servers: tuple[LiveServer, LiveServer]) -> None:
    first, second = twin_servers
    admin = httpx.Client(base_url=f"{first.base_url}/admin/v1", headers={"Authorization": f"Bearer {ADMIN}"})
    key = new_tenant(admin, "rpm", limits={"rpm": 10})
    fast = {**REQUEST, "model": "fake/echo"}
    wait_for_a_fresh_minute()

    clients = [httpx.Client(base_url=s.base_url, timeout=60) for s in (first, second)]
    responses = fire(
        30,
        lambda i: clients[i % 2].post(
            "/v1/chat/completions", json=fast, headers={"Authorization": f"Bearer {key}"}
        ),
    )

    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 10
    assert statuses.count(429) == 20
    assert all(int(r.headers["retry-after"]) >= 1 for r in responses if r.status_code == 429)


def test_budget_holds_across_two_processes(twin_servers: tuple[LiveServer, LiveServer]) -> None:
    first, second = twin_servers
    admin = httpx.Client(base_url=f"{first.base_url}/admin/v1", headers={"Authorization": f"Bearer {ADMIN}"})
    worst = WORST_TOKENS * int(PRICE_PER_MILLION)
    key = new_tenant(admin, "budget", budget={"amount": str(Money(4 * worst)), "period": "day"})

    clients = [httpx.Client(base_url=s.base_url, timeout=60) for s in (first, second)]
    responses = fire(
        40,
        lambda i: clients[i % 2].post(
            "/v1/chat/completions", json=REQUEST, headers={"Authorization": f"Bearer {key}"}
        ),
    )

    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 429}
    assert 1 <= statuses.count(200) <= 4
    spent = sum(Money.parse(r.json()["usage"]["cost"]).micros for r in responses if r.status_code == 200)
    assert spent <= 4 * worst
