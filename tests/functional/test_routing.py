"""Retries, fallback and the circuit breaker, through the real app (moto) and two real loopback
OpenAI-compatible upstreams: ``a`` (tried first) and ``b`` (its fallback), behind ``team/model``.

The matrix below is the contract of ``tollgate.routing``'s table: for each fault of ``a``, how
many times ``a`` is asked, whether ``b`` is asked, and what the client sees. Backoffs are made
tiny through settings; the read (idle) timeout is 0.3 s so stalls fail fast.
"""

from __future__ import annotations

import json
import socket
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.openai_upstream import OpenAIUpstream, UpstreamScript

FAST = {
    "retry_base_seconds": 0.001,
    "retry_cap_seconds": 0.05,
    "upstream_read_timeout_seconds": 0.3,
}
KEY_A, KEY_B = "sk-upstream-a", "sk-upstream-b"


def bearer(key: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **extra}


def chat(model: str = "team/model", *, stream: bool = False) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hello there"}], "stream": stream}


def sse_payloads(body: str) -> list[str]:
    return [line[len("data: ") :] for line in body.split("\n") if line.startswith("data: ")]


def streamed_text(body: str) -> str:
    chunks = [json.loads(p) for p in sse_payloads(body) if p != "[DONE]"]
    return "".join(
        (choice.get("delta") or {}).get("content") or "" for c in chunks for choice in c.get("choices") or ()
    )


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def up_a() -> Iterator[OpenAIUpstream]:
    with OpenAIUpstream.in_thread(api_key=KEY_A) as server:
        yield server


@pytest.fixture(scope="module")
def up_b() -> Iterator[OpenAIUpstream]:
    with OpenAIUpstream.in_thread(api_key=KEY_B) as server:
        yield server


@pytest.fixture(autouse=True)
def fresh_upstreams(up_a: OpenAIUpstream, up_b: OpenAIUpstream) -> None:
    up_a.script = UpstreamScript(reply="from a")
    up_b.script = UpstreamScript(reply="from b")
    up_a.requests.clear()
    up_b.requests.clear()


@pytest.fixture
def routing_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings a test changes, through ``@pytest.mark.parametrize(..., indirect=True)``."""
    return dict(getattr(request, "param", {}))


@pytest.fixture
def services(settings, routing_settings):  # type: ignore[no-untyped-def]
    """The conftest's services, with tiny backoffs and a short idle timeout."""
    from tollgate.container import Services

    return Services(settings.model_copy(update={**FAST, **routing_settings}))


@pytest.fixture
def dialled(services, monkeypatch) -> Counter[str]:  # type: ignore[no-untyped-def]
    """How often Tollgate dialled each upstream URL: a spy on the real HTTP client (the only way
    to count attempts on a port where nothing listens)."""
    counts: Counter[str] = Counter()
    real = services.http.post

    def post(url: str, *args: Any, **kwargs: Any) -> Any:
        counts[url] += 1
        return real(url, *args, **kwargs)

    monkeypatch.setattr(services.http, "post", post)
    return counts


def put_provider(client, admin_headers, name: str, base_url: str, key: str, **extra: Any) -> None:  # type: ignore[no-untyped-def]
    body = {"type": "openai_compatible", "base_url": base_url, "api_key": key, **extra}
    response = client.put(f"/admin/v1/providers/{name}", json=body, headers=admin_headers)
    assert response.status_code == 200, response.text


def put_route(client, admin_headers, model: str, body: dict[str, Any]) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    response = client.put(f"/admin/v1/models/{model}", json=body, headers=admin_headers)
    assert response.status_code == 200, response.text
    route: dict[str, Any] = response.json()
    return route


A_THEN_B = {
    "deployments": [
        {"provider": "a", "upstream_model": "gpt-a"},
        {"provider": "b", "upstream_model": "gpt-b", "priority": 1},
    ]
}


