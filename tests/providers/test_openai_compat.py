"""The OpenAI-compatible adapter: its pure translation, then the adapter against a real HTTP server
on loopback that speaks OpenAI's wire protocol (tests/support/openai_upstream.py)."""

from __future__ import annotations

import asyncio
import functools
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, ParamSpec

import pytest

from tests.support.openai_upstream import OpenAIUpstream, UpstreamScript
from tollgate.errors import (
    RateLimitError,
    TollgateError,
    UpstreamError,
    UpstreamRejectedError,
)
from tollgate.providers.base import Capability, Provider, Usage
from tollgate.providers.http import HttpClient
from tollgate.providers.openai_compat import (
    MESSAGE_LIMIT,
    RETRY_AFTER_CAP,
    USAGE_SOURCE_MARKER,
    OpenAICompatibleProvider,
    build_chat_body,
    build_upstream_body,
    parse_completion,
    parse_embeddings,
    parse_images,
    parse_retry_after,
    translate_upstream_error,
)
from tollgate.providers.presets import PRESETS, Family, Preset
from tollgate.schemas.openai import ChatChunk, ChatRequest, EmbeddingRequest, ImageRequest

P = ParamSpec("P")
UPSTREAM_KEY = "sk-upstream-secret-0123456789"
REPLY = "Hello from the loopback upstream."
OPENAI = PRESETS["openai"]


def async_test(test: Callable[P, Awaitable[None]]) -> Callable[P, None]:
    """Runs an async test in its own event loop (pytest-asyncio is not installed)."""

    @functools.wraps(test)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), timeout=10))

    return run


def chat_request(**fields: Any) -> ChatRequest:
    body = {"model": "team/chat", "messages": [{"role": "user", "content": "Say hello"}], **fields}
    return ChatRequest.model_validate(body)


# The loopback upstream's counts for chat_request(): "Say hello" is 2 words + 5 per message;
# the reply is 5 words. Tollgate's estimator says otherwise (6 and 9), so the source is visible.
PROVIDER_USAGE = {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}
ESTIMATED_USAGE = {"prompt_tokens": 6, "completion_tokens": 9, "total_tokens": 15}


@dataclass
class Rig:
    upstream: OpenAIUpstream
    provider: OpenAICompatibleProvider
    http: HttpClient

    async def collect(self, request: ChatRequest | None = None) -> list[ChatChunk]:
        return [chunk async for chunk in self.provider.stream(request or chat_request(stream=True), "gpt-up")]

    async def collect_into(self, received: list[ChatChunk]) -> None:
        """Like ``collect``, keeping what arrived before a failure."""
        async for chunk in self.provider.stream(chat_request(stream=True), "gpt-up"):
            received.append(chunk)


@asynccontextmanager
async def rig(
    script: UpstreamScript | None = None,
    *,
    provider_key: str | None = UPSTREAM_KEY,
    upstream_key: str | None = UPSTREAM_KEY,
    preset: Preset = OPENAI,
    read_timeout: float = 5.0,
    extra_headers: dict[str, str] | None = None,
) -> AsyncIterator[Rig]:
    async with OpenAIUpstream(api_key=upstream_key, script=script) as upstream:
        http = HttpClient(allow_loopback=True, connect_timeout=2.0, read_timeout=read_timeout)
        provider = OpenAICompatibleProvider(
            "acme", preset, upstream.base_url, provider_key, http, extra_headers
        )
        try:
            yield Rig(upstream, provider, http)
        finally:
            await http.close()


def usage_counts(usage: dict[str, Any]) -> dict[str, Any]:
    return {key: usage[key] for key in ("prompt_tokens", "completion_tokens", "total_tokens")}


