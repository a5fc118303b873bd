"""The routing rules: backoff, what a failure leads to, the circuit breaker, deployment order,
deadlines, and the router over fake deployments. Pure and fast: fake clocks, no sleeping."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tollgate.errors import (
    InvalidRequestError,
    ModelNotFoundError,
    RateLimitError,
    ServiceUnavailableError,
    TollgateError,
    UpstreamError,
    UpstreamRejectedError,
    UpstreamTimeoutError,
)
from tollgate.http1 import TransportError
from tollgate.providers.base import Capability
from tollgate.providers.http import translate_transport_error
from tollgate.providers.openai_compat import translate_upstream_error
from tollgate.providers.registry import Deployment, Plan, order_targets
from tollgate.routing import (
    CircuitBreaker,
    CircuitState,
    Deadline,
    RetryPolicy,
    Router,
    disposition,
    is_retryable,
    lambda_remaining_seconds,
    request_deadline,
)
from tollgate.store.records import RouteRecord, RouteTarget


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# -- backoff ---------------------------------------------------------------------------------------

policies = st.builds(
    RetryPolicy,
    max_retries=st.just(2),
    base=st.floats(min_value=0.0, max_value=5.0),
    cap=st.floats(min_value=0.0, max_value=30.0),
    jitter=st.floats(min_value=0.0, max_value=1.0),
)
attempts = st.integers(min_value=1, max_value=40)
remainings = st.floats(min_value=0.0, max_value=1000.0)


@given(policy=policies, attempt=attempts, seed=st.integers())
def test_backoff_grows_with_the_attempt_until_the_cap(policy: RetryPolicy, attempt: int, seed: int) -> None:
    this = policy.backoff(attempt, None, random.Random(seed))
    following = policy.backoff(attempt + 1, None, random.Random(seed))

    assert this is not None and following is not None
    assert this <= following
    ceiling = min(policy.cap, policy.base * 2 ** (attempt - 1))
    assert ceiling * (1 - policy.jitter) - 1e-9 <= this <= ceiling


@given(policy=policies, attempt=attempts, seed=st.integers(), remaining=remainings)
def test_backoff_never_exceeds_the_cap_or_the_deadline(
    policy: RetryPolicy, attempt: int, seed: int, remaining: float
) -> None:
    delay = policy.backoff(attempt, None, random.Random(seed), remaining=remaining)

    assert delay is None or 0.0 <= delay <= policy.cap
    assert delay is None or delay < remaining


@given(
    policy=policies,
    attempt=attempts,
    retry_after=st.integers(min_value=0, max_value=600),
    remaining=remainings,
)
def test_retry_after_is_honoured_within_the_cap_and_the_deadline(
    policy: RetryPolicy, attempt: int, retry_after: int, remaining: float
) -> None:
    delay = policy.backoff(attempt, retry_after, random.Random(0), remaining=remaining)

    if retry_after <= policy.cap and retry_after < remaining:
        assert delay == retry_after  # exactly what the upstream asked for
    else:
        assert delay is None  # not worth waiting for: fail over instead


def test_without_jitter_the_backoff_doubles() -> None:
    policy = RetryPolicy(base=0.5, cap=3.0, jitter=0.0)

    delays = [policy.backoff(n, None, random.Random(0)) for n in (1, 2, 3, 4)]

    assert delays == [0.5, 1.0, 2.0, 3.0]


# -- what a failure leads to -----------------------------------------------------------------------

RETRY, FAIL_OVER, FAIL_OVER_NEUTRAL, FINAL = (
    (True, True, "failure"),
    (False, True, "failure"),
    (False, True, "neutral"),
    (False, False, "success"),
)


def upstream(
    status: int, body: dict[str, Any] | None = None, headers: Mapping[str, str] | None = None
) -> TollgateError:
    raw = json.dumps(body or {"error": {"message": "x", "type": "server_error", "code": None}}).encode()
    return translate_upstream_error(status, raw, headers or {}, provider="p")


TABLE: dict[str, tuple[TollgateError, tuple[bool, bool, str]]] = {
    "upstream 400": (upstream(400), FINAL),
    "upstream 409": (upstream(409), FINAL),
    "upstream 413": (upstream(413), FINAL),
    "upstream 422": (upstream(422), FINAL),
    "upstream 401": (upstream(401), FAIL_OVER),
    "upstream 403": (upstream(403), FAIL_OVER),
    "upstream 404": (upstream(404), FAIL_OVER_NEUTRAL),
    "upstream 408": (upstream(408), RETRY),
    "upstream 429": (upstream(429, headers={"Retry-After": "1"}), RETRY),
    "upstream 429 insufficient_quota": (
        upstream(429, {"error": {"message": "q", "type": "x", "code": "insufficient_quota"}}),
        FAIL_OVER,
    ),
    "upstream 500": (upstream(500), RETRY),
    "upstream 502": (upstream(502), RETRY),
    "upstream 503": (upstream(503), RETRY),
    "upstream 504": (upstream(504), RETRY),
    "upstream 529": (upstream(529), RETRY),
    "upstream redirect": (upstream(302), FAIL_OVER),
    "connect or read timeout": (translate_transport_error(TimeoutError(), "p"), RETRY),
    "connection lost": (
        translate_transport_error(TransportError("the connection was lost mid-answer"), "p"),
        RETRY,
    ),
    "anthropic overloaded": (UpstreamError("o", code="upstream_overloaded"), RETRY),
    "connection refused": (UpstreamError("u", code="upstream_unreachable"), RETRY),
    "forbidden address": (UpstreamError("f", code="upstream_address_forbidden"), FAIL_OVER),
    "gemini failed precondition": (UpstreamError("g", code="upstream_unavailable"), FAIL_OVER),
    "provider not configured": (ServiceUnavailableError("no region"), FAIL_OVER),
    "fake model missing": (ModelNotFoundError("fake/nope"), FAIL_OVER_NEUTRAL),
    "deployment lacks a feature": (
        InvalidRequestError("no", code="unsupported_image_url"),
        FAIL_OVER_NEUTRAL,
    ),
    "invalid request": (InvalidRequestError("bad", param="messages"), FINAL),
    "content filter": (UpstreamRejectedError("no", status=400, code="content_filter"), FINAL),
    "tollgate's own rate limit": (RateLimitError("slow down"), FINAL),
}


@pytest.mark.parametrize(("error", "expected"), TABLE.values(), ids=TABLE.keys())
def test_the_retryability_table(error: TollgateError, expected: tuple[bool, bool, str]) -> None:
    verdict = disposition(error)

    assert (verdict.retry, verdict.fail_over, verdict.health) == expected
    assert is_retryable(error) is expected[0]


def test_the_upstream_statuses_keep_their_meaning() -> None:
    """The table above leans on these translations; a change there must show up here."""
    assert isinstance(upstream(408), UpstreamError) and upstream(408).status == 502
    assert isinstance(translate_transport_error(TimeoutError(), "p"), UpstreamTimeoutError)
    assert isinstance(upstream(429), RateLimitError) and upstream(429).code == "upstream_rate_limited"


# -- the circuit breaker ---------------------------------------------------------------------------

KEY = ("a", "gpt-a")


def test_the_breaker_opens_after_the_threshold_of_consecutive_failures() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=3, open_seconds=10, clock=clock)

    for _ in range(2):
        assert breaker.allow(KEY)
        breaker.record(KEY, "failure")
    assert breaker.state(KEY) is CircuitState.CLOSED
    assert breaker.allow(KEY)
    breaker.record(KEY, "failure")

    assert breaker.state(KEY) is CircuitState.OPEN
    assert not breaker.allow(KEY)
    assert breaker.retry_in(KEY) == 10
    assert breaker.allow(("b", "gpt-b"))  # per deployment


def test_a_success_resets_the_count_and_neutral_outcomes_do_not() -> None:
    breaker = CircuitBreaker(threshold=2, clock=FakeClock())

    breaker.record(KEY, "failure")
    breaker.record(KEY, "success")
    breaker.record(KEY, "failure")
    assert breaker.state(KEY) is CircuitState.CLOSED
    breaker.record(KEY, "neutral")
    breaker.record(KEY, "failure")

    assert breaker.state(KEY) is CircuitState.OPEN


def test_half_open_lets_one_trial_through_and_its_success_closes() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=1, open_seconds=5, clock=clock)
    breaker.record(KEY, "failure")
    clock.advance(5)

    assert breaker.state(KEY) is CircuitState.HALF_OPEN
    assert breaker.allow(KEY)
    assert not breaker.allow(KEY)  # one trial at a time
    breaker.record(KEY, "success")

    assert breaker.state(KEY) is CircuitState.CLOSED
    assert breaker.allow(KEY) and breaker.allow(KEY)


def test_a_failed_trial_opens_the_circuit_again_for_a_full_period() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=1, open_seconds=5, clock=clock)
    breaker.record(KEY, "failure")
    clock.advance(6)
    assert breaker.allow(KEY)

    breaker.record(KEY, "failure")

    assert breaker.state(KEY) is CircuitState.OPEN
    clock.advance(4.9)
    assert not breaker.allow(KEY)
    clock.advance(0.2)
    assert breaker.allow(KEY)


def test_a_neutral_trial_gives_the_slot_back() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=1, open_seconds=5, clock=clock)
    breaker.record(KEY, "failure")
    clock.advance(5)
    assert breaker.allow(KEY)

    breaker.record(KEY, "neutral")

    assert breaker.state(KEY) is CircuitState.HALF_OPEN
    assert breaker.allow(KEY)


# -- deployment order ------------------------------------------------------------------------------


def targets(*specs: tuple[str, int, int]) -> list[RouteTarget]:
    return [RouteTarget(provider=name, upstream_model="m", weight=w, priority=p) for name, w, p in specs]


def test_weights_spread_first_choices_in_proportion() -> None:
    rng = random.Random(20240601)
    route = targets(("a", 3, 0), ("b", 1, 0))

    firsts = Counter(order_targets(route, rng)[0].provider for _ in range(4000))

    assert 0.72 < firsts["a"] / 4000 < 0.78  # 3 in 4


def test_lower_priorities_always_come_first_and_every_target_once() -> None:
    rng = random.Random(7)
    route = targets(("backup", 100, 1), ("a", 1, 0), ("b", 1, 0), ("last", 1, 5))

    for _ in range(200):
        order = [target.provider for target in order_targets(route, rng)]
        assert sorted(order[:2]) == ["a", "b"]
        assert order[2:] == ["backup", "last"]


def test_a_seeded_rng_gives_a_repeatable_order() -> None:
    route = targets(("a", 1, 0), ("b", 1, 0), ("c", 1, 0))

    first = [order_targets(route, random.Random(3)) for _ in range(3)]

    assert first[0] == first[1] == first[2]


def test_a_route_stored_with_one_deployment_reads_as_a_list() -> None:
    stored = {"model": "m", "provider": "a", "upstream_model": "gpt", "created_at": 1, "updated_at": 2}

    record = RouteRecord.model_validate(stored)

    assert record.deployments == [RouteTarget(provider="a", upstream_model="gpt")]
    assert record.primary.provider == "a"


# -- deadlines -------------------------------------------------------------------------------------


@dataclass
class MangumContext:
    """The part of the Python runtime's context object that Tollgate reads."""

    remaining_ms: int

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def test_the_deadline_counts_down_on_its_clock() -> None:
    clock = FakeClock()
    deadline = Deadline(2.0, clock=clock)

    clock.advance(1.5)
    assert deadline.remaining() == 0.5
    clock.advance(1.0)
    assert deadline.remaining() == 0.0 and deadline.expired


