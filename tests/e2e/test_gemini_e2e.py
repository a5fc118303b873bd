"""Acceptance: a Gemini API on loopback, registered through the admin API as a ``gemini`` provider
and used through the official ``openai`` SDK for chat, streams, tools, embeddings and images, and
the ``anthropic`` SDK for messages and streams; its credential never shows up anywhere it should
not."""

from __future__ import annotations

import base64
import json
import secrets
import struct
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.e2e.test_openai_sdk import issue_key
from tests.support.gemini_upstream import GeminiScript, GeminiUpstream
from tests.support.live import LiveServer

CANARY = f"AIza-canary-{secrets.token_hex(16)}"
REPLY = "Hi from Gemini"
SCRIPT = GeminiScript(reply=REPLY)


@pytest.fixture(scope="module")
def upstream() -> Iterator[GeminiUpstream]:
    with GeminiUpstream.in_thread(api_key=CANARY, script=SCRIPT) as server:
        yield server


@pytest.fixture
def script(upstream: GeminiUpstream) -> Iterator[GeminiUpstream]:
    """The upstream, its script restored after the test."""
    try:
        yield upstream
    finally:
        upstream.script = SCRIPT


@pytest.fixture(scope="module")
def responses_seen() -> list[str]:
    """Every response body the tests below received, to search for the canary at the end."""
    return []


@pytest.fixture(scope="module")
def sdk(live_server: LiveServer, upstream: GeminiUpstream, responses_seen: list[str]) -> openai.OpenAI:
    headers = {"Authorization": f"Bearer {live_server.admin_key}"}
    with httpx.Client(base_url=f"{live_server.base_url}/admin/v1", headers=headers) as admin:
        for name, key in (("gem", CANARY), ("gem-badkey", "AIza-not-the-right-key")):
            put = admin.put(
                f"/providers/{name}", json={"type": "gemini", "base_url": upstream.base_url, "api_key": key}
            )
            assert put.status_code == 200, put.text
            responses_seen.append(put.text)
    return openai.OpenAI(
        base_url=f"{live_server.base_url}/v1", api_key=issue_key(live_server, "gemini"), max_retries=0
    )


def test_chat(sdk: openai.OpenAI, upstream: GeminiUpstream, responses_seen: list[str]) -> None:
    completion = sdk.chat.completions.create(
        model="gem/gemini-x",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}],
    )
    responses_seen.append(completion.model_dump_json())

    assert completion.model == "gem/gemini-x"
    assert completion.choices[0].message.content == REPLY
    assert completion.choices[0].finish_reason == "stop"
    # The loopback API's own counts: (3 + 2) + (3 + 2) prompt tokens, 3 reply words.
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (10, 3)
    sent = upstream.requests[-1]
    assert sent.path == "/v1beta/models/gemini-x:generateContent"
    assert sent.headers["x-goog-api-key"] == CANARY
    assert sent.json["systemInstruction"] == {"parts": [{"text": "Be brief."}]}


