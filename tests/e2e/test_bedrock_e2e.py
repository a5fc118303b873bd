"""Acceptance: a Bedrock provider registered through the admin API of a live local Tollgate, its
endpoint a fake Bedrock Runtime on loopback, used through the official ``openai`` SDK (chat,
streams, embeddings, images) and ``anthropic`` SDK (messages, streams).

The live server runs moto with ``AWS_ENDPOINT_URL`` set for every AWS client; the provider's own
``base_url`` has to win over it for ``bedrock-runtime``. Its dummy credentials sign the requests.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.e2e.test_openai_sdk import issue_key
from tests.support.bedrock_upstream import BedrockScript, BedrockUpstream
from tests.support.live import LiveServer

PROVIDER = "brock"
CHAT = f"{PROVIDER}/anthropic.claude-x"
TITAN = f"{PROVIDER}/amazon.titan-embed-text-v2:0"
CANVAS = f"{PROVIDER}/amazon.nova-canvas-v1:0"
REPLY = "Hello from Bedrock on loopback."


@pytest.fixture(scope="module")
def bedrock() -> Iterator[BedrockUpstream]:
    with BedrockUpstream.in_thread(script=BedrockScript(reply=REPLY)) as server:
        yield server


@pytest.fixture(scope="module")
def sdk(live_server: LiveServer, bedrock: BedrockUpstream) -> openai.OpenAI:
    headers = {"Authorization": f"Bearer {live_server.admin_key}"}
    with httpx.Client(base_url=f"{live_server.base_url}/admin/v1", headers=headers) as admin:
        put = admin.put(
            f"/providers/{PROVIDER}",
            json={"type": "bedrock", "region": "us-east-1", "base_url": bedrock.endpoint_url},
        )
        assert put.status_code == 200, put.text
        assert put.json()["has_api_key"] is False  # Bedrock signs with AWS credentials, never a key
    return openai.OpenAI(
        base_url=f"{live_server.base_url}/v1", api_key=issue_key(live_server, "bedrock"), max_retries=0
    )


@pytest.fixture(autouse=True)
def plain_script(bedrock: BedrockUpstream) -> None:
    bedrock.script = BedrockScript(reply=REPLY)


def test_chat_reaches_bedrock_signed_and_not_moto(sdk: openai.OpenAI, bedrock: BedrockUpstream) -> None:
    completion = sdk.chat.completions.create(
        model=CHAT,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}],
        max_tokens=64,
    )

    assert completion.choices[0].message.content == REPLY
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == CHAT
    assert completion.usage is not None
    # The fake Bedrock's own count: 2 system + 2 user words + 5 for the message; 5 words of reply.
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (9, 5)
    sent = bedrock.requests[-1]
    assert (sent.operation, sent.model_id, sent.region) == ("converse", "anthropic.claude-x", "us-east-1")
    assert sent.headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=")
    assert sent.json["system"] == [{"text": "Be brief."}]
    assert sent.json["inferenceConfig"] == {"maxTokens": 64}


def test_stream_with_usage_last(sdk: openai.OpenAI, bedrock: BedrockUpstream) -> None:
    bedrock.script = BedrockScript(reply=REPLY, cache_read_tokens=12)

    chunks = list(
        sdk.chat.completions.create(
            model=CHAT,
            messages=[{"role": "user", "content": "Stream please"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    assert chunks[-2].choices[0].finish_reason == "stop"
    final = chunks[-1]
    assert final.choices == [] and final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (7 + 12, 5)
    assert final.usage.prompt_tokens_details is not None
    assert final.usage.prompt_tokens_details.cached_tokens == 12
    assert all(chunk.usage is None for chunk in chunks[:-1])
    assert bedrock.requests[-1].operation == "converse-stream"


def test_a_mid_stream_failure_is_an_error_event_after_the_first_bytes(
    sdk: openai.OpenAI, bedrock: BedrockUpstream
) -> None:
    bedrock.script = BedrockScript(reply=REPLY, exception_after=3)

    stream = sdk.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "x"}], stream=True)
    received: list[Any] = []

    def read_all() -> None:
        received.extend(stream)

    with pytest.raises(openai.APIError, match="modelStreamErrorException"):
        read_all()

    assert "".join(c.choices[0].delta.content or "" for c in received if c.choices) == "Hello from"


def test_throttling_is_a_429_the_sdk_understands(sdk: openai.OpenAI, bedrock: BedrockUpstream) -> None:
    bedrock.script = BedrockScript(fail="ThrottlingException")

    with pytest.raises(openai.RateLimitError) as limited:
        sdk.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "x"}])

    assert limited.value.code == "upstream_rate_limited"


def test_embeddings_from_titan(sdk: openai.OpenAI, bedrock: BedrockUpstream) -> None:
    texts = ["two words", "three more words"]

    # The SDK asks for base64 and decodes it into floats, as OpenAI's API sends them.
    result = sdk.embeddings.create(model=TITAN, input=texts, dimensions=256)

    assert [item.index for item in result.data] == [0, 1]
    for item, text in zip(result.data, texts, strict=True):
        expected = BedrockUpstream.vector(text, 256)
        float32 = struct.unpack("<256f", struct.pack("<256f", *expected))
        assert item.embedding == list(float32)
    assert result.model == TITAN
    assert (result.usage.prompt_tokens, result.usage.total_tokens) == (5, 5)
    assert {(r.operation, r.model_id) for r in bedrock.requests[-2:]} == {
        ("invoke", "amazon.titan-embed-text-v2:0")
    }


def test_images_from_nova_canvas(sdk: openai.OpenAI, bedrock: BedrockUpstream) -> None:
    images = sdk.images.generate(model=CANVAS, prompt="a red fox in snow", n=2, size="512x512")

    assert images.data is not None and len(images.data) == 2
    for image in images.data:
        assert image.b64_json is not None
        assert base64.b64decode(image.b64_json).startswith(b"\x89PNG\r\n\x1a\n")
    sent = bedrock.requests[-1]
    assert sent.json["imageGenerationConfig"] == {"numberOfImages": 2, "width": 512, "height": 512}
    assert sent.json["textToImageParams"] == {"text": "a red fox in snow"}


def test_what_bedrock_cannot_do_is_a_clean_400(sdk: openai.OpenAI, bedrock: BedrockUpstream) -> None:
    before = len(bedrock.requests)

    with pytest.raises(openai.BadRequestError) as refused:
        sdk.chat.completions.create(
            model=CHAT,
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}],
                }
            ],
        )

    assert refused.value.code == "unsupported_image_url"
    assert len(bedrock.requests) == before  # refused before any call to Bedrock


def test_anthropic_sdk_messages_and_stream(
    live_server: LiveServer, sdk: openai.OpenAI, bedrock: BedrockUpstream
) -> None:
    claude = anthropic.Anthropic(
        base_url=live_server.base_url, api_key=issue_key(live_server, "bedrock"), max_retries=0
    )

    message = claude.messages.create(
        model=CHAT, max_tokens=64, system="Be brief.", messages=[{"role": "user", "content": "Say hello"}]
    )
    sent = bedrock.requests[-1]
    with claude.messages.stream(
        model=CHAT, max_tokens=64, messages=[{"role": "user", "content": "Stream please"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()

    assert message.content[0].type == "text" and message.content[0].text == REPLY
    assert message.stop_reason == "end_turn"
    # The fake Bedrock's own counts: 2 system + 2 user words + 5 for the message; 5 words of reply.
    assert (message.usage.input_tokens, message.usage.output_tokens) == (9, 5)
    assert (sent.operation, sent.json["system"]) == ("converse", [{"text": "Be brief."}])
    assert text == REPLY
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (7, 5)
    assert bedrock.requests[-1].operation == "converse-stream"