def test_mangum_puts_the_lambda_context_where_tollgate_reads_it() -> None:
    from mangum import Mangum

    seen: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen["remaining"] = lambda_remaining_seconds(aws_context=scope.get("aws.context"))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    event = {
        "resource": "/{proxy+}",
        "path": "/v1/embeddings",
        "httpMethod": "POST",
        "headers": {"host": "example.test"},
        "multiValueHeaders": {},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "requestContext": {"resourcePath": "/{proxy+}", "httpMethod": "POST", "stage": "prod"},
        "body": "{}",
        "isBase64Encoded": False,
    }

    handler = Mangum(app, lifespan="off")  # type: ignore[arg-type]
    answer = handler(event, MangumContext(remaining_ms=12_500))  # type: ignore[arg-type]

    assert answer["statusCode"] == 204
    assert seen["remaining"] == 12.5


def test_the_web_adapters_header_gives_the_epoch_millisecond_deadline() -> None:
    header = json.dumps({"request_id": "r", "deadline": 1_700_000_030_000, "invoked_function_arn": "arn"})

    assert lambda_remaining_seconds(lambda_context=header, now=1_700_000_000.0) == 30.0
    legacy = json.dumps({"deadline_ms": 1_700_000_010_000})
    assert lambda_remaining_seconds(lambda_context=legacy, now=1_700_000_000.0) == 10.0


