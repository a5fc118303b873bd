"""The public chat API through the real app, on moto, with the fake provider."""

from __future__ import annotations

import json

HELLO = {"model": "fake/echo", "messages": [{"role": "user", "content": "Hello there"}]}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def sse_payloads(body: str) -> list[str]:
    return [line[len("data: ") :] for line in body.split("\n") if line.startswith("data: ")]


def test_completion_echoes_and_reports_usage(client, tenant_key):
    response = client.post("/v1/chat/completions", json=HELLO, headers=bearer(tenant_key))

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "fake/echo"
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Echo: Hello there",
        "refusal": None,
    }
    assert (
        body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    )
    assert response.headers["x-request-id"].startswith("req_")


def test_stream_follows_openai_format_with_usage_last(client, tenant_key):
    request = {**HELLO, "stream": True, "stream_options": {"include_usage": True}}
    response = client.post("/v1/chat/completions", json=request, headers=bearer(tenant_key))

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    payloads = sse_payloads(response.text)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "Echo: Hello there"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    assert all(chunk.get("usage") is None for chunk in chunks[:-1])


def test_stream_without_include_usage_sends_no_usage_chunk(client, tenant_key):
    response = client.post("/v1/chat/completions", json={**HELLO, "stream": True}, headers=bearer(tenant_key))

    chunks = [json.loads(p) for p in sse_payloads(response.text)[:-1]]
    assert all(chunk["choices"] for chunk in chunks)


def test_every_request_leaves_one_usage_record(client, tenant_key, admin_headers):
    client.post("/v1/chat/completions", json=HELLO, headers=bearer(tenant_key))
    client.post("/v1/chat/completions", json={**HELLO, "stream": True}, headers=bearer(tenant_key))
    client.post("/v1/chat/completions", json={**HELLO, "model": "nope/none"}, headers=bearer(tenant_key))

    records = client.get("/admin/v1/usage", params={"tenant_id": "acme"}, headers=admin_headers).json()[
        "data"
    ]

    by_status = sorted((r["status"], r["stream"], r["usage_source"]) for r in records)
    assert by_status == [(200, False, "provider"), (200, True, "provider"), (404, False, "estimated")]
    ok = [r for r in records if r["status"] == 200]
    assert all(r["prompt_tokens"] > 0 and r["completion_tokens"] > 0 for r in ok)
    assert all(r["provider"] == "fake" and r["key_id"] and r["latency_ms"] >= 0 for r in ok)
    assert all(r["ttfb_ms"] is not None for r in ok)


def test_models_lists_fake_echo(client, tenant_key):
    response = client.get("/v1/models", headers=bearer(tenant_key))

    assert response.status_code == 200
    assert "fake/echo" in [model["id"] for model in response.json()["data"]]


def test_key_limited_to_models_cannot_use_others(client, admin_headers):
    client.post("/admin/v1/tenants", json={"id": "lim", "name": "Limited"}, headers=admin_headers)
    key = client.post(
        "/admin/v1/keys",
        json={"tenant_id": "lim", "name": "narrow", "allowed_models": ["some/model"]},
        headers=admin_headers,
    ).json()["key"]

    response = client.post("/v1/chat/completions", json=HELLO, headers=bearer(key))

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


def test_revoked_key_is_refused(client, tenant_key, admin_headers):
    key_id = tenant_key.split("-")[1]
    assert client.delete(f"/admin/v1/keys/{key_id}", headers=admin_headers).status_code == 200

    response = client.post("/v1/chat/completions", json=HELLO, headers=bearer(tenant_key))

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "revoked_api_key"