def test_stream_with_usage_last(
    sdk: openai.OpenAI, upstream: GeminiUpstream, responses_seen: list[str]
) -> None:
    chunks = list(
        sdk.chat.completions.create(
            model="gem/gemini-x",
            messages=[{"role": "user", "content": "stream please"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    responses_seen.extend(chunk.model_dump_json() for chunk in chunks)

    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "stop"
    ]
    final = chunks[-1]
    assert final.choices == [] and final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens, final.usage.total_tokens) == (5, 3, 8)
    assert all(chunk.usage is None for chunk in chunks[:-1])
    assert upstream.requests[-1].query == {"alt": "sse"}


def test_tools_round_trip(sdk: openai.OpenAI, script: GeminiUpstream, responses_seen: list[str]) -> None:
    script.script = GeminiScript(
        reply="It is sunny in Paris.",
        function_calls=(("get_weather", {"city": "Paris"}),),
        thought_signature="c2lnbmF0dXJl",
    )
    tools: list[Any] = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                    "additionalProperties": False,
                },
                "strict": True,
            },
        }
    ]
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]

    first = sdk.chat.completions.create(model="gem/gemini-x", messages=messages, tools=tools)
    message = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls"
    assert message.tool_calls is not None
    [call] = message.tool_calls
    assert call.type == "function"
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Paris"})

    messages += [
        message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    second = sdk.chat.completions.create(model="gem/gemini-x", messages=messages, tools=tools)
    responses_seen.extend([first.model_dump_json(), second.model_dump_json()])

    assert second.choices[0].message.content == "It is sunny in Paris."
    contents = script.requests[-1].json["contents"]
    assert contents[1]["parts"] == [
        {
            "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
            "thoughtSignature": "c2lnbmF0dXJl",
        }
    ]
    assert contents[2]["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"output": "sunny"}}}
    ]


def test_embeddings_as_base64_and_floats(
    sdk: openai.OpenAI, upstream: GeminiUpstream, responses_seen: list[str]
) -> None:
    # The SDK asks for base64 unless told otherwise, and decodes it itself.
    packed = sdk.embeddings.create(
        model="gem/gemini-embedding-001", input=["alpha", "beta gamma"], dimensions=4
    )
    floats = sdk.embeddings.create(
        model="gem/gemini-embedding-001", input=["alpha", "beta gamma"], dimensions=4, encoding_format="float"
    )
    responses_seen.extend([packed.model_dump_json(), floats.model_dump_json()])

    assert [len(item.embedding) for item in packed.data] == [4, 4]
    for a, b in zip(packed.data, floats.data, strict=True):
        assert a.embedding == pytest.approx(b.embedding, rel=1e-6)
    assert packed.data[0].embedding != packed.data[1].embedding
    assert packed.model == "gem/gemini-embedding-001"
    assert packed.usage.prompt_tokens == packed.usage.total_tokens > 0
    sent = upstream.requests[-1]
    assert sent.path == "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    assert [item["outputDimensionality"] for item in sent.json["requests"]] == [4, 4]


def test_images(sdk: openai.OpenAI, responses_seen: list[str]) -> None:
    images = sdk.images.generate(model="gem/imagen-x", prompt="a red fox", n=2, size="1792x1024")

    assert images.data is not None and len(images.data) == 2
    for image in images.data:
        assert image.b64_json is not None
        raw = base64.b64decode(image.b64_json)
        assert raw.startswith(b"\x89PNG\r\n\x1a\n")
        assert struct.unpack(">II", raw[16:24]) == (16, 9)  # 1792x1024 asked for 16:9
    with pytest.raises(openai.BadRequestError) as url_refused:
        sdk.images.generate(model="gem/imagen-x", prompt="a red fox", response_format="url")
    responses_seen.append(url_refused.value.response.text)
    assert "b64_json" in url_refused.value.message


def test_upstream_errors_reach_the_sdk_cleanly(
    sdk: openai.OpenAI, script: GeminiUpstream, responses_seen: list[str]
) -> None:
    def refused(model: str, error: type[openai.APIStatusError]) -> openai.APIStatusError:
        with pytest.raises(error) as failure:
            sdk.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
        responses_seen.append(failure.value.response.text)
        return failure.value

    unknown = refused("gem/gemini-nope", openai.NotFoundError)
    bad_key = refused("gem-badkey/gemini-x", openai.APIStatusError)
    script.script = GeminiScript(block_reason="SAFETY")
    blocked = refused("gem/gemini-x", openai.BadRequestError)
    script.script = GeminiScript(fail_status=429)
    limited = refused("gem/gemini-x", openai.RateLimitError)

    assert "models/gemini-nope is not found" in unknown.message
    assert (bad_key.status_code, bad_key.code) == (502, "upstream_auth_failed")
    assert blocked.code == "content_filter"
    assert limited.response.headers["Retry-After"] == "21"


def test_anthropic_sdk_messages_and_stream(
    live_server: LiveServer, sdk: openai.OpenAI, upstream: GeminiUpstream, responses_seen: list[str]
) -> None:
    claude = anthropic.Anthropic(
        base_url=live_server.base_url, api_key=issue_key(live_server, "gemini"), max_retries=0
    )

    message = claude.messages.create(
        model="gem/gemini-x",
        max_tokens=64,
        system="Be brief.",
        messages=[{"role": "user", "content": "hello there"}],
    )
    with claude.messages.stream(
        model="gem/gemini-x", max_tokens=64, messages=[{"role": "user", "content": "stream please"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    responses_seen.extend([message.model_dump_json(), final.model_dump_json()])

    assert message.content[0].type == "text" and message.content[0].text == REPLY
    assert message.stop_reason == "end_turn"
    # The loopback API's own counts: (3 + 2) + (3 + 2) prompt tokens, 3 reply words.
    assert (message.usage.input_tokens, message.usage.output_tokens) == (10, 3)
    assert text == REPLY
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (5, 3)
    assert upstream.requests[-1].query == {"alt": "sse"}
    assert upstream.requests[-2].json["systemInstruction"] == {"parts": [{"text": "Be brief."}]}


def test_canary_appears_in_no_response_and_no_log(live_server: LiveServer, responses_seen: list[str]) -> None:
    assert responses_seen, "the tests above should have left responses"
    assert not [body for body in responses_seen if CANARY in body]
    assert CANARY not in live_server.log()