def content_of(chunks: list[ChatChunk]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


# == Pure translation =========================================================================


class TestBuildChatBody:
    def test_the_upstream_model_replaces_the_public_one(self) -> None:
        body = build_chat_body(chat_request(), "gpt-4o-mini", OPENAI)

        assert body["model"] == "gpt-4o-mini"
        assert body["messages"] == [{"role": "user", "content": "Say hello"}]

    @pytest.mark.parametrize("client_options", [None, {"include_usage": False}, {"include_usage": True}])
    def test_a_stream_always_asks_for_usage(self, client_options: dict[str, Any] | None) -> None:
        request = chat_request(stream=True, stream_options=client_options)

        body = build_chat_body(request, "gpt-up", OPENAI)

        assert body["stream"] is True
        assert body["stream_options"]["include_usage"] is True

    def test_other_stream_options_are_kept(self) -> None:
        request = chat_request(stream=True, stream_options={"include_usage": False, "continuous_usage": True})

        assert build_chat_body(request, "m", OPENAI)["stream_options"] == {
            "include_usage": True,
            "continuous_usage": True,
        }

    def test_a_non_streamed_request_sends_no_stream_options(self) -> None:
        body = build_chat_body(
            chat_request(stream=True, stream_options={"include_usage": True}), "m", OPENAI, stream=False
        )

        assert body["stream"] is False
        assert "stream_options" not in body

    def test_vendor_extras_pass_through(self) -> None:
        tools = [
            {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "default": None}}}
        ]
        request = chat_request(
            reasoning_effort="low",
            response_format={"type": "json_object"},
            tools=tools,
            seed=7,
            messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:x"}}]}],
        )

        body = build_chat_body(request, "m", PRESETS["deepseek"])

        assert body["reasoning_effort"] == "low"
        assert body["seed"] == 7
        assert body["response_format"] == {"type": "json_object"}
        assert body["tools"] == tools  # a null inside a JSON schema is kept
        assert body["messages"][0]["content"] == [{"type": "image_url", "image_url": {"url": "data:x"}}]
        assert "temperature" not in body  # unset fields are not invented

    def test_an_upstream_that_rejects_stream_options_gets_none(self) -> None:
        legacy = Preset("legacy", Family.OPENAI_COMPATIBLE, "Legacy", None, None, stream_usage_option=False)

        body = build_chat_body(chat_request(stream=True, stream_options={"include_usage": True}), "m", legacy)

        assert "stream_options" not in body


class TestParseCompletion:
    def completion(self, **fields: Any) -> dict[str, Any]:
        return {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": REPLY}, "finish_reason": "stop"}
            ],
            **fields,
        }

    def test_provider_usage_and_the_public_model_name(self) -> None:
        usage = {**PROVIDER_USAGE, "prompt_tokens_details": {"cached_tokens": 2}}

        result = parse_completion(self.completion(usage=usage), "team/chat", chat_request())

        assert result.usage == Usage(prompt_tokens=7, completion_tokens=5, cached_tokens=2, source="provider")
        assert result.completion["model"] == "team/chat"

    def test_missing_usage_is_estimated_and_labelled(self) -> None:
        result = parse_completion(self.completion(), "team/chat", chat_request())

        assert result.usage == Usage(prompt_tokens=6, completion_tokens=9, source="estimated")
        assert usage_counts(result.completion["usage"]) == ESTIMATED_USAGE

    def test_an_error_body_with_status_200_is_an_upstream_error(self) -> None:
        with pytest.raises(UpstreamError, match="overloaded"):
            parse_completion({"error": {"message": "overloaded"}}, "team/chat", chat_request())

    @pytest.mark.parametrize("body", [[], "text", {"id": "x"}, {"choices": "nope"}])
    def test_anything_else_is_an_upstream_error(self, body: Any) -> None:
        with pytest.raises(UpstreamError):
            parse_completion(body, "team/chat", chat_request())


def error_body(message: Any = "Bad thing.", code: Any = None) -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
    ).encode()


