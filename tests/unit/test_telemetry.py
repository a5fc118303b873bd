"""Request metrics: one CloudWatch EMF line per settled request, low-cardinality dimensions only."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tollgate import telemetry
from tollgate.store.records import UsageRecord

NOW_MS = time.time_ns() // 1_000_000


def record(**changes: Any) -> UsageRecord:
    values: dict[str, Any] = {
        "request_id": "req-1",
        "tenant_id": "acme",
        "key_id": "k1",
        "model": "loop/alpha",
        "provider": "loop",
        "endpoint": "chat.completions",
        "stream": True,
        "status": 200,
        "prompt_tokens": 12,
        "completion_tokens": 30,
        "usage_source": "provider",
        "latency_ms": 840,
        "ttfb_ms": 120,
        "created_at_ms": NOW_MS,
        "cost_micros": 420,
        "charged_micros": 525,
    }
    return UsageRecord.model_validate(values | changes)


def emitted(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


@pytest.fixture(autouse=True)
def metrics_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    monkeypatch.delenv("POWERTOOLS_DEV", raising=False)


def test_a_settled_request_prints_one_emf_line(capsys: pytest.CaptureFixture[str]) -> None:
    telemetry.record_request(record())

    (line,) = emitted(capsys)
    (directive,) = line["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "Tollgate"
    assert directive["Dimensions"] == [["service"], ["provider"], ["provider", "model"]]
    units = {metric["Name"]: metric["Unit"] for metric in directive["Metrics"]}
    assert units["Latency"] == units["TimeToFirstByte"] == "Milliseconds"
    assert units["Requests"] == "Count"
    assert line["_aws"]["Timestamp"] == NOW_MS  # when the request arrived
    assert (line["service"], line["provider"], line["model"]) == ("tollgate", "loop", "loop/alpha")
    assert {name: line[name] for name in units} == {
        "Requests": [1.0],
        "Errors": [0.0],
        "UpstreamErrors": [0.0],
        "Disconnects": [0.0],
        "PromptTokens": [12.0],
        "CompletionTokens": [30.0],
        "CostMicros": [420.0],
        "ChargedMicros": [525.0],
        "EstimatedUsage": [0.0],
        "Latency": [840.0],
        "TimeToFirstByte": [120.0],
    }


def test_no_tenant_or_key_ever_becomes_a_dimension(capsys: pytest.CaptureFixture[str]) -> None:
    telemetry.record_request(record())

    (line,) = emitted(capsys)
    dimensions = {name for group in line["_aws"]["CloudWatchMetrics"][0]["Dimensions"] for name in group}
    assert dimensions == {"service", "provider", "model"}
    assert "acme" not in json.dumps(line)
    assert "k1" not in json.dumps(line)


@pytest.mark.parametrize(
    ("status", "errors", "upstream", "disconnects"),
    [(502, 1, 1, 0), (504, 1, 1, 0), (429, 1, 0, 0), (499, 0, 0, 1), (500, 1, 0, 0)],
)
def test_failures_are_counted_by_kind(
    capsys: pytest.CaptureFixture[str], status: int, errors: int, upstream: int, disconnects: int
) -> None:
    telemetry.record_request(record(status=status, ttfb_ms=None, usage_source="partial"))

    (line,) = emitted(capsys)
    assert (line["Errors"], line["UpstreamErrors"], line["Disconnects"]) == (
        [errors],
        [upstream],
        [disconnects],
    )
    assert line["EstimatedUsage"] == [1.0]
    assert "TimeToFirstByte" not in line


@pytest.mark.parametrize("status", [400, 404])
def test_a_model_name_a_client_made_up_is_not_a_dimension(
    capsys: pytest.CaptureFixture[str], status: int
) -> None:
    telemetry.record_request(record(model="loop/made-up-by-a-client", status=status))
    telemetry.record_request(record(model="no-such-model", provider=None, status=404))

    first, second = emitted(capsys)
    assert (first["provider"], first["model"]) == ("loop", "-")
    assert (second["provider"], second["model"]) == ("-", "-")


def test_metrics_can_be_switched_off(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")

    telemetry.record_request(record())

    assert emitted(capsys) == []


def test_a_metrics_failure_never_fails_the_request(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(_: UsageRecord) -> Any:
        raise RuntimeError("EMF serialisation failed")

    monkeypatch.setattr(telemetry, "emf_line", broken)

    telemetry.record_request(record())  # does not raise
    assert emitted(capsys) == []


@settings(max_examples=300, deadline=None)
@given(
    status=st.sampled_from([200, 400, 404, 429, 499, 500, 502, 504]) | st.integers(100, 599),
    provider=st.none() | st.sampled_from(["loop", "openai", "bedrock"]),
    model=st.text(min_size=1, max_size=40),
    tokens=st.tuples(*[st.integers(0, 10**9)] * 4),
    usage_source=st.sampled_from(["provider", "estimated", "partial"]),
    latency_ms=st.integers(0, 10**7),
    ttfb_ms=st.none() | st.integers(0, 10**7),
    age_ms=st.integers(0, 3_600_000),
)
def test_the_emitted_document_is_powertools_own(  # type: ignore[no-untyped-def]
    status, provider, model, tokens, usage_source, latency_ms, ttfb_ms, age_ms
) -> None:
    """The per-shape template plus per-request values is, text for text, the line Powertools and
    ``json`` would print."""
    prompt, completion, cost, charged = tokens
    settled = record(
        status=status,
        provider=provider,
        model=model,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost_micros=cost,
        charged_micros=min(charged, 10**9),
        usage_source=usage_source,
        latency_ms=latency_ms,
        ttfb_ms=ttfb_ms,
        created_at_ms=NOW_MS - age_ms,
    )
    expected = telemetry.request_metrics(settled).serialize_metric_set()
    assert telemetry.emf_line(settled) == json.dumps(expected, separators=(",", ":"))


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_through_the_data_plane_emits_its_line(  # type: ignore[no-untyped-def]
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, client, tenant_key, stream: bool
) -> None:
    """Not only the function: the settlement every data-plane request ends in emits the line."""
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    capsys.readouterr()
    body = {"model": "fake/echo", "messages": [{"role": "user", "content": "hi"}], "stream": stream}

    response = client.post(
        "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {tenant_key}"}
    )

    assert response.status_code == 200
    lines = [line for line in emitted(capsys) if "_aws" in line]
    (line,) = lines
    (directive,) = line["_aws"]["CloudWatchMetrics"]
    assert directive["Dimensions"] == [["service"], ["provider"], ["provider", "model"]]
    assert (line["provider"], line["model"], line["Requests"]) == ("fake", "fake/echo", [1.0])
    tenant_and_key = {name for name in line if "tenant" in name.lower() or "key" in name.lower()}
    assert tenant_and_key == set()
