"""Acceptance: an OpenAI-compatible upstream on loopback, registered through the admin API and
used through the official ``openai`` SDK (chat, streams, embeddings, images) and ``anthropic`` SDK
(messages, streams); its credential never shows up anywhere it should not."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator

import anthropic
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


def test_embeddings_through_the_upstream(
    sdk: openai.OpenAI, upstream: OpenAIUpstream, responses_seen
) -> None:
    # The SDK asks for base64 unless told otherwise; the upstream answers floats, which it takes too.
    result = sdk.embeddings.create(
        model="loopback/text-embedding-loopback", input=["two words", "three more words"], dimensions=4
    )
    responses_seen.append(result.model_dump_json())

    assert [item.index for item in result.data] == [0, 1]
    assert [len(item.embedding) for item in result.data] == [4, 4]
    assert result.data[0].embedding != result.data[1].embedding
    assert result.model == "loopback/text-embedding-loopback"
    assert (result.usage.prompt_tokens, result.usage.total_tokens) == (5, 5)  # the upstream's count
    sent = upstream.requests[-1]
    assert (sent.path, sent.json["model"], sent.json["dimensions"]) == (
        "/v1/embeddings",
        "text-embedding-loopback",
        4,
    )


def test_images_through_the_upstream(sdk: openai.OpenAI, upstream: OpenAIUpstream, responses_seen) -> None:
    images = sdk.images.generate(model="loopback/gpt-image-1", prompt="a red fox", n=2)
    responses_seen.append(images.model_dump_json())

    assert images.data is not None
    assert [image.url for image in images.data] == [
        "https://images.loopback.test/0.png",
        "https://images.loopback.test/1.png",
    ]
    sent = upstream.requests[-1]
    assert (sent.path, sent.json["model"], sent.json["n"]) == ("/v1/images/generations", "gpt-image-1", 2)


@pytest.fixture(scope="module")
def claude(live_server: LiveServer, sdk: openai.OpenAI) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=live_server.base_url, api_key=issue_key(live_server, "up"), max_retries=0
    )


def test_anthropic_sdk_messages_through_the_upstream(
    claude: anthropic.Anthropic, upstream: OpenAIUpstream, responses_seen
) -> None:
    message = claude.messages.create(
        model="team/chat", max_tokens=64, system="Be brief.", messages=[{"role": "user", "content": "hello"}]
    )
    responses_seen.append(message.model_dump_json())

    assert message.content[0].type == "text" and message.content[0].text == "Hi from upstream"
    assert message.stop_reason == "end_turn"
    # The upstream's own counts: (2 + 5) for the system message, (1 + 5) for the user's; 3 words.
    assert (message.usage.input_tokens, message.usage.output_tokens) == (13, 3)
    sent = upstream.requests[-1].json
    assert sent["model"] == "gpt-loopback"
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]


def test_anthropic_sdk_stream_through_the_upstream(
    claude: anthropic.Anthropic, upstream: OpenAIUpstream, responses_seen
) -> None:
    with claude.messages.stream(
        model="team/chat", max_tokens=64, messages=[{"role": "user", "content": "stream me"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    responses_seen.append(final.model_dump_json())

    assert text == "Hi from upstream"
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (7, 3)
    assert upstream.requests[-1].json["stream"] is True


def test_a_client_that_leaves_mid_stream_is_settled_as_a_disconnect(
    live_server: LiveServer, upstream: OpenAIUpstream, admin: httpx.Client, sdk: openai.OpenAI
) -> None:
    """Over a real socket: the client reads one event and hangs up. The server notices, stops
    streaming to nobody, reads the provider's stream on for its usage, and settles once, as 499."""
    upstream.script = UpstreamScript(reply="one two three four five six seven eight", chunk_delay=0.15)
    key = issue_key(live_server, "leaver")
    body = {"model": "team/chat", "stream": True, "messages": [{"role": "user", "content": "count"}]}
    try:
        with (
            httpx.Client(base_url=live_server.base_url, timeout=10) as http,
            http.stream(
                "POST", "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
            ) as response,
        ):
            assert response.status_code == 200
            first = next(line for line in response.iter_lines() if line.startswith("data: "))
            assert json.loads(first[6:])["object"] == "chat.completion.chunk"
        # Leaving the block closes the connection with the stream half sent.

        deadline = time.monotonic() + 10
        records: list[dict[str, object]] = []
        while time.monotonic() < deadline and not records:
            time.sleep(0.2)
            records = admin.get("/usage", params={"tenant_id": "leaver"}).json()["data"]
    finally:
        upstream.script = UpstreamScript(reply="Hi from upstream")

    (record,) = records
    assert record["status"] == 499 and record["error_code"] == "client_disconnected"
    assert record["usage_source"] == "provider"  # the provider's own count, read after the client left
    assert record["completion_tokens"] == 8


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
