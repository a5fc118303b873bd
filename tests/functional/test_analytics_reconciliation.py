"""Acceptance: after a mixed load, usage records, ledger charges and rollups agree to the micro-unit.

Given 3 tenants in credit mode, 4 models served by the fake provider and by loopback servers that
speak OpenAI's protocol (one of which never reports usage), a failing provider and an unknown
model,
when 1,000 requests run 8 at a time, streamed and not, some failing and some abandoned mid-stream,
and the scheduled run (sweeper, then rollup) has run,
then the three-way reconciliation reports no difference for any tenant or day, and a rerun of the
rollup, or two runs at once, change no bucket.

The load drives ``ChatService`` in-process (the same path the HTTP routes take after parsing);
the reports are read through the admin API.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.functional.test_rollup import buckets
from tests.support.moto_dynamodb import exact_and_fast
from tests.support.openai_upstream import OpenAIUpstream, UpstreamScript
from tollgate import chat as chat_module
from tollgate.analytics import period_of
from tollgate.errors import TollgateError
from tollgate.keys import Principal
from tollgate.scheduled import run_scheduled
from tollgate.schemas.openai import ChatRequest

REQUESTS = 1000
CONCURRENCY = 8
TENANTS = ("acme", "globex", "initech")
SERVED = ("fake/echo", "loop/alpha", "gamma", "mute/delta")
FAILING = "flaky/omega"
UNKNOWN = "nope/unknown"
PRICE = {"cost": {"input": "0.50", "output": "1.50"}, "margin_bps": 2000}
UPSTREAM_KEY = "sk-loopback-analytics"


@dataclass(frozen=True)
class Planned:
    request_id: str
    principal: Principal
    model: str
    stream: bool
    abandon: bool


def plan(count: int) -> list[Planned]:
    rng = random.Random(20240501)
    planned = []
    for index in range(count):
        tenant = TENANTS[index % 3]
        roll = rng.random()
        model = UNKNOWN if roll < 0.04 else FAILING if roll < 0.08 else rng.choice(SERVED)
        stream = rng.random() < 0.5
        planned.append(
            Planned(
                request_id=f"req-load-{index:05d}",
                principal=Principal(tenant_id=tenant, key_id=f"{tenant}-{index % 2}", allowed_models=None),
                model=model,
                stream=stream,
                abandon=stream and model in SERVED and rng.random() < 0.1,
            )
        )
    return planned


async def send(services: Any, job: Planned) -> str:
    """Runs one request the way the routes do; returns how it ended."""
    words = " ".join(["word"] * (3 + int(job.request_id[-2:]) % 20))
    request = ChatRequest.model_validate(
        {
            "model": job.model,
            "messages": [{"role": "user", "content": f"Tell me about {words}"}],
            "stream": job.stream,
            "max_tokens": 64,
            **({"stream_options": {"include_usage": True}} if job.stream else {}),
        }
    )
    try:
        call = await services.chat.begin(job.principal, request, job.request_id)
        if not job.stream:
            await call.complete()
            return "ok"
        events = await call.open_stream()
        if job.abandon:
            await anext(events)  # the client reads one event, then goes away
            await events.aclose()  # type: ignore[attr-defined]
            return "abandoned"
        async for _ in events:
            pass
        return "ok"
    except TollgateError as error:
        return f"error {error.status}"


async def run_load(services: Any, jobs: list[Planned]) -> Counter[str]:
    gate = asyncio.Semaphore(CONCURRENCY)
    outcomes: Counter[str] = Counter()

    async def one(job: Planned) -> None:
        async with gate:
            outcome = await send(services, job)
        outcomes[outcome] += 1

    await asyncio.gather(*(one(job) for job in jobs))
    # Abandoned streams settle in background drain tasks: wait for every one before reconciling.
    while chat_module._DRAINS:
        await asyncio.gather(*list(chat_module._DRAINS))
    await services.aclose()
    return outcomes


@pytest.fixture
def credit_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    exact_and_fast(monkeypatch)
    monkeypatch.setenv("TOLLGATE_BILLING_MODE", "credits")
    monkeypatch.setenv("TOLLGATE_STARTER_CREDITS", "1000")
    monkeypatch.setenv("TOLLGATE_UPSTREAM_MAX_RETRIES", "0")
    monkeypatch.setenv("TOLLGATE_STREAM_DRAIN_SECONDS", "5")
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")


@pytest.fixture
def upstreams() -> Any:
    with (
        OpenAIUpstream.in_thread(api_key=UPSTREAM_KEY) as healthy,
        OpenAIUpstream.in_thread(api_key=UPSTREAM_KEY, script=UpstreamScript(fail_status=500)) as failing,
        OpenAIUpstream.in_thread(api_key=UPSTREAM_KEY, script=UpstreamScript(omit_usage=True)) as mute,
    ):
        yield {"loop": healthy, "flaky": failing, "mute": mute}


@pytest.fixture
def configured(credit_mode, services, upstreams):  # type: ignore[no-untyped-def]
    from tollgate.admin.schemas import PriceIn, ProviderIn, RouteIn, TenantIn

    for name, upstream in upstreams.items():
        services.admin.put_provider(
            name,
            ProviderIn.model_validate(
                {"type": "openai_compatible", "base_url": upstream.base_url, "api_key": UPSTREAM_KEY}
            ),
        )
    services.admin.put_route("gamma", RouteIn(provider="loop", upstream_model="gamma-large"))
    for model in (*SERVED, FAILING):
        services.admin.put_price(model, PriceIn.model_validate(PRICE))
    for tenant in TENANTS:
        services.admin.create_tenant(TenantIn(id=tenant, name=tenant.title()))
    return services


def test_a_mixed_load_reconciles_three_ways_with_no_difference(configured, settings, admin_headers):  # type: ignore[no-untyped-def]
    from tollgate.api.apps import local_app
    from tollgate.container import Services

    jobs = plan(REQUESTS)
    first_day = period_of(time.time_ns() // 1_000_000, "day")

    outcomes = asyncio.run(run_load(configured, jobs))
    counts = run_scheduled(configured)

    assert sum(outcomes.values()) == REQUESTS
    assert outcomes["abandoned"] > 20
    assert outcomes["error 404"] > 20
    upstream_failures = outcomes["error 502"] + outcomes["error 503"]  # 503: once the breaker opened
    assert upstream_failures > 20
    assert counts["rollup_records"] == REQUESTS
    assert counts["holds_settled"] == 0  # every request settled itself, disconnects included

    settled = buckets(configured)
    rerun = configured.rollup.run()
    with ThreadPoolExecutor(2) as pool:
        at_once = [future.result() for future in [pool.submit(configured.rollup.run) for _ in range(2)]]
    for result in (rerun, *at_once):
        assert result.records == REQUESTS
        assert (result.hour_buckets_written, result.day_buckets_written) == (0, 0)
    assert buckets(configured) == settled

    with TestClient(local_app(Services(settings))) as client:
        last_day = period_of(time.time_ns() // 1_000_000, "day")
        report = client.get(
            "/admin/v1/analytics/reconcile",
            params={"since": first_day, "until": last_day},
            headers=admin_headers,
        ).json()
        by_model = client.get(
            "/admin/v1/analytics",
            params={"group_by": "model", "granularity": "hour", "since": f"{first_day}T00:00:00Z"},
            headers=admin_headers,
        ).json()

    rows = report["data"]
    assert report["ok"] is True, [row for row in rows if row["differences"]]
    assert report["rows_with_differences"] == 0
    assert {row["tenant_id"] for row in rows} == set(TENANTS)
    assert (
        sum(row["usage_requests"] for row in rows) == sum(row["rollup_requests"] for row in rows) == REQUESTS
    )
    assert all(row["ledger_charged"] == row["usage_charged"] == row["rollup_charged"] for row in rows)
    assert all(row["ledger_charges"] == row["usage_charges"] > 0 for row in rows)

    models: dict[str, dict[str, int]] = {}
    for row in by_model["data"]:
        totals = models.setdefault(row["group"], {"requests": 0, "errors": 0, "disconnects": 0})
        totals["requests"] += row["requests"]
        totals["errors"] += row["errors"]
        totals["disconnects"] += row["disconnects"]
        for source, count in row["usage_source"].items():
            totals[source] = totals.get(source, 0) + count
    assert set(models) == {*SERVED, FAILING, UNKNOWN}
    assert sum(totals["requests"] for totals in models.values()) == REQUESTS
    assert models[UNKNOWN]["errors"] == models[UNKNOWN]["requests"] == outcomes["error 404"]
    assert models[FAILING]["errors"] == models[FAILING]["requests"] == upstream_failures
    assert sum(totals["disconnects"] for totals in models.values()) == outcomes["abandoned"]
    assert models["loop/alpha"]["provider"] > 0
    assert models["mute/delta"]["estimated"] > 0  # a provider that never reports usage: an estimate