@pytest.mark.parametrize("header", [None, "", "not json", "[]", '{"deadline": "soon"}', '{"deadline": true}'])
def test_no_usable_context_means_no_lambda_deadline(header: str | None) -> None:
    assert lambda_remaining_seconds(lambda_context=header) is None


def test_the_request_deadline_keeps_a_margin_and_never_exceeds_the_timeout() -> None:
    clock = FakeClock()

    on_lambda = request_deadline(timeout=600, margin=2, aws_context=MangumContext(30_000), clock=clock)
    capped = request_deadline(timeout=20, margin=2, aws_context=MangumContext(900_000), clock=clock)
    local = request_deadline(timeout=600, margin=2, clock=clock)
    nearly_over = request_deadline(timeout=600, margin=2, aws_context=MangumContext(1_000), clock=clock)

    assert on_lambda.remaining() == 28
    assert capped.remaining() == 20
    assert local.remaining() == 600
    assert nearly_over.remaining() == 0


# -- the router over fake deployments --------------------------------------------------------------


@dataclass
class Script:
    """What each deployment does per attempt: an error to raise, or None to succeed."""

    outcomes: dict[str, list[TollgateError | None]]
    calls: list[str] = field(default_factory=list)

    async def __call__(self, deployment: Deployment) -> str:
        self.calls.append(deployment.provider_name)
        queue = self.outcomes[deployment.provider_name]
        outcome = queue.pop(0) if len(queue) > 1 else queue[0]
        if outcome is not None:
            raise outcome
        return f"served by {deployment.provider_name}"