@pytest.fixture
def routed(client, admin_headers, up_a, up_b) -> None:  # type: ignore[no-untyped-def]
    """Providers ``a`` and ``b`` (one key each), and ``team/model`` -> [a, then b]."""
    put_provider(client, admin_headers, "a", up_a.base_url, KEY_A)
    put_provider(client, admin_headers, "b", up_b.base_url, KEY_B)
    put_route(client, admin_headers, "team/model", A_THEN_B)


def usage_records(client, admin_headers) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    response = client.get("/admin/v1/usage", params={"tenant_id": "acme"}, headers=admin_headers)
    assert response.status_code == 200, response.text
    records: list[dict[str, Any]] = response.json()["data"]
    return records


# -- the matrix: one fault of `a` before the first byte ---------------------------------------

RETRIED = 3  # the first attempt and two retries
#: fault of `a` -> (attempts on a, b tried?, status the client sees)
MATRIX: dict[str, tuple[dict[str, Any], int, bool, int]] = {
    "400 the request is refused": ({"fail_status": 400}, 1, False, 400),
    "401 a bad key": ({"fail_status": 401}, 1, True, 200),
    "404 the model is missing there": ({"fail_status": 404}, 1, True, 200),
    "408": ({"fail_status": 408}, RETRIED, True, 200),
    "429 with Retry-After: 0": (
        {"fail_status": 429, "fail_headers": {"Retry-After": "0"}},
        RETRIED,
        True,
        200,
    ),
    "500": ({"fail_status": 500}, RETRIED, True, 200),
    "502": ({"fail_status": 502}, RETRIED, True, 200),
    "503": ({"fail_status": 503}, RETRIED, True, 200),
    "529": ({"fail_status": 529}, RETRIED, True, 200),
    "stall before the first byte": ({"latency": 5.0}, RETRIED, True, 200),
}
STREAM_ONLY: dict[str, tuple[dict[str, Any], int, bool, int]] = {
    "stream dropped before the first chunk": ({"drop_after": 0}, RETRIED, True, 200),
}


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize(("fault", "attempts_on_a", "b_tried", "status"), MATRIX.values(), ids=MATRIX.keys())
def test_a_failure_before_the_first_byte(
    client, tenant_key, admin_headers, routed, up_a, up_b, stream, fault, attempts_on_a, b_tried, status
):
    up_a.script = UpstreamScript(reply="from a", **fault)

    response = client.post("/v1/chat/completions", json=chat(stream=stream), headers=bearer(tenant_key))

    assert len(up_a.requests) == attempts_on_a
    assert len(up_b.requests) == (1 if b_tried else 0)
    assert response.status_code == status, response.text
    if status == 200:
        text = streamed_text(response.text) if stream else response.json()["choices"][0]["message"]["content"]
        assert text == "from b"
    records = usage_records(client, admin_headers)
    assert len(records) == 1  # one request, one settlement, however many attempts
    assert (records[0]["provider"], records[0]["upstream_model"]) == (
        ("b", "gpt-b") if b_tried else ("a", "gpt-a")
    )


@pytest.mark.parametrize(
    ("fault", "attempts_on_a", "b_tried", "status"), STREAM_ONLY.values(), ids=STREAM_ONLY.keys()
)
def test_a_stream_failure_before_the_first_chunk(
    client, tenant_key, routed, up_a, up_b, fault, attempts_on_a, b_tried, status
):
    up_a.script = UpstreamScript(reply="from a", **fault)

    response = client.post("/v1/chat/completions", json=chat(stream=True), headers=bearer(tenant_key))

    assert len(up_a.requests) == attempts_on_a
    assert len(up_b.requests) == (1 if b_tried else 0)
    assert response.status_code == status
    assert streamed_text(response.text) == "from b"


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_a_refused_connection_is_retried_then_failed_over(
    client, tenant_key, admin_headers, routed, up_b, dialled, stream
):
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    put_provider(client, admin_headers, "a", dead, KEY_A)

    response = client.post("/v1/chat/completions", json=chat(stream=stream), headers=bearer(tenant_key))

    assert response.status_code == 200, response.text
    assert dialled[f"{dead}/chat/completions"] == RETRIED
    assert len(up_b.requests) == 1


