"""The loopback fake vendor speaks OpenAI's wire protocol: the official SDK, as a client, agrees."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.support.openai_upstream import OpenAIUpstream, UpstreamScript

KEY = "sk-fake-vendor-key"
MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Say hello please"},
]


@pytest.fixture(scope="module")
def upstream() -> Iterator[OpenAIUpstream]:
    with OpenAIUpstream.in_thread(api_key=KEY) as server:
        yield server


@pytest.fixture
def sdk(upstream: OpenAIUpstream) -> Iterator[openai.OpenAI]:
    upstream.script = UpstreamScript()
    with openai.OpenAI(base_url=upstream.base_url, api_key=KEY, max_retries=0) as client:
        yield client


def test_a_completion_parses_with_deterministic_usage(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(model="gpt-loopback", messages=MESSAGES)

    assert completion.object == "chat.completion"
    assert completion.model == "gpt-loopback"
    assert completion.choices[0].message.content == "Hello from the loopback upstream."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    # 2 + 3 words, plus 5 per message; 5 words of reply.
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (15, 5)


def test_a_stream_with_usage_ends_with_a_usage_chunk(sdk: openai.OpenAI, upstream: OpenAIUpstream) -> None:
    chunks = list(
        sdk.chat.completions.create(
            model="gpt-loopback",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == upstream.script.reply
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 20
    assert all(chunk.usage is None for chunk in chunks[:-1])


def test_a_stream_without_usage_has_no_usage_chunk(sdk: openai.OpenAI) -> None:
    chunks = list(sdk.chat.completions.create(model="gpt-loopback", messages=MESSAGES, stream=True))

    assert all(chunk.choices for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_quirky_streams_still_parse(sdk: openai.OpenAI, upstream: OpenAIUpstream) -> None:
    upstream.script = UpstreamScript(keepalive=True, no_space=True, crlf=True)

    chunks = list(sdk.chat.completions.create(model="gpt-loopback", messages=MESSAGES, stream=True))

    assert "".join(c.choices[0].delta.content or "" for c in chunks) == upstream.script.reply


def test_a_wrong_key_is_refused_like_openai_does(upstream: OpenAIUpstream) -> None:
    with (
        openai.OpenAI(base_url=upstream.base_url, api_key="sk-wrong-0000", max_retries=0) as client,
        pytest.raises(openai.AuthenticationError) as refused,
    ):
        client.chat.completions.create(model="gpt-loopback", messages=MESSAGES)

    assert refused.value.code == "invalid_api_key"


@pytest.mark.parametrize(
    ("body", "param"),
    [({"messages": MESSAGES}, None), ({"model": "gpt-loopback", "messages": []}, "messages")],
)
def test_a_request_without_model_or_messages_is_a_400(
    sdk: openai.OpenAI, body: dict[str, object], param: str | None
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.post("/chat/completions", body=body, cast_to=object)

    assert refused.value.status_code == 400
    assert refused.value.param == param


def test_scripted_failures_carry_openais_error_object(sdk: openai.OpenAI, upstream: OpenAIUpstream) -> None:
    upstream.script = UpstreamScript(fail_status=429, fail_headers={"Retry-After": "3"})

    with pytest.raises(openai.RateLimitError) as limited:
        sdk.chat.completions.create(model="gpt-loopback", messages=MESSAGES)

    assert limited.value.response.headers["Retry-After"] == "3"
    assert limited.value.code == "rate_limit_exceeded"


def test_every_request_is_recorded(sdk: openai.OpenAI, upstream: OpenAIUpstream) -> None:
    before = len(upstream.requests)

    sdk.chat.completions.create(model="gpt-loopback", messages=MESSAGES, temperature=0.2)

    sent = upstream.requests[before]
    assert (sent.method, sent.path) == ("POST", "/v1/chat/completions")
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.json == {"model": "gpt-loopback", "messages": MESSAGES, "temperature": 0.2}


def test_embeddings_are_deterministic(sdk: openai.OpenAI) -> None:
    first = sdk.embeddings.create(model="text-embedding-loopback", input=["hello world", "bye"], dimensions=6)
    again = sdk.embeddings.create(model="text-embedding-loopback", input=["hello world", "bye"], dimensions=6)

    assert [len(item.embedding) for item in first.data] == [6, 6]
    assert first.data[0].embedding == again.data[0].embedding != first.data[1].embedding
    assert first.usage.prompt_tokens == 3


def test_images_are_generated(sdk: openai.OpenAI) -> None:
    images = sdk.images.generate(model="gpt-image-1", prompt="a red fox", n=2)

    assert images.data is not None
    assert len(images.data) == 2
    assert images.usage is not None
    assert images.usage.input_tokens == 3