class FakeProvider:
    name = "fake"
    capabilities = frozenset({Capability.CHAT})


def plan(*names: str) -> Plan:
    return Plan("team/model", tuple(Deployment(FakeProvider(), name, f"{name}-model") for name in names))  # type: ignore[arg-type]


def make_router(
    clock: FakeClock, *, threshold: int = 5, policy: RetryPolicy | None = None
) -> tuple[Router, list[float]]:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)

    breaker = CircuitBreaker(threshold=threshold, open_seconds=30, clock=clock)
    router = Router(policy or RetryPolicy(base=1.0, cap=4.0, jitter=0.0), breaker, sleep=sleep)
    return router, slept


def run(coroutine: Awaitable[Any]) -> Any:
    async def main() -> Any:
        return await coroutine

    return asyncio.run(main())


def test_retries_with_backoff_then_falls_over_and_says_who_served() -> None:
    clock = FakeClock()
    router, slept = make_router(clock)
    script = Script({"a": [UpstreamError("down")], "b": [None]})

    result, served = run(router.run(plan("a", "b"), script, deadline=Deadline(60, clock=clock)))

    assert (result, served.provider_name) == ("served by b", "b")
    assert script.calls == ["a", "a", "a", "b"]
    assert slept == [1.0, 2.0]


def test_a_final_refusal_ends_the_walk_at_once() -> None:
    clock = FakeClock()
    router, slept = make_router(clock)
    refusal = UpstreamRejectedError("too long", status=400)
    script = Script({"a": [refusal], "b": [None]})

    with pytest.raises(UpstreamRejectedError) as raised:
        run(router.run(plan("a", "b"), script, deadline=Deadline(60, clock=clock)))

    assert raised.value is refusal
    assert script.calls == ["a"] and slept == []