# -- after visible output, nothing fails over --------------------------------------------------

#: fault of `a` after its first chunk -> the status its usage record shows
AFTER_OUTPUT: dict[str, tuple[dict[str, Any], int]] = {
    "dropped after the first chunk": ({"drop_after": 2}, 502),
    "stalled after the first chunk (idle timeout)": ({"stall_after": 2, "stall_seconds": 5.0}, 504),
    "error event after the first chunk": ({"error_after": 2}, 502),
}


@pytest.mark.parametrize(("fault", "recorded_status"), AFTER_OUTPUT.values(), ids=AFTER_OUTPUT.keys())
def test_after_the_first_chunk_nothing_fails_over(
    client, tenant_key, admin_headers, routed, up_a, up_b, fault, recorded_status
):
    up_a.script = UpstreamScript(reply="from a and more", **fault)

    started = time.monotonic()
    response = client.post("/v1/chat/completions", json=chat(stream=True), headers=bearer(tenant_key))

    assert time.monotonic() - started < 3.0  # the stall ended at the 0.3 s idle timeout, not 5 s
    assert response.status_code == 200  # the stream had started
    payloads = sse_payloads(response.text)
    assert payloads[-1] == "[DONE]"
    assert "error" in json.loads(payloads[-2])  # the failure, as an SSE error event
    assert "from b" not in response.text
    assert len(up_a.requests) == 1
    assert len(up_b.requests) == 0
    (record,) = usage_records(client, admin_headers)
    assert (record["provider"], record["status"]) == ("a", recorded_status)


# -- when everything fails ---------------------------------------------------------------------


def test_when_every_deployment_fails_the_client_sees_the_last_failure(client, tenant_key, routed, up_a, up_b):
    up_a.script = UpstreamScript(fail_status=503)
    up_b.script = UpstreamScript(fail_status=429, fail_headers={"Retry-After": "0"})

    response = client.post("/v1/chat/completions", json=chat(), headers=bearer(tenant_key))

    assert response.status_code == 429
    assert response.json()["error"]["code"] == "upstream_rate_limited"
    assert response.headers["retry-after"] == "0"
    assert (len(up_a.requests), len(up_b.requests)) == (RETRIED, RETRIED)


def test_a_failed_request_releases_its_hold_and_charges_nothing(
    client, tenant_key, admin_headers, routed, up_a, up_b
):
    up_a.script = up_b.script = UpstreamScript(fail_status=500)

    response = client.post("/v1/chat/completions", json=chat(), headers=bearer(tenant_key))

    assert response.status_code == 502
    (record,) = usage_records(client, admin_headers)
    assert (record["status"], record["provider"], record["completion_tokens"]) == (502, "b", 0)


# -- the circuit breaker -----------------------------------------------------------------------


@pytest.mark.parametrize("routing_settings", [{"breaker_failure_threshold": 3}], indirect=True)
def test_the_breaker_takes_a_failing_deployment_out(client, tenant_key, admin_headers, routed, up_a, up_b):
    up_a.script = UpstreamScript(fail_status=503)
    put_route(client, admin_headers, "team/solo", {"provider": "a", "upstream_model": "gpt-a"})

    first = client.post("/v1/chat/completions", json=chat(), headers=bearer(tenant_key))
    second = client.post("/v1/chat/completions", json=chat(stream=True), headers=bearer(tenant_key))
    solo = client.post("/v1/chat/completions", json=chat("team/solo"), headers=bearer(tenant_key))

    assert (first.status_code, second.status_code) == (200, 200)
    assert len(up_a.requests) == 3  # three failures opened the circuit: no more requests to a
    assert len(up_b.requests) == 2
    assert solo.status_code == 503
    assert solo.json()["error"]["code"] == "no_healthy_deployment"
    assert 1 <= int(solo.headers["retry-after"]) <= 30


