"""Crash safety: a fault at each step of a request, then the sweeper.

A crash is simulated with an exception no handler in Tollgate catches (a ``BaseException``), so
the request stops dead at that point, as when a Lambda runs out of memory or time. Afterwards
the sweeper must leave no hold behind, settle nothing twice, and never void to zero a request
the provider may have served.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from tollgate.keys import Principal
from tollgate.money import Money
from tollgate.providers.fake import FakeProvider
from tollgate.schemas.openai import ChatRequest
from tollgate.store.ledger import DynamoLedger

FAR_FUTURE_MS = 2**41


class Crash(BaseException):
    """The process died here."""


@pytest.fixture
def credit_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOLLGATE_BILLING_MODE", "credits")
    monkeypatch.setenv("TOLLGATE_STARTER_CREDITS", "10")


@pytest.fixture
def ready(credit_mode, services):  # type: ignore[no-untyped-def]
    from tollgate.admin.schemas import PriceIn, TenantIn

    services.admin.create_tenant(TenantIn(id="acme", name="Acme"))
    services.admin.put_price(
        "fake/echo", PriceIn.model_validate({"cost": {"input": "1", "output": "1"}, "margin_bps": 0})
    )
    return services


def chat(stream: bool) -> ChatRequest:
    return ChatRequest.model_validate(
        {
            "model": "fake/echo",
            "messages": [{"role": "user", "content": "one two three four five six"}],
            "max_tokens": 50,
            "stream": stream,
        }
    )


PRINCIPAL = Principal(tenant_id="acme", key_id="k1", allowed_models=None)


async def run_request(services, request: ChatRequest, request_id: str) -> None:  # type: ignore[no-untyped-def]
    call = await services.chat.begin(PRINCIPAL, request, request_id)
    if request.stream:
        async for _ in await call.open_stream():
            pass
    else:
        await call.complete()


def holds(services) -> dict:  # type: ignore[no-untyped-def]
    account = services.ledger._get("TENANT#acme", "ACCOUNT") or {}
    return {name: value for name, value in account.items() if name.startswith("hold_")}


def assert_ledger_consistent(services) -> None:  # type: ignore[no-untyped-def]
    account = services.ledger.account("acme")
    entries = list(services.ledger.all_entries("acme"))
    assert account.held_micros == 0
    assert sum(entry.amount_micros for entry in entries) == account.available_micros
    assert not holds(services)


def crash_in(monkeypatch: pytest.MonkeyPatch, owner: object, name: str, *, after: int = 0) -> None:
    """Makes ``owner.name`` crash on its first call (after letting ``after`` calls through)."""
    original: Callable[..., object] = getattr(owner, name)
    calls = {"n": 0}

    def crashing(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] > after:
            raise Crash(name)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, crashing)


def crashing_stream(after_chunks: int) -> Callable[..., object]:
    original = FakeProvider.stream

    async def stream(self, request, upstream_model):  # type: ignore[no-untyped-def]
        count = 0
        async for chunk in original(self, request, upstream_model):
            if count == after_chunks:
                raise Crash("mid-stream")
            count += 1
            yield chunk

    return stream


FAULTS: dict[str, Callable[[pytest.MonkeyPatch], None]] = {
    "after the hold": lambda mp: crash_in(mp, FakeProvider, "chat"),
    "after the upstream 200": lambda mp: crash_in(
        mp, __import__("tollgate.metering").metering.Meter, "quote"
    ),
    "before the settle": lambda mp: crash_in(mp, DynamoLedger, "settle_async"),  # the request's own
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_crash_at_each_step_is_swept_once_and_never_to_zero(ready, monkeypatch, fault):
    before = ready.ledger.account("acme").available_micros
    FAULTS[fault](monkeypatch)

    with pytest.raises(Crash):
        asyncio.run(run_request(ready, chat(stream=False), f"req-{fault.replace(' ', '-')}"))
    monkeypatch.undo()
    assert len(holds(ready)) == 1

    first = ready.billing.sweep(now_ms=FAR_FUTURE_MS)
    second = ready.billing.sweep(now_ms=FAR_FUTURE_MS)

    assert first["holds_settled"] == 1
    assert second["holds_settled"] == 0
    assert_ledger_consistent(ready)
    charged = before - ready.ledger.account("acme").available_micros
    assert charged > 0  # the provider may have served it: never voided to zero


def test_a_crash_mid_stream_is_swept_once(ready, monkeypatch):
    monkeypatch.setattr(FakeProvider, "stream", crashing_stream(after_chunks=2))

    with pytest.raises(Crash):
        asyncio.run(run_request(ready, chat(stream=True), "req-mid-stream"))
    monkeypatch.undo()

    assert ready.billing.sweep(now_ms=FAR_FUTURE_MS)["holds_settled"] == 1
    assert ready.billing.sweep(now_ms=FAR_FUTURE_MS)["holds_settled"] == 0
    assert_ledger_consistent(ready)


def test_the_sweeper_leaves_live_holds_alone(ready, monkeypatch):
    crash_in(monkeypatch, FakeProvider, "chat")
    with pytest.raises(Crash):
        asyncio.run(run_request(ready, chat(stream=False), "req-young"))

    assert ready.billing.sweep()["holds_settled"] == 0  # not expired yet
    assert len(holds(ready)) == 1


def test_a_slow_process_and_the_sweeper_never_both_settle(ready, monkeypatch):
    """The sweeper settles a hold while its process is still running; the process's own settle
    then finds nothing to settle."""
    original_settle = DynamoLedger.settle_async
    outcomes: list[bool] = []

    async def sweep_first(ledger: DynamoLedger, settlement) -> bool:  # type: ignore[no-untyped-def]
        # The process's own settlement (the request path's async one); the sweeper settles first.
        swept = ready.billing.sweep(now_ms=FAR_FUTURE_MS)
        assert swept["holds_settled"] == 1
        outcome = await original_settle(ledger, settlement)
        outcomes.append(outcome)
        return outcome

    monkeypatch.setattr(DynamoLedger, "settle_async", sweep_first)
    asyncio.run(run_request(ready, chat(stream=False), "req-race"))
    monkeypatch.undo()

    assert outcomes == [False]
    charges = [e for e in ready.ledger.all_entries("acme") if e.kind == "charge"]
    assert len(charges) == 1
    assert_ledger_consistent(ready)


def test_normal_requests_leave_the_ledger_consistent(ready):
    for index in range(3):
        asyncio.run(run_request(ready, chat(stream=bool(index % 2)), f"req-ok-{index}"))

    assert_ledger_consistent(ready)
    assert len([e for e in ready.ledger.all_entries("acme") if e.kind == "charge"]) == 3


def test_unused_starter_credits_expire_once(ready):
    asyncio.run(run_request(ready, chat(stream=False), "req-spend"))
    account = ready.ledger.account("acme")
    spent = Money.parse("10").micros - account.available_micros

    first = ready.billing.sweep(now_ms=FAR_FUTURE_MS)
    second = ready.billing.sweep(now_ms=FAR_FUTURE_MS)

    assert (first["starter_expired"], second["starter_expired"]) == (1, 0)
    assert ready.ledger.account("acme").available_micros == 0
    expiry = [e for e in ready.ledger.all_entries("acme") if e.kind == "expire"]
    assert [e.amount_micros for e in expiry] == [-(Money.parse("10").micros - spent)]
    assert_ledger_consistent(ready)


def test_a_hold_reports_the_credits_it_left_without_echoing_itself(ready):  # type: ignore[no-untyped-def]
    """The hold's answer is the balance after it; DynamoDB is asked for the old values of what it
    updated, so the hold's own map (new) does not travel back on every request."""
    from tests.support.records import credit_hold
    from tollgate.store.ledger import AccountRef

    ledger = ready.ledger
    before = ledger.account("acme").available_micros
    answers: list[dict] = []
    call = ledger._call

    def recording(operation: str, **arguments):  # type: ignore[no-untyped-def]
        answer = call(operation, **arguments)
        if operation == "update_item":
            answers.append(answer)
        return answer

    ledger._call = recording
    hold = credit_hold("req_answer", 1_234)

    left = ledger.hold_account(AccountRef.credits("acme"), hold, now_ms=1)

    assert left == before - 1_234 == ledger.account("acme").available_micros
    (answer,) = answers
    assert hold.attribute not in answer.get("Attributes", {})