def test_every_deployment_open_is_a_503_with_retry_after() -> None:
    clock = FakeClock()
    router, _ = make_router(clock, threshold=1)
    script = Script({"a": [UpstreamError("down")], "b": [UpstreamError("down")]})
    with pytest.raises(UpstreamError):
        run(router.run(plan("a", "b"), script, deadline=Deadline(60, clock=clock)))
    clock.advance(12)

    with pytest.raises(ServiceUnavailableError) as raised:
        run(router.run(plan("a", "b"), script, deadline=Deadline(60, clock=clock)))

    assert script.calls == ["a", "b"]  # one failure each opened both; then nothing was asked
    assert raised.value.code == "no_healthy_deployment"
    assert raised.value.headers == {"Retry-After": "18"}


def test_the_deadline_cuts_a_slow_attempt_off_without_blaming_the_deployment() -> None:
    router = Router(RetryPolicy(), CircuitBreaker(threshold=1))
    calls: list[str] = []

    async def slow(deployment: Deployment) -> str:
        calls.append(deployment.provider_name)
        await asyncio.sleep(10)
        return "never"

    with pytest.raises(UpstreamTimeoutError):
        run(router.run(plan("a", "b"), slow, deadline=Deadline(0.05)))

    assert calls == ["a"]
    assert router.breaker.state(("a", "a-model")) is CircuitState.CLOSED


def test_no_wait_runs_past_the_deadline() -> None:
    clock = FakeClock()
    router, slept = make_router(clock, policy=RetryPolicy(base=1.0, cap=4.0, jitter=0.0))
    script = Script({"a": [UpstreamError("down")]})

    with pytest.raises(UpstreamError):
        run(router.run(plan("a"), script, deadline=Deadline(2.5, clock=clock)))

    assert slept == [1.0]  # the second backoff (2 s) would end past the deadline
    assert script.calls == ["a", "a"]


def test_a_retry_after_within_the_cap_is_waited_for_exactly() -> None:
    clock = FakeClock()
    router, slept = make_router(clock)
    limited = RateLimitError("slow", retry_after=3, code="upstream_rate_limited")
    script = Script({"a": [limited, None]})

    result, _ = run(router.run(plan("a"), script, deadline=Deadline(60, clock=clock)))

    assert result == "served by a"
    assert slept == [3.0]


def test_an_unexpected_exception_is_not_swallowed_and_frees_a_trial() -> None:
    clock = FakeClock()
    router, _ = make_router(clock, threshold=1)
    router.breaker.record(("a", "a-model"), "failure")
    clock.advance(30)

    async def broken(deployment: Deployment) -> str:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        run(router.run(plan("a"), broken, deadline=Deadline(60, clock=clock)))

    assert router.breaker.allow(("a", "a-model"))  # the trial slot was given back


def test_a_plan_keeps_only_the_deployments_able_to_do_something() -> None:
    chat_only = plan("a", "b")

    assert chat_only.supporting(Capability.CHAT) == chat_only
    assert chat_only.supporting(Capability.EMBEDDINGS) is None