@pytest.mark.parametrize(
    "routing_settings", [{"breaker_failure_threshold": 3, "breaker_open_seconds": 0.3}], indirect=True
)
def test_after_its_open_time_one_trial_request_closes_the_circuit(client, tenant_key, routed, up_a, up_b):
    up_a.script = UpstreamScript(fail_status=503)
    client.post("/v1/chat/completions", json=chat(), headers=bearer(tenant_key))
    up_a.script = UpstreamScript(reply="from a")  # a recovers
    while_open = client.post("/v1/chat/completions", json=chat(), headers=bearer(tenant_key))
    time.sleep(0.35)

    trial = client.post("/v1/chat/completions", json=chat(), headers=bearer(tenant_key))
    closed = client.post("/v1/chat/completions", json=chat(), headers=bearer(tenant_key))

    assert while_open.json()["choices"][0]["message"]["content"] == "from b"
    assert trial.json()["choices"][0]["message"]["content"] == "from a"
    assert closed.json()["choices"][0]["message"]["content"] == "from a"
    assert len(up_a.requests) == 3 + 2


def test_the_breaker_outlives_the_request_but_not_a_rejection(client, tenant_key, routed, up_a, up_b):
    """A 400 proves the deployment is up: it neither opens the circuit nor fails over."""
    up_a.script = UpstreamScript(fail_status=400)

    for _ in range(6):
        assert client.post("/v1/chat/completions", json=chat(), headers=bearer(tenant_key)).status_code == 400

    assert (len(up_a.requests), len(up_b.requests)) == (6, 0)


# -- deadlines and timeouts --------------------------------------------------------------------


@pytest.mark.parametrize(
    "routing_settings",
    [
        {
            "retry_base_seconds": 5.0,
            "retry_cap_seconds": 10.0,
            "retry_jitter": 0.0,
            "request_timeout_seconds": 1.0,
        }
    ],
    indirect=True,
)
def test_a_deadline_shorter_than_the_backoff_stops_retrying(
    client, tenant_key, admin_headers, routed, up_a, up_b
):
    up_a.script = UpstreamScript(fail_status=503)
    put_route(client, admin_headers, "team/solo", {"provider": "a", "upstream_model": "gpt-a"})

    started = time.monotonic()
    fallback = client.post("/v1/chat/completions", json=chat(), headers=bearer(tenant_key))
    solo = client.post("/v1/chat/completions", json=chat("team/solo"), headers=bearer(tenant_key))
    elapsed = time.monotonic() - started

    assert fallback.status_code == 200  # straight to b: a 5 s backoff does not fit in 1 s
    assert solo.status_code == 502
    assert len(up_a.requests) == 2  # one attempt per request, no retry
    assert elapsed < 2.0


@pytest.mark.parametrize("routing_settings", [{"request_timeout_seconds": 1.0}], indirect=True)
def test_a_retry_after_longer_than_the_deadline_is_not_waited_for(client, tenant_key, routed, up_a, up_b):
    up_a.script = UpstreamScript(fail_status=429, fail_headers={"Retry-After": "2"})

    response = client.post("/v1/chat/completions", json=chat(), headers=bearer(tenant_key))

    assert response.status_code == 200
    assert (len(up_a.requests), len(up_b.requests)) == (1, 1)


@pytest.mark.parametrize(
    "routing_settings",
    [
        {
            "upstream_read_timeout_seconds": 30.0,
            "request_timeout_seconds": 60.0,
            "deadline_margin_seconds": 1.0,
        }
    ],
    indirect=True,
)
def test_the_lambda_web_adapter_deadline_cuts_a_stalled_upstream_off(client, tenant_key, routed, up_a, up_b):
    up_a.script = UpstreamScript(latency=5.0)
    context = {
        "request_id": "r-1",
        "deadline": int(time.time() * 1000) + 1_600,
        "invoked_function_arn": "arn",
    }

    started = time.monotonic()
    response = client.post(
        "/v1/chat/completions",
        json=chat(stream=True),
        headers=bearer(tenant_key, **{"x-amzn-lambda-context": json.dumps(context)}),
    )

    assert response.status_code == 504
    assert time.monotonic() - started < 2.0  # 1.6 s left, less the 1 s margin
    assert len(up_b.requests) == 0  # no time was left for the fallback


