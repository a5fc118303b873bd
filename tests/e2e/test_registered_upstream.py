"""Acceptance: an OpenAI-compatible upstream on loopback, registered through the admin API and
used through the official SDK; its credential never shows up anywhere it should not."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator

import boto3
import httpx
import openai
import pytest

from tests.e2e.test_openai_sdk import issue_key
from tests.support.live import LiveServer
from tests.support.openai_upstream import OpenAIUpstream, UpstreamScript

CANARY = f"sk-canary-{secrets.token_hex(16)}"


@pytest.fixture(scope="module")
def upstream() -> Iterator[OpenAIUpstream]:
    with OpenAIUpstream.in_thread(api_key=CANARY, script=UpstreamScript(reply="Hi from upstream")) as server:
        yield server


@pytest.fixture(scope="module")
def admin(live_server: LiveServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {live_server.admin_key}"}
    with httpx.Client(base_url=f"{live_server.base_url}/admin/v1", headers=headers) as client:
        yield client


@pytest.fixture(scope="module")
def responses_seen() -> list[str]:
    """Every response body the tests below received, to search for the canary at the end."""
    return []


@pytest.fixture(scope="module")
def sdk(
    live_server: LiveServer, upstream: OpenAIUpstream, admin: httpx.Client, responses_seen
) -> openai.OpenAI:
    put = admin.put(
        "/providers/loopback",
        json={"type": "openai_compatible", "base_url": upstream.base_url, "api_key": CANARY},
    )
    assert put.status_code == 200, put.text
    responses_seen.append(put.text)
    route = admin.put("/models/team/chat", json={"provider": "loopback", "upstream_model": "gpt-loopback"})
    assert route.status_code == 200, route.text
    responses_seen.append(route.text)
    return openai.OpenAI(
        base_url=f"{live_server.base_url}/v1", api_key=issue_key(live_server, "up"), max_retries=0
    )


def test_routed_model_reaches_the_upstream(
    sdk: openai.OpenAI, upstream: OpenAIUpstream, responses_seen
) -> None:
    completion = sdk.chat.completions.create(
        model="team/chat", messages=[{"role": "user", "content": "hello"}]
    )
    responses_seen.append(completion.model_dump_json())

    assert completion.choices[0].message.content == "Hi from upstream"
    assert completion.model == "team/chat"
    sent = upstream.requests[-1]
    assert sent.json["model"] == "gpt-loopback"
    assert sent.headers["Authorization"] == f"Bearer {CANARY}"


def test_stream_through_the_upstream_always_asks_for_usage(
    sdk: openai.OpenAI, upstream: OpenAIUpstream, responses_seen
) -> None:
    chunks = list(
        sdk.chat.completions.create(
            model="loopback/gpt-direct", messages=[{"role": "user", "content": "stream"}], stream=True
        )
    )
    responses_seen.extend(chunk.model_dump_json() for chunk in chunks)

    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hi from upstream"
    assert all(chunk.usage is None for chunk in chunks)  # the client did not ask for it...
    assert upstream.requests[-1].json["stream_options"] == {"include_usage": True}  # ...Tollgate always does


def test_models_lists_the_route(sdk: openai.OpenAI) -> None:
    assert "team/chat" in [model.id for model in sdk.models.list()]


def test_upstream_failure_is_a_clean_502(
    sdk: openai.OpenAI, upstream: OpenAIUpstream, responses_seen
) -> None:
    upstream.script = UpstreamScript(fail_status=401)
    try:
        with pytest.raises(openai.APIStatusError) as failure:
            sdk.chat.completions.create(model="team/chat", messages=[{"role": "user", "content": "x"}])
    finally:
        upstream.script = UpstreamScript(reply="Hi from upstream")
    responses_seen.append(failure.value.response.text)

    assert failure.value.status_code == 502
    assert failure.value.code == "upstream_auth_failed"


def test_provider_views_are_masked(admin: httpx.Client, responses_seen) -> None:
    one = admin.get("/providers/loopback")
    everything = admin.get("/providers")
    responses_seen.extend([one.text, everything.text])

    assert one.json()["has_api_key"] is True
    assert one.json()["api_key_hint"] == f"sk-...{CANARY[-4:]}"


def test_canary_appears_nowhere_but_secrets_manager(
    live_server: LiveServer, admin: httpx.Client, responses_seen
):
    usage = admin.get("/usage")
    responses_seen.append(usage.text)
    assert usage.json()["data"], "the tests above should have left usage records"

    aws = {
        "endpoint_url": live_server.moto_endpoint,
        "region_name": "us-east-1",
        "aws_access_key_id": "local",
        "aws_secret_access_key": "local",
    }
    dynamodb = boto3.client("dynamodb", **aws)
    tables = {name: dynamodb.scan(TableName=name)["Items"] for name in dynamodb.list_tables()["TableNames"]}
    secretsmanager = boto3.client("secretsmanager", **aws)
    stored = secretsmanager.describe_secret(SecretId="tollgate-local/providers/loopback")
    kms_key = boto3.client("kms", **aws).describe_key(KeyId="alias/tollgate-local")["KeyMetadata"]

    assert tables["tollgate-local-catalog"]
    assert tables["tollgate-local-usage"]
    assert CANARY not in json.dumps(tables)
    assert CANARY not in live_server.log()
    assert not [body for body in responses_seen if CANARY in body]
    # It is in exactly one place: Secrets Manager, under the customer-managed key.
    assert stored["KmsKeyId"] in (kms_key["KeyId"], kms_key["Arn"])
    value = secretsmanager.get_secret_value(SecretId="tollgate-local/providers/loopback")["SecretString"]
    assert json.loads(value) == {"api_key": CANARY}