class TestTranslateUpstreamError:
    @pytest.mark.parametrize(
        ("upstream_status", "kind", "status", "code"),
        [
            (400, UpstreamRejectedError, 400, "upstream_rejected"),
            (404, UpstreamRejectedError, 404, "upstream_rejected"),
            (409, UpstreamRejectedError, 409, "upstream_rejected"),
            (413, UpstreamRejectedError, 413, "upstream_rejected"),
            (422, UpstreamRejectedError, 422, "upstream_rejected"),
            (401, UpstreamError, 502, "upstream_auth_failed"),
            (403, UpstreamError, 502, "upstream_auth_failed"),
            (429, RateLimitError, 429, "upstream_rate_limited"),
            (408, UpstreamError, 502, "upstream_error"),
            (500, UpstreamError, 502, "upstream_error"),
            (502, UpstreamError, 502, "upstream_error"),
            (503, UpstreamError, 502, "upstream_error"),
            (529, UpstreamError, 502, "upstream_error"),
            (418, UpstreamError, 502, "upstream_error"),
            (302, UpstreamError, 502, "upstream_redirect"),
            (307, UpstreamError, 502, "upstream_redirect"),
        ],
    )
    def test_status_table(
        self, upstream_status: int, kind: type[TollgateError], status: int, code: str
    ) -> None:
        error = translate_upstream_error(upstream_status, error_body(), {}, provider="acme")

        assert type(error) is kind
        assert (error.status, error.code) == (status, code)

    def test_a_refusal_passes_the_providers_message_and_code_on(self) -> None:
        body = error_body("This model's maximum context length is 128000 tokens.", "context_length_exceeded")

        error = translate_upstream_error(400, body, {}, provider="acme")

        assert error.message == "This model's maximum context length is 128000 tokens."
        assert error.code == "context_length_exceeded"

    def test_a_long_message_is_truncated(self) -> None:
        error = translate_upstream_error(400, error_body("x" * 5000), {}, provider="acme")

        assert len(error.message) == MESSAGE_LIMIT

    @pytest.mark.parametrize(
        "body", [error_body({"nested": "object"}), error_body(None), b"<html>502</html>", b"", b"[1]"]
    )
    def test_only_a_string_message_is_used(self, body: bytes) -> None:
        error = translate_upstream_error(400, body, {}, provider="acme")

        assert error.message == "The provider 'acme' rejected the request (HTTP 400)."

    def test_ollama_style_string_errors_are_read(self) -> None:
        error = translate_upstream_error(
            404, b'{"error":"model \\"llama9\\" not found"}', {}, provider="ollama"
        )

        assert error.message == 'model "llama9" not found'

    def test_credentials_failures_never_blame_the_caller_or_echo_the_key(self) -> None:
        body = error_body(f"Incorrect API key provided: {UPSTREAM_KEY}", "invalid_api_key")

        error = translate_upstream_error(401, body, {}, provider="acme")

        assert error.message == "The provider rejected Tollgate's credentials for 'acme'."
        assert error.status == 502
        assert UPSTREAM_KEY not in json.dumps(error.body())

    def test_secrets_are_redacted_from_passed_on_messages(self) -> None:
        body = error_body(f"Key {UPSTREAM_KEY} may not use this model")

        error = translate_upstream_error(400, body, {}, provider="acme", secrets=(UPSTREAM_KEY,))

        assert UPSTREAM_KEY not in error.message
        assert error.message == "Key [redacted] may not use this model"

    def test_rate_limits_pass_retry_after_on(self) -> None:
        error = translate_upstream_error(429, error_body(), {"Retry-After": "17"}, provider="acme")

        assert isinstance(error, RateLimitError)
        assert error.retry_after == 17
        assert error.headers == {"Retry-After": "17"}

    def test_retry_after_in_milliseconds_is_rounded_up(self) -> None:
        error = translate_upstream_error(429, error_body(), {"retry-after-ms": "1200"}, provider="acme")

        assert isinstance(error, RateLimitError)
        assert error.retry_after == 2

    def test_an_exhausted_provider_account_is_not_the_callers_rate_limit(self) -> None:
        error = translate_upstream_error(429, error_body("quota", "insufficient_quota"), {}, provider="acme")

        assert (type(error), error.status, error.code) == (UpstreamError, 502, "upstream_quota_exceeded")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("3", 3),
        ("0", 0),
        ("2.1", 3),
        (" 10 ", 10),
        ("-5", 0),
        ("99999", RETRY_AFTER_CAP),
        (format_datetime(datetime.fromtimestamp(1_000_030, UTC), usegmt=True), 30),
        (format_datetime(datetime.fromtimestamp(999_000, UTC), usegmt=True), 0),
        (None, None),
        ("", None),
        ("soon", None),
        ("nan", None),
    ],
)
def test_parse_retry_after(value: str | None, seconds: int | None) -> None:
    assert parse_retry_after(value, now=1_000_000.0) == seconds