@pytest.mark.parametrize(
    "routing_settings",
    [{"upstream_read_timeout_seconds": 30.0, "request_timeout_seconds": 0.5}],
    indirect=True,
)
def test_a_lambda_context_header_cannot_extend_the_request_timeout(client, tenant_key, routed, up_a):
    up_a.script = UpstreamScript(latency=5.0)
    far = {"deadline": int(time.time() * 1000) + 3_600_000}

    started = time.monotonic()
    response = client.post(
        "/v1/chat/completions",
        json=chat(),
        headers=bearer(tenant_key, **{"x-amzn-lambda-context": json.dumps(far)}),
    )

    assert response.status_code == 504
    assert time.monotonic() - started < 1.5


def test_a_providers_own_timeout_overrides_the_default(client, tenant_key, admin_headers, routed, up_a, up_b):
    up_a.script = UpstreamScript(reply="from a", latency=0.6)  # longer than the 0.3 s default

    put_provider(client, admin_headers, "a", up_a.base_url, KEY_A, timeout_seconds=2)
    slow_but_allowed = client.post("/v1/chat/completions", json=chat(), headers=bearer(tenant_key))
    put_provider(client, admin_headers, "a", up_a.base_url, KEY_A)  # back to the default
    too_slow = client.post("/v1/chat/completions", json=chat(), headers=bearer(tenant_key))

    assert slow_but_allowed.json()["choices"][0]["message"]["content"] == "from a"
    assert too_slow.json()["choices"][0]["message"]["content"] == "from b"
    assert len(up_a.requests) == 1 + RETRIED


# -- ordering, capabilities, other endpoints -----------------------------------------------------


def test_equal_priorities_spread_requests_by_weight(client, tenant_key, admin_headers, routed, up_a, up_b):
    put_route(
        client,
        admin_headers,
        "team/spread",
        {
            "deployments": [
                {"provider": "a", "upstream_model": "gpt-a", "weight": 1},
                {"provider": "b", "upstream_model": "gpt-b", "weight": 1},
            ]
        },
    )

    for _ in range(16):
        assert (
            client.post(
                "/v1/chat/completions", json=chat("team/spread"), headers=bearer(tenant_key)
            ).status_code
            == 200
        )

    # Each request goes to a or b with even odds: one run in 32,768 sends all 16 to one of them.
    assert len(up_a.requests) + len(up_b.requests) == 16
    assert len(up_a.requests) > 0 and len(up_b.requests) > 0


def test_embeddings_skip_deployments_without_the_capability_and_fail_over(
    client, tenant_key, admin_headers, routed, up_a, up_b
):
    body = {"type": "deepseek", "base_url": up_a.base_url, "api_key": KEY_A}  # DeepSeek has no embeddings
    assert client.put("/admin/v1/providers/chat-only", json=body, headers=admin_headers).status_code == 200
    put_route(
        client,
        admin_headers,
        "team/embed",
        {
            "deployments": [
                {"provider": "chat-only", "upstream_model": "embed-x"},
                {"provider": "a", "upstream_model": "embed-a", "priority": 1},
                {"provider": "b", "upstream_model": "embed-b", "priority": 2},
            ]
        },
    )
    put_route(client, admin_headers, "team/chat-only", {"provider": "chat-only", "upstream_model": "x"})
    up_a.script = UpstreamScript(fail_status=503)

    embedded = client.post(
        "/v1/embeddings", json={"model": "team/embed", "input": "hi"}, headers=bearer(tenant_key)
    )
    refused = client.post(
        "/v1/embeddings", json={"model": "team/chat-only", "input": "hi"}, headers=bearer(tenant_key)
    )

    assert embedded.status_code == 200, embedded.text
    assert [r.json["model"] for r in up_a.requests] == ["embed-a"] * RETRIED  # chat-only was never asked
    assert [r.json["model"] for r in up_b.requests] == ["embed-b"]
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "unsupported_model"


