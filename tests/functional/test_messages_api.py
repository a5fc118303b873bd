"""The Anthropic-compatible API (``POST /v1/messages``) through the real app, on moto: the fake
provider, and an Anthropic upstream on loopback registered through the admin API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.anthropic_upstream import AnthropicScript, AnthropicUpstream, ToolUse

HELLO = {"model": "fake/echo", "max_tokens": 64, "messages": [{"role": "user", "content": "Hello there"}]}
ANTHROPIC_HEADERS = {"anthropic-version": "2023-06-01"}
UPSTREAM_KEY = "sk-ant-functional-0123456789"


def api_key(key: str) -> dict[str, str]:
    """How Anthropic clients authenticate."""
    return {"x-api-key": key, **ANTHROPIC_HEADERS}


def events_of(body: str) -> list[tuple[str, dict[str, Any]]]:
    """``(event name, payload)`` pairs of an Anthropic event stream; every name matches its type."""
    events = []
    for frame in body.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in frame.split("\n"))
        payload = json.loads(lines["data"])
        assert lines["event"] == payload["type"]
        events.append((lines["event"], payload))
    return events


def assert_anthropic_error(response: Any, status: int, type_: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error"
    assert set(body["error"]) == {"type", "message"}
    assert body["error"]["type"] == type_
    assert "Traceback" not in response.text
    assert response.headers["x-request-id"].startswith("req_")
    message: str = body["error"]["message"]
    return message


# -- the fake provider -----------------------------------------------------------------------


def test_message_from_fake_echo(client, tenant_key):
    response = client.post("/v1/messages", json=HELLO, headers=api_key(tenant_key))

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["type"] == "message"
    assert body["role"] == "assistant"
    assert body["model"] == "fake/echo"
    assert body["id"].startswith("msg_")
    assert body["content"] == [{"type": "text", "text": "Echo: Hello there"}]
    assert body["stop_reason"] == "end_turn"
    assert body["usage"]["input_tokens"] > 0 and body["usage"]["output_tokens"] > 0
    assert body["usage"]["cost"] == response.headers["x-tollgate-cost"]  # Tollgate's cost rides along


def test_a_bearer_token_works_and_a_low_max_tokens_stops_at_max_tokens(client, tenant_key):
    response = client.post(
        "/v1/messages", json={**HELLO, "max_tokens": 1}, headers={"Authorization": f"Bearer {tenant_key}"}
    )

    assert response.status_code == 200, response.text
    assert response.json()["stop_reason"] == "max_tokens"


def test_stream_follows_anthropics_event_sequence(client, tenant_key):
    response = client.post("/v1/messages", json={**HELLO, "stream": True}, headers=api_key(tenant_key))

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = events_of(response.text)
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    text = "".join(payload["delta"]["text"] for name, payload in events if name == "content_block_delta")
    assert text == "Echo: Hello there"
    final = events[-2][1]
    assert final["delta"]["stop_reason"] == "end_turn"
    assert final["usage"]["output_tokens"] > 0 and final["usage"]["input_tokens"] > 0


def test_every_request_leaves_one_usage_record(client, tenant_key, admin_headers):
    client.post("/v1/messages", json=HELLO, headers=api_key(tenant_key))
    client.post("/v1/messages", json={**HELLO, "stream": True}, headers=api_key(tenant_key))
    client.post("/v1/messages", json={**HELLO, "model": "nope/none"}, headers=api_key(tenant_key))

    records = client.get("/admin/v1/usage", params={"tenant_id": "acme"}, headers=admin_headers).json()[
        "data"
    ]

    assert sorted((r["status"], r["stream"], r["usage_source"]) for r in records) == [
        (200, False, "provider"),
        (200, True, "provider"),
        (404, False, "estimated"),
    ]


# -- errors in Anthropic's shape -----------------------------------------------------------------


def test_missing_max_tokens_is_an_anthropic_400_naming_it(client, tenant_key):
    body = {key: value for key, value in HELLO.items() if key != "max_tokens"}

    response = client.post("/v1/messages", json=body, headers=api_key(tenant_key))

    assert "max_tokens" in assert_anthropic_error(response, 400, "invalid_request_error")


def test_bad_bodies_are_anthropic_400s(client, tenant_key):
    bad_bodies = {
        "no messages": {**HELLO, "messages": []},
        "system role": {**HELLO, "messages": [{"role": "system", "content": "x"}]},
        "temperature": {**HELLO, "temperature": 1.5},
        "server tool": {**HELLO, "tools": [{"type": "web_search_20250305", "name": "web_search"}]},
        "text without text": {**HELLO, "messages": [{"role": "user", "content": [{"type": "text"}]}]},
        "not an object": [1, 2, 3],
    }
    for case, body in bad_bodies.items():
        response = client.post("/v1/messages", json=body, headers=api_key(tenant_key))
        assert response.status_code == 400, case
        assert_anthropic_error(response, 400, "invalid_request_error")

    broken = client.post(
        "/v1/messages",
        content=b'{"model": "fake/echo",',
        headers={**api_key(tenant_key), "Content-Type": "application/json"},
    )
    assert_anthropic_error(broken, 400, "invalid_request_error")


def test_bad_credentials_are_anthropic_401s(client):
    for headers in (ANTHROPIC_HEADERS, api_key("tg-nope")):
        assert_anthropic_error(
            client.post("/v1/messages", json=HELLO, headers=headers), 401, "authentication_error"
        )


def test_unknown_models_and_methods_are_anthropic_errors_and_openai_routes_keep_their_shape(
    client, tenant_key
):
    unknown = client.post(
        "/v1/messages", json={**HELLO, "model": "nobody/nothing"}, headers=api_key(tenant_key)
    )
    assert_anthropic_error(unknown, 404, "not_found_error")
    assert_anthropic_error(
        client.get("/v1/messages", headers=api_key(tenant_key)), 405, "invalid_request_error"
    )

    openai = client.post("/v1/chat/completions", json={"model": "fake/echo", "messages": []})
    assert set(openai.json()) == {"error"}
    assert set(openai.json()["error"]) == {"message", "type", "param", "code"}


def test_insufficient_credits_is_an_anthropic_billing_error(monkeypatch, client, admin_headers, tenant_key):
    monkeypatch.setenv("TOLLGATE_BILLING_MODE", "credits")  # read by the app built below
    from starlette.testclient import TestClient

    from tollgate.api.apps import local_app
    from tollgate.container import Services
    from tollgate.settings import Settings

    with TestClient(
        local_app(Services(Settings.from_environment())), raise_server_exceptions=False
    ) as credits:
        credits.put(
            "/admin/v1/models/fake/echo/prices",
            json={"cost": {"input": "100", "output": "1000"}},
            headers=admin_headers,
        )
        response = credits.post("/v1/messages", json=HELLO, headers=api_key(tenant_key))

    assert_anthropic_error(response, 402, "billing_error")


# -- through an Anthropic upstream ---------------------------------------------------------------


@pytest.fixture
def upstream() -> Iterator[AnthropicUpstream]:
    with AnthropicUpstream.in_thread(api_key=UPSTREAM_KEY) as server:
        yield server


@pytest.fixture
def claude(client, admin_headers, upstream) -> str:  # type: ignore[no-untyped-def]
    """A provider of type anthropic on the loopback upstream; returns its model name."""
    response = client.put(
        "/admin/v1/providers/claude",
        json={"type": "anthropic", "base_url": upstream.base_url, "api_key": UPSTREAM_KEY},
        headers=admin_headers,
    )
    assert response.status_code == 200, response.text
    return "claude/claude-loopback"


def test_a_claude_code_style_turn_reaches_anthropic_with_nothing_lost(client, tenant_key, upstream, claude):
    """System blocks with cache_control, tools, signed thinking and tool results arrive as sent."""
    cache = {"type": "ephemeral"}
    thinking = {"type": "enabled", "budget_tokens": 1024}
    signed = {"type": "thinking", "thinking": "I should look.", "signature": "sig-from-anthropic"}
    tool = {
        "name": "read_file",
        "description": "Reads a file",
        "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}},
        "cache_control": cache,
    }
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "What is in README?"}]},
        {
            "role": "assistant",
            "content": [
                signed,
                {"type": "tool_use", "id": "toolu_01", "name": "read_file", "input": {"path": "README"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_01",
                    "content": "# Tollgate",
                    "cache_control": cache,
                },
                {"type": "text", "text": "Summarize it."},
            ],
        },
    ]
    system = [{"type": "text", "text": "You are a coding agent.", "cache_control": cache}]
    upstream.script = AnthropicScript(thinking="Short file.", reply="It is a gateway.", cache_read_tokens=900)
    request = {
        "model": claude,
        "max_tokens": 2048,
        "system": system,
        "messages": messages,
        "tools": [tool],
        "tool_choice": {"type": "auto"},
        "thinking": thinking,
        "metadata": {"user_id": "dev-1"},
    }

    response = client.post("/v1/messages", json=request, headers=api_key(tenant_key))

    assert response.status_code == 200, response.text
    sent = upstream.requests[-1].json
    assert sent == {
        "model": "claude-loopback",
        "max_tokens": 2048,
        # One plain text block goes as the equivalent string; everything else exactly as sent.
        "messages": [{"role": "user", "content": "What is in README?"}, *messages[1:]],
        "system": system,
        "metadata": {"user_id": "dev-1"},
        "thinking": thinking,
        "tools": [tool],
        "tool_choice": {"type": "auto"},
    }
    body = response.json()
    assert body["content"] == [
        {"type": "thinking", "thinking": "Short file.", "signature": "sig-loopback-0123"},
        {"type": "text", "text": "It is a gateway."},
    ]
    assert body["usage"]["cache_read_input_tokens"] == 900


def test_tool_use_streams_from_anthropic_back_to_an_anthropic_client(client, tenant_key, upstream, claude):
    upstream.script = AnthropicScript(
        reply="Checking.", tool_uses=(ToolUse("get_weather", {"city": "Paris"}),)
    )
    tool = {
        "name": "get_weather",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    request = {**HELLO, "model": claude, "stream": True, "tools": [tool]}

    response = client.post("/v1/messages", json=request, headers=api_key(tenant_key))

    events = events_of(response.text)
    starts = [payload["content_block"] for name, payload in events if name == "content_block_start"]
    assert starts == [
        {"type": "text", "text": ""},
        {"type": "tool_use", "id": "toolu_loopback_1", "name": "get_weather", "input": {}},
    ]
    arguments = "".join(
        payload["delta"]["partial_json"]
        for name, payload in events
        if name == "content_block_delta" and payload["delta"]["type"] == "input_json_delta"
    )
    assert json.loads(arguments) == {"city": "Paris"}
    final = events[-2][1]
    assert final["delta"]["stop_reason"] == "tool_use"
    # The upstream's own counts: "Hello there" is 2 words + 5; the reply and the tool input, a word each.
    assert (final["usage"]["input_tokens"], final["usage"]["output_tokens"]) == (7, 2)


def test_an_upstream_overload_is_an_anthropic_api_error(client, tenant_key, upstream, claude):
    upstream.script = AnthropicScript(fail_status=529)

    response = client.post("/v1/messages", json={**HELLO, "model": claude}, headers=api_key(tenant_key))

    message = assert_anthropic_error(response, 502, "api_error")
    assert "overloaded" in message
    assert UPSTREAM_KEY not in response.text