CHAT_CAPABILITIES = {
    Capability.CHAT,
    Capability.STREAM,
    Capability.TOOLS,
    Capability.VISION,
    Capability.JSON_MODE,
}


@pytest.mark.parametrize(
    ("preset", "extra"),
    [
        ("openai", {Capability.EMBEDDINGS, Capability.IMAGES}),
        ("deepseek", set()),
        ("xai", {Capability.IMAGES}),
        ("openrouter", set()),
        ("doubao", {Capability.EMBEDDINGS, Capability.IMAGES}),
        ("poe", set()),
        ("ollama", {Capability.EMBEDDINGS}),
        ("openai_compatible", {Capability.EMBEDDINGS, Capability.IMAGES}),
    ],
)
def test_every_preset_gets_the_adapter_with_its_capabilities(preset: str, extra: set[Capability]) -> None:
    provider = OpenAICompatibleProvider(
        "acme", PRESETS[preset], "https://api.example.com/v1", UPSTREAM_KEY, HttpClient()
    )

    assert isinstance(provider, Provider)
    assert provider.capabilities == CHAT_CAPABILITIES | extra
    assert UPSTREAM_KEY not in repr(provider)


class TestEmbeddingsAndImages:
    def test_the_body_passes_through_with_the_upstream_model(self) -> None:
        request = EmbeddingRequest(model="team/embed", input=["a", "b"], dimensions=256, extra_field="kept")

        assert build_upstream_body(request, "text-embedding-3-small") == {
            "model": "text-embedding-3-small",
            "input": ["a", "b"],
            "dimensions": 256,
            "extra_field": "kept",
        }

    def test_embeddings_usage_and_public_model(self) -> None:
        body = {"object": "list", "data": [], "model": "x", "usage": {"prompt_tokens": 4, "total_tokens": 4}}

        result = parse_embeddings(body, "team/embed", EmbeddingRequest(model="team/embed", input="a b"))

        assert result.usage == Usage(prompt_tokens=4, completion_tokens=0)
        assert result.body["model"] == "team/embed"

    @pytest.mark.parametrize(
        ("value", "tokens"),
        [("one two three", 4), ([1, 2, 3, 4], 4), ([[1, 2], [3]], 3)],  # text: ~4 characters a token
    )
    def test_missing_embeddings_usage_is_estimated(self, value: Any, tokens: int) -> None:
        result = parse_embeddings({"data": []}, "m", EmbeddingRequest(model="m", input=value))

        assert result.usage == Usage(prompt_tokens=tokens, completion_tokens=0, source="estimated")
        assert result.body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}

    def test_image_token_usage_is_read_when_reported(self) -> None:
        body = {
            "created": 1,
            "data": [{"url": "u"}, {"url": "v"}],
            "usage": {"input_tokens": 5, "output_tokens": 9},
        }

        result = parse_images(body)

        assert (result.images, result.usage) == (2, Usage(prompt_tokens=5, completion_tokens=9))
        assert parse_images({"created": 1, "data": [{"url": "u"}]}).usage is None

    @pytest.mark.parametrize("body", [{"error": {"message": "no"}}, {"created": 1}, []])
    def test_anything_but_a_list_is_an_upstream_error(self, body: Any) -> None:
        with pytest.raises(UpstreamError):
            parse_images(body)
        with pytest.raises(UpstreamError):
            parse_embeddings(body, "m", EmbeddingRequest(model="m", input="x"))


# == Against the loopback upstream ===============================================================