# -- the admin side of routes --------------------------------------------------------------------


def test_a_route_shows_its_deployments(client, admin_headers, routed):
    route = client.get("/admin/v1/models/team/model", headers=admin_headers).json()

    assert route["deployments"] == [
        {"provider": "a", "upstream_model": "gpt-a", "weight": 1, "priority": 0},
        {"provider": "b", "upstream_model": "gpt-b", "weight": 1, "priority": 1},
    ]
    assert (route["provider"], route["upstream_model"]) == ("a", "gpt-a")  # the first, as before


def test_the_single_deployment_form_still_works(client, admin_headers, routed):
    route = put_route(client, admin_headers, "team/one", {"provider": "b", "upstream_model": "gpt-b"})

    assert route["deployments"] == [{"provider": "b", "upstream_model": "gpt-b", "weight": 1, "priority": 0}]


BAD_ROUTES = {
    "both forms": {
        "provider": "a",
        "upstream_model": "m",
        "deployments": [{"provider": "b", "upstream_model": "m"}],
    },
    "neither form": {},
    "half the single form": {"provider": "a"},
    "no deployments": {"deployments": []},
    "seventeen deployments": {
        "deployments": [{"provider": "a", "upstream_model": f"m{i}"} for i in range(17)]
    },
    "a deployment twice": {"deployments": [{"provider": "a", "upstream_model": "m"}] * 2},
    "an unknown field": {"deployments": [{"provider": "a", "upstream_model": "m", "region": "x"}]},
    "a zero weight": {"deployments": [{"provider": "a", "upstream_model": "m", "weight": 0}]},
    "an unknown provider": {
        "deployments": [{"provider": "a", "upstream_model": "m"}, {"provider": "zz", "upstream_model": "m"}]
    },
}


@pytest.mark.parametrize("body", BAD_ROUTES.values(), ids=BAD_ROUTES.keys())
def test_bad_routes_are_refused(client, admin_headers, routed, body):
    response = client.put("/admin/v1/models/team/bad", json=body, headers=admin_headers)

    assert response.status_code == 400, response.text
    assert client.get("/admin/v1/models/team/bad", headers=admin_headers).status_code == 404


@pytest.mark.parametrize("timeout", [0, 901, 2.5])
def test_a_provider_timeout_is_whole_seconds_from_1_to_900(client, admin_headers, up_a, timeout):
    body = {"type": "openai_compatible", "base_url": up_a.base_url, "timeout_seconds": timeout}

    assert client.put("/admin/v1/providers/p", json=body, headers=admin_headers).status_code == 400


def test_a_provider_shows_its_timeout(client, admin_headers, up_a):
    body = {"type": "openai_compatible", "base_url": up_a.base_url, "timeout_seconds": 45}

    shown = client.put("/admin/v1/providers/p", json=body, headers=admin_headers).json()

    assert shown["timeout_seconds"] == 45


def test_a_route_stored_before_deployments_existed_still_serves(client, services, tenant_key, routed, up_b):
    from tollgate.store.dynamo import to_item

    legacy = {
        "pk": "MODEL#team/old",
        "sk": "META",
        "gsi1pk": "MODEL",
        "gsi1sk": "team/old",
        "model": "team/old",
        "provider": "b",
        "upstream_model": "gpt-old",
        "created_at": 1,
        "updated_at": 1,
    }
    services.dynamodb.put_item(TableName=services.settings.catalog_table, Item=to_item(legacy))

    response = client.post("/v1/chat/completions", json=chat("team/old"), headers=bearer(tenant_key))

    assert response.status_code == 200, response.text
    assert up_b.requests[-1].json["model"] == "gpt-old"
