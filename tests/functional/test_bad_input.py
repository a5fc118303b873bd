"""Bad input gets a 4xx in OpenAI's error shape: never a 5xx, never a stack trace."""

from __future__ import annotations

import pytest

HELLO = {"model": "fake/echo", "messages": [{"role": "user", "content": "Hi"}]}


def assert_openai_error(response, status: int) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert "Traceback" not in response.text
    assert response.headers["x-request-id"].startswith("req_")
    return error  # type: ignore[no-any-return]


def test_broken_json_is_400(client, tenant_key):
    response = client.post(
        "/v1/chat/completions",
        content=b'{"model": "fake/echo", "messages": [',
        headers={"Authorization": f"Bearer {tenant_key}", "Content-Type": "application/json"},
    )
    assert_openai_error(response, 400)


def test_missing_messages_names_the_param(client, tenant_key):
    response = client.post(
        "/v1/chat/completions", json={"model": "fake/echo"}, headers={"Authorization": f"Bearer {tenant_key}"}
    )
    assert assert_openai_error(response, 400)["param"] == "messages"


@pytest.mark.parametrize(
    "body",
    [
        {"model": "fake/echo", "messages": []},
        {"model": "fake/echo", "messages": [{"role": "wizard", "content": "x"}]},
        {"model": "fake/echo", "messages": "hi"},
        {"model": "", "messages": [{"role": "user", "content": "x"}]},
        {"model": "fake/echo", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
        {"model": "fake/echo", "messages": [{"role": "user", "content": "x"}], "stream_options": {}},
        [1, 2, 3],
    ],
)
def test_invalid_bodies_are_400(client, tenant_key, body):
    response = client.post(
        "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {tenant_key}"}
    )
    assert_openai_error(response, 400)


def test_unknown_model_is_404(client, tenant_key):
    response = client.post(
        "/v1/chat/completions",
        json={**HELLO, "model": "nobody/nothing"},
        headers={"Authorization": f"Bearer {tenant_key}"},
    )
    assert assert_openai_error(response, 404)["code"] == "model_not_found"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer tg-0123456789abcdef-" + "A" * 43},
        {"Authorization": "Bearer sk-not-a-tollgate-key"},
        {"Authorization": "Bearer " + "x" * 65536},
        {"x-api-key": "tg-nope"},
    ],
    ids=["none", "empty", "basic", "unknown-key", "foreign", "64kb", "x-api-key"],
)
def test_wrong_credentials_are_401(client, headers):
    response = client.post("/v1/chat/completions", json=HELLO, headers=headers)
    assert_openai_error(response, 401)


def test_wrong_secret_for_a_real_key_id_is_401(client, tenant_key):
    forged = tenant_key[:-4] + ("AAAA" if not tenant_key.endswith("AAAA") else "BBBB")
    response = client.post("/v1/chat/completions", json=HELLO, headers={"Authorization": f"Bearer {forged}"})
    assert_openai_error(response, 401)


def test_data_plane_key_cannot_reach_admin(client, tenant_key):
    response = client.get("/admin/v1/tenants", headers={"Authorization": f"Bearer {tenant_key}"})
    assert_openai_error(response, 401)


def test_unknown_route_is_404_in_openai_shape(client):
    assert_openai_error(client.get("/v1/nothing-here"), 404)


def test_oversized_body_is_413(client, tenant_key, services):
    huge = "x" * (services.settings.max_request_bytes + 1)
    response = client.post(
        "/v1/chat/completions",
        json={**HELLO, "messages": [{"role": "user", "content": huge}]},
        headers={"Authorization": f"Bearer {tenant_key}"},
    )
    assert_openai_error(response, 413)


def test_admin_rejects_unknown_fields(client, admin_headers):
    response = client.post("/admin/v1/tenants", json={"name": "x", "balance": 10**9}, headers=admin_headers)
    assert assert_openai_error(response, 400)["param"] == "balance"


def _admin_operations(client) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """Every admin operation, with its path parameters filled in."""
    import re

    paths = client.get("/openapi.json").json()["paths"]
    return [
        (method.upper(), re.sub(r"\{[a-z_]+\}", "1", path))
        for path, item in paths.items()
        if path.startswith("/admin/")
        for method in item
    ]


def test_admin_rejects_unknown_query_parameters_on_every_route(client, admin_headers):
    operations = _admin_operations(client)
    assert len(operations) > 20

    for method, path in operations:
        response = client.request(method, f"{path}?tenant=acme", headers=admin_headers)
        error = assert_openai_error(response, 400)
        assert (error["param"], error["type"]) == ("tenant", "invalid_request_error"), f"{method} {path}"
        assert "tenant" in error["message"]


def test_declared_query_parameters_still_work_and_credentials_come_first(client, admin_headers):
    assert client.get("/admin/v1/keys?limit=5", headers=admin_headers).status_code == 200
    error = assert_openai_error(client.get("/admin/v1/keys?limit=5&tenant=acme", headers=admin_headers), 400)
    assert error["param"] == "tenant"
    assert client.get("/admin/v1/analytics?group_by=model", headers=admin_headers).status_code == 200
    # Without credentials the answer is 401, whatever the query: it tells nothing about the route.
    assert_openai_error(client.get("/admin/v1/keys?bogus=1"), 401)


def test_the_public_api_ignores_unknown_query_parameters(client, tenant_key):
    """OpenAI-compatible clients send parameters the API does not define; the data plane ignores them."""
    response = client.get(
        "/v1/models?api-version=2024-01-01", headers={"Authorization": f"Bearer {tenant_key}"}
    )
    assert response.status_code == 200