@async_test
async def test_chat() -> None:
    async with rig() as r:
        result = await r.provider.chat(chat_request(temperature=0.5), "gpt-up")

        assert result.completion["choices"][0]["message"]["content"] == REPLY
        assert result.completion["model"] == "team/chat"
        assert result.usage == Usage(prompt_tokens=7, completion_tokens=5, source="provider")
        [sent] = r.upstream.requests
        assert sent.path == "/v1/chat/completions"
        assert sent.json["model"] == "gpt-up"
        assert sent.json["temperature"] == 0.5
        assert sent.json["stream"] is False
        assert "stream_options" not in sent.json


@async_test
async def test_the_api_key_is_sent_as_a_bearer_token_with_extra_headers() -> None:
    headers = {"HTTP-Referer": "https://tollgate.example", "X-Title": "Tollgate"}
    async with rig(preset=PRESETS["openrouter"], extra_headers=headers) as r:
        await r.provider.chat(chat_request(), "gpt-up")
        await r.collect()

        for sent in r.upstream.requests:
            assert sent.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
            assert sent.headers["X-Title"] == "Tollgate"
            assert sent.headers["HTTP-Referer"] == "https://tollgate.example"
        assert r.upstream.requests[1].headers["Accept"] == "text/event-stream"


@async_test
async def test_a_keyless_provider_such_as_ollama_sends_no_authorization() -> None:
    async with rig(preset=PRESETS["ollama"], provider_key=None, upstream_key=None) as r:
        await r.provider.chat(chat_request(), "llama3.2")

        assert "Authorization" not in r.upstream.requests[0].headers


@async_test
async def test_stream_order_termination_and_usage() -> None:
    async with rig() as r:
        chunks = await r.collect()

        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        assert content_of(chunks) == REPLY
        assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
        assert chunks[-1]["choices"] == []
        assert usage_counts(chunks[-1]["usage"]) == PROVIDER_USAGE
        assert USAGE_SOURCE_MARKER not in chunks[-1]
        assert all("usage" not in chunk for chunk in chunks[:-1])
        assert {chunk["model"] for chunk in chunks} == {"team/chat"}
        assert {chunk["id"] for chunk in chunks} == {"chatcmpl-loopback"}
        # The client did not ask for usage; the upstream was asked anyway.
        assert r.upstream.requests[0].json["stream_options"] == {"include_usage": True}


@async_test
async def test_a_finished_stream_leaves_its_connection_in_the_pool() -> None:
    # The end of the HTTP body comes a little after [DONE]: the adapter waits for it.
    async with rig(UpstreamScript(linger=0.05)) as r:
        await r.collect()
        await r.collect()
        await r.provider.chat(chat_request(), "gpt-up")

        ports = {sent.client_port for sent in r.upstream.requests}
        assert len(ports) == 1


@async_test
async def test_an_upstream_that_holds_the_body_open_after_done_does_not_hold_the_stream() -> None:
    async with rig(UpstreamScript(linger=5)) as r:
        started = time.perf_counter()
        chunks = await r.collect()

        assert usage_counts(chunks[-1]["usage"]) == PROVIDER_USAGE
        assert time.perf_counter() - started < 1


@pytest.mark.parametrize(
    "quirks",
    [
        {"keepalive": True},
        {"no_space": True},
        {"crlf": True},
        {"keepalive": True, "no_space": True, "crlf": True, "chunk_delay": 0.002},
    ],
)
@async_test
async def test_wire_quirks_change_nothing(quirks: dict[str, Any]) -> None:
    async with rig() as r:
        plain = await r.collect()
        r.upstream.script = UpstreamScript(**quirks)
        quirky = await r.collect()

        assert quirky == plain


@async_test
async def test_deepseek_reasoning_content_passes_through_untouched() -> None:
    async with rig(UpstreamScript(reasoning="Think first."), preset=PRESETS["deepseek"]) as r:
        chunks = await r.collect()

        reasoning = [c["choices"][0]["delta"]["reasoning_content"] for c in chunks[1:3]]
        assert reasoning == ["Think", " first."]
        assert content_of(chunks) == REPLY
        assert chunks[-1]["usage"]["completion_tokens_details"] == {"reasoning_tokens": 2}


