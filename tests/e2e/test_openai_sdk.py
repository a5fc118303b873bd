"""Acceptance: the official ``openai`` SDK against a live local Tollgate, as a user would run it."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.support.live import LiveServer, start_server


def issue_key(server: LiveServer, tenant: str) -> str:
    admin = {"Authorization": f"Bearer {server.admin_key}"}
    with httpx.Client(base_url=server.base_url, headers=admin) as http:
        created = http.post("/admin/v1/tenants", json={"id": tenant, "name": tenant.title()})
        assert created.status_code in (201, 409), created.text
        issued = http.post("/admin/v1/keys", json={"tenant_id": tenant, "name": "sdk"})
        assert issued.status_code == 201, issued.text
        key: str = issued.json()["key"]
        return key


@pytest.fixture(scope="module")
def sdk(live_server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{live_server.base_url}/v1", api_key=issue_key(live_server, "sdk"), max_retries=0
    )


def test_completion_from_fake_echo(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(
        model="fake/echo", messages=[{"role": "user", "content": "ping from the SDK"}]
    )

    assert completion.choices[0].message.content == "Echo: ping from the SDK"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens > 0


def test_stream_from_fake_echo_has_usage_last(sdk: openai.OpenAI) -> None:
    chunks = list(
        sdk.chat.completions.create(
            model="fake/echo",
            messages=[{"role": "user", "content": "stream me"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == "Echo: stream me"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert (
        chunks[-1].usage.total_tokens == chunks[-1].usage.prompt_tokens + chunks[-1].usage.completion_tokens
    )
    assert all(chunk.usage is None for chunk in chunks[:-1])


def test_models_are_listed(sdk: openai.OpenAI) -> None:
    assert "fake/echo" in [model.id for model in sdk.models.list()]


def test_sdk_sees_openai_errors(sdk: openai.OpenAI, live_server: LiveServer) -> None:
    with pytest.raises(openai.NotFoundError) as not_found:
        sdk.chat.completions.create(model="nobody/nothing", messages=[{"role": "user", "content": "x"}])
    assert not_found.value.code == "model_not_found"

    stranger = openai.OpenAI(base_url=f"{live_server.base_url}/v1", api_key="tg-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        stranger.models.list()


def test_demo_key_from_the_banner_works(live_server: LiveServer) -> None:
    client = openai.OpenAI(
        base_url=live_server.banner_value("Base URL"),
        api_key=live_server.banner_value("Demo key"),
        max_retries=0,
    )
    assert (
        client.chat.completions.create(model="fake/echo", messages=[{"role": "user", "content": "hi"}])
        .choices[0]
        .message.content
        == "Echo: hi"
    )


def test_two_instances_run_side_by_side_and_stop_on_ctrl_c(tmp_path, live_server: LiveServer) -> None:
    second = start_server(tmp_path, admin_key="tga-second-instance-admin-key")
    try:
        assert second.port != live_server.port
        assert second.moto_endpoint != live_server.moto_endpoint
        key = issue_key(second, "second")
        client = openai.OpenAI(base_url=f"{second.base_url}/v1", api_key=key, max_retries=0)
        assert client.models.list().data
    finally:
        assert second.stop() == 0
    assert "Traceback" not in second.log()