@async_test
async def test_a_missing_usage_chunk_is_estimated_and_marked() -> None:
    async with rig(UpstreamScript(omit_usage=True)) as r:
        chunks = await r.collect()

        final = chunks[-1]
        assert final["choices"] == []
        assert final[USAGE_SOURCE_MARKER] == "estimated"
        assert usage_counts(final["usage"]) == ESTIMATED_USAGE
        assert (final["id"], final["object"], final["model"]) == (
            "chatcmpl-loopback",
            "chat.completion.chunk",
            "team/chat",
        )
        assert sum(1 for chunk in chunks if "usage" in chunk) == 1


@async_test
async def test_usage_on_every_chunk_keeps_the_last_and_sends_it_alone() -> None:
    async with rig(UpstreamScript(usage_on_every_chunk=True)) as r:
        chunks = await r.collect()

        assert all("usage" not in chunk for chunk in chunks[:-1])
        assert content_of(chunks) == REPLY
        assert chunks[-1]["choices"] == []
        assert usage_counts(chunks[-1]["usage"]) == PROVIDER_USAGE
        assert USAGE_SOURCE_MARKER not in chunks[-1]


@async_test
async def test_usage_on_the_finish_chunk_is_split_from_its_choices() -> None:
    async with rig(UpstreamScript(usage_on_finish_chunk=True)) as r:
        chunks = await r.collect()

        finish, final = chunks[-2], chunks[-1]
        assert finish["choices"][0]["finish_reason"] == "stop"
        assert "usage" not in finish
        assert final["choices"] == []
        assert usage_counts(final["usage"]) == PROVIDER_USAGE


@async_test
async def test_a_stream_that_finished_but_sent_no_done_is_accepted() -> None:
    async with rig(UpstreamScript(omit_done=True)) as r:
        chunks = await r.collect()

        assert content_of(chunks) == REPLY
        assert usage_counts(chunks[-1]["usage"]) == PROVIDER_USAGE


@async_test
async def test_a_stream_that_ends_early_is_an_upstream_error() -> None:
    async with rig(UpstreamScript(end_after=3)) as r:
        received: list[ChatChunk] = []
        with pytest.raises(UpstreamError, match="ended early"):
            await r.collect_into(received)

        assert len(received) == 3


@async_test
async def test_an_error_event_mid_stream_is_an_upstream_error() -> None:
    async with rig(UpstreamScript(error_after=2)) as r:
        with pytest.raises(UpstreamError, match="failed mid-stream: The server had an error"):
            await r.collect()


@async_test
async def test_keep_alives_reset_the_idle_timeout() -> None:
    script = UpstreamScript(keepalive=True, chunk_delay=0.1)
    async with rig(script, read_timeout=0.15) as r:
        # Each event waits 0.1 s, well inside the idle timeout, although the stream takes longer.
        chunks = await r.collect()

        assert content_of(chunks) == REPLY


@async_test
async def test_upstream_401_is_a_502_that_does_not_blame_the_callers_key() -> None:
    async with rig(provider_key="sk-wrong-key-for-upstream") as r:
        for call in (r.provider.chat(chat_request(), "gpt-up"), r.collect()):
            with pytest.raises(UpstreamError) as failure:
                await call
            assert (failure.value.status, failure.value.code) == (502, "upstream_auth_failed")
            assert "sk-wrong" not in json.dumps(failure.value.body())


@async_test
async def test_upstream_refusal_keeps_its_status_and_message() -> None:
    body = {
        "error": {"message": "Invalid 'messages[0].role'.", "type": "invalid_request_error", "code": None}
    }
    async with rig(UpstreamScript(fail_status=400, fail_body=body)) as r:
        with pytest.raises(UpstreamRejectedError) as failure:
            await r.provider.chat(chat_request(), "gpt-up")

        assert (failure.value.status, failure.value.message) == (400, "Invalid 'messages[0].role'.")


@pytest.mark.parametrize("status", [302, 307])
@async_test
async def test_redirects_are_never_followed(status: int) -> None:
    async with rig() as r:
        target = f"{r.upstream.base_url}/chat/completions"  # following it would reach the upstream again
        r.upstream.script = UpstreamScript(fail_status=status, fail_headers={"Location": target})
        with pytest.raises(UpstreamError) as failure:
            await r.provider.chat(chat_request(), "gpt-up")

        assert (failure.value.status, failure.value.code) == (502, "upstream_redirect")
        assert len(r.upstream.requests) == 1


@async_test
async def test_an_unreachable_upstream_is_a_502_that_hides_the_address() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    http = HttpClient(allow_loopback=True, connect_timeout=2)
    provider = OpenAICompatibleProvider("acme", OPENAI, f"http://127.0.0.1:{port}/v1?key=abc", None, http)
    try:
        with pytest.raises(UpstreamError) as failure:
            await provider.chat(chat_request(), "gpt-up")
    finally:
        await http.close()

    assert (failure.value.status, failure.value.code) == (502, "upstream_unreachable")
    assert str(port) not in failure.value.message
    assert "key=abc" not in failure.value.message


@async_test
async def test_a_consumer_that_stops_early_releases_the_stream() -> None:
    async with rig() as r:
        stream = r.provider.stream(chat_request(stream=True), "gpt-up")
        first = await anext(stream)
        await stream.aclose()  # type: ignore[attr-defined,unused-ignore]

        assert first["choices"][0]["delta"]["role"] == "assistant"
        chunks = await r.collect()  # the client still works
        assert content_of(chunks) == REPLY


@async_test
async def test_embeddings() -> None:
    async with rig() as r:
        request = EmbeddingRequest(model="team/embed", input=["two words", "three more words"], dimensions=4)

        result = await r.provider.embed(request, "text-embedding-up")

        assert [len(item["embedding"]) for item in result.body["data"]] == [4, 4]
        assert result.body["model"] == "team/embed"
        assert result.usage == Usage(prompt_tokens=5, completion_tokens=0)
        [sent] = r.upstream.requests
        assert (sent.path, sent.json["model"]) == ("/v1/embeddings", "text-embedding-up")
        assert sent.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"


@async_test
async def test_images() -> None:
    async with rig() as r:
        result = await r.provider.image(
            ImageRequest(model="team/draw", prompt="a red fox", n=2), "gpt-image-1"
        )

        assert result.images == 2
        assert result.usage == Usage(prompt_tokens=3, completion_tokens=2000)
        assert r.upstream.requests[0].path == "/v1/images/generations"
        assert r.upstream.requests[0].json["model"] == "gpt-image-1"


@async_test
async def test_embeddings_and_images_errors_are_translated_like_chat() -> None:
    async with rig(UpstreamScript(fail_status=429, fail_headers={"Retry-After": "2"})) as r:
        with pytest.raises(RateLimitError):
            await r.provider.embed(EmbeddingRequest(model="m", input="x"), "e")
        r.upstream.script = UpstreamScript(fail_status=401)
        with pytest.raises(UpstreamError) as failure:
            await r.provider.image(ImageRequest(model="m", prompt="x"), "i")

        assert failure.value.code == "upstream_auth_failed"


def test_anthropic_only_hints_are_stripped_except_for_openrouter():
    from tollgate.providers.openai_compat import build_chat_body
    from tollgate.providers.presets import PRESETS
    from tollgate.schemas.openai import ChatRequest

    request = ChatRequest.model_validate(
        {
            "model": "m",
            "top_k": 5,
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}],
                    "cache_control": {"type": "ephemeral"},
                },
                {
                    "role": "assistant",
                    "content": "ok",
                    "thinking_blocks": [{"type": "thinking", "thinking": "x"}],
                },
            ],
        }
    )

    openai_body = build_chat_body(request, "gpt", PRESETS["openai"], stream=False)
    openrouter_body = build_chat_body(request, "anthropic/claude", PRESETS["openrouter"], stream=False)

    assert "top_k" not in openai_body and "thinking" not in openai_body
    assert "cache_control" not in openai_body["messages"][0]
    assert "cache_control" not in openai_body["messages"][0]["content"][0]
    assert "thinking_blocks" not in openai_body["messages"][1]
    assert openrouter_body["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral"}
    assert openrouter_body["top_k"] == 5
