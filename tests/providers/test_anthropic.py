"""The Anthropic adapter: its pure translation, its stream translator fed with recorded transcripts
(tests/providers/transcripts/anthropic), then the adapter against a real HTTP server on loopback
that speaks Anthropic's Messages API (tests/support/anthropic_upstream.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.providers.test_openai_compat import async_test
from tests.support.anthropic_upstream import AnthropicScript, AnthropicUpstream, ToolUse
from tollgate.errors import (
    InvalidRequestError,
    RateLimitError,
    TollgateError,
    UpstreamError,
    UpstreamRejectedError,
)
from tollgate.providers.anthropic import (
    ANTHROPIC_VERSION,
    DEFAULT_MAX_TOKENS,
    JSON_TOOL,
    AnthropicProvider,
    AnthropicStreamTranslator,
    build_messages_body,
    parse_message,
    translate_upstream_error,
    usage_from_anthropic,
)
from tollgate.providers.base import USAGE_SOURCE_MARKER, Capability, Provider, Usage
from tollgate.providers.factory import build_adapter
from tollgate.providers.http import HttpClient
from tollgate.providers.presets import PRESETS
from tollgate.schemas.openai import ChatChunk, ChatRequest
from tollgate.sse import SSEDecoder
from tollgate.store.records import ProviderRecord

UPSTREAM_KEY = "sk-ant-upstream-secret-0123456789"
ANTHROPIC = PRESETS["anthropic"]
TRANSCRIPTS = Path(__file__).parent / "transcripts" / "anthropic"
REPLY = "Hello from the Anthropic loopback."
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def chat_request(**fields: Any) -> ChatRequest:
    body = {"model": "team/claude", "messages": [{"role": "user", "content": "Say hello"}], **fields}
    return ChatRequest.model_validate(body)


def body_for(**fields: Any) -> dict[str, Any]:
    return build_messages_body(chat_request(**fields), "claude-up", stream=False)


def content_of(chunks: list[ChatChunk]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def tool_calls_of(chunks: list[ChatChunk]) -> dict[int, dict[str, str]]:
    """The streamed tool calls, accumulated the way OpenAI clients do: by index."""
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            for call in choice["delta"].get("tool_calls") or ():
                entry = calls.setdefault(call["index"], {"id": "", "name": "", "arguments": ""})
                entry["id"] += call.get("id") or ""
                entry["name"] += call.get("function", {}).get("name") or ""
                entry["arguments"] += call.get("function", {}).get("arguments") or ""
    return calls


def usage_of(chunk: ChatChunk) -> Usage:
    return Usage.from_openai(chunk["usage"])


# The loopback's counts for chat_request(): "Say hello" is 2 words + 5; the reply is 5 words.
# Tollgate's estimator says otherwise (6 and 9), so the source is visible.
PROVIDER_USAGE = Usage(prompt_tokens=7, completion_tokens=5)
ESTIMATED_USAGE = Usage(prompt_tokens=6, completion_tokens=9, source="estimated")


# == Pure translation: OpenAI request -> Anthropic request ======================================


class TestBuildMessagesBody:
    def test_system_and_developer_messages_become_the_top_level_system_in_order(self) -> None:
        body = body_for(
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
                {"role": "assistant", "content": "Bonjour"},
            ]
        )

        assert body["system"] == [
            {"type": "text", "text": "Be brief."},
            {"type": "text", "text": "Answer in French."},
        ]
        assert body["messages"] == [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Bonjour"},
        ]

    def test_one_plain_system_message_is_a_string_and_unset_fields_are_not_invented(self) -> None:
        body = body_for(
            messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
        )

        assert body == {
            "model": "claude-up",
            "max_tokens": DEFAULT_MAX_TOKENS,
            "messages": [{"role": "user", "content": "Hi"}],
            "system": "Be brief.",
        }

    @pytest.mark.parametrize(
        ("fields", "max_tokens"),
        [
            ({}, DEFAULT_MAX_TOKENS),
            ({"max_tokens": 100}, 100),
            ({"max_tokens": 100, "max_completion_tokens": 50}, 50),
            ({"thinking": {"type": "enabled", "budget_tokens": 2048}}, DEFAULT_MAX_TOKENS + 2048),
            ({"thinking": {"type": "enabled", "budget_tokens": 2048}, "max_tokens": 3000}, 3000),
        ],
    )
    def test_max_tokens_is_the_clients_limit_or_the_documented_default(
        self, fields: dict[str, Any], max_tokens: int
    ) -> None:
        assert body_for(**fields)["max_tokens"] == max_tokens

    def test_sampling_parameters_and_anthropic_extras(self) -> None:
        body = body_for(
            temperature=1.7,
            top_p=0.9,
            stop="END",
            user="user-42",
            top_k=40,
            thinking={"type": "enabled", "budget_tokens": 1024},
            seed=7,
            reasoning_effort="low",
        )

        assert body["temperature"] == 1.0  # clamped to Anthropic's range
        assert body["top_p"] == 0.9
        assert body["stop_sequences"] == ["END"]
        assert body["metadata"] == {"user_id": "user-42"}
        assert body["top_k"] == 40
        assert body["thinking"] == {"type": "enabled", "budget_tokens": 1024}
        assert "seed" not in body and "reasoning_effort" not in body  # Anthropic refuses unknown fields

    def test_stream_flag(self) -> None:
        assert build_messages_body(chat_request(), "m", stream=True)["stream"] is True
        assert "stream" not in build_messages_body(chat_request(stream=True), "m", stream=False)

    def test_tool_calls_and_results_become_tool_use_and_one_merged_tool_result_turn(self) -> None:
        body = body_for(
            tools=[WEATHER_TOOL],
            messages=[
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {
                    "role": "assistant",
                    "content": "Checking.",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        },
                        {
                            "id": "call_2",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": ""},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
                {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "21C"}]},
                {"role": "user", "content": "Thanks!"},
            ],
        )

        assert body["messages"][1] == {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {}},
            ],
        }
        assert body["messages"][2] == {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": "21C"},
                {"type": "text", "text": "Thanks!"},
            ],
        }
        assert len(body["messages"]) == 3

    def test_images_become_base64_or_url_sources(self) -> None:
        body = body_for(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Compare"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                        {
                            "type": "image_url",
                            "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"},
                        },
                    ],
                }
            ]
        )

        assert body["messages"][0]["content"] == [
            {"type": "text", "text": "Compare"},
            {
                "type": "image",
                "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
            },
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        ]

    def test_pdf_files_become_documents(self) -> None:
        part = {
            "type": "file",
            "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"},
        }

        body = body_for(messages=[{"role": "user", "content": [part]}])

        assert body["messages"][0]["content"] == [
            {
                "type": "document",
                "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
            }
        ]

    @pytest.mark.parametrize(
        ("choice", "parallel", "expected"),
        [
            ("auto", None, {"type": "auto"}),
            ("required", None, {"type": "any"}),
            ("none", None, {"type": "none"}),
            (
                {"type": "function", "function": {"name": "get_weather"}},
                None,
                {"type": "tool", "name": "get_weather"},
            ),
            (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
            ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        ],
    )
    def test_tool_choice(self, choice: Any, parallel: bool | None, expected: dict[str, Any]) -> None:
        fields: dict[str, Any] = {"tools": [WEATHER_TOOL], "tool_choice": choice}
        if parallel is not None:
            fields["parallel_tool_calls"] = parallel

        body = body_for(**fields)

        assert body["tool_choice"] == expected
        assert body["tools"] == [
            {
                "name": "get_weather",
                "input_schema": WEATHER_TOOL["function"]["parameters"],  # type: ignore[index]
                "description": "The weather in a city",
            }
        ]

    @pytest.mark.parametrize(
        ("response_format", "schema"),
        [
            ({"type": "json_object"}, {"type": "object"}),
            (
                {
                    "type": "json_schema",
                    "json_schema": {"name": "city", "schema": {"type": "object", "properties": {}}},
                },
                {"type": "object", "properties": {}},
            ),
        ],
    )
    def test_json_mode_forces_the_json_tool(
        self, response_format: dict[str, Any], schema: dict[str, Any]
    ) -> None:
        body = body_for(response_format=response_format)

        assert [tool["name"] for tool in body["tools"]] == [JSON_TOOL]
        assert body["tools"][0]["input_schema"] == schema
        assert body["tool_choice"] == {"type": "tool", "name": JSON_TOOL}

    def test_text_response_format_changes_nothing(self) -> None:
        assert "tools" not in body_for(response_format={"type": "text"})

    @pytest.mark.parametrize(
        ("fields", "param"),
        [
            ({"n": 2}, "n"),
            ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "messages.0.role"),
            (
                {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
                "messages.0.content.0.type",
            ),
            (
                {
                    "messages": [
                        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}
                    ]
                },
                "messages.0.content.0.image_url.url",
            ),
            (
                {
                    "messages": [
                        {
                            "role": "user",
                            "content": [{"type": "image_url", "image_url": {"url": "data:image/png,raw"}}],
                        }
                    ]
                },
                "messages.0.content.0.image_url.url",
            ),
            ({"messages": [{"role": "tool", "content": "orphan"}]}, "messages.0.tool_call_id"),
            (
                {
                    "messages": [
                        {
                            "role": "assistant",
                            "tool_calls": [
                                {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}
                            ],
                        }
                    ]
                },
                "messages.0.tool_calls.0.function.arguments",
            ),
            (
                {
                    "messages": [
                        {
                            "role": "system",
                            "content": [{"type": "image_url", "image_url": {"url": "https://x"}}],
                        }
                    ]
                },
                "messages.0.content.0.type",
            ),
            ({"tools": [{"type": "code_interpreter"}]}, "tools.0.type"),
            ({"tools": [WEATHER_TOOL], "tool_choice": {"type": "allowed_tools"}}, "tool_choice"),
            ({"response_format": {"type": "json_object"}, "tools": [WEATHER_TOOL]}, "response_format"),
            (
                {
                    "response_format": {"type": "json_object"},
                    "thinking": {"type": "enabled", "budget_tokens": 1024},
                },
                "response_format",
            ),
            (
                {"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "array"}}}},
                "response_format.json_schema.schema",
            ),
            ({"response_format": {"type": "grammar"}}, "response_format.type"),
        ],
    )
    def test_what_anthropic_cannot_express_is_a_400_naming_the_param(
        self, fields: dict[str, Any], param: str
    ) -> None:
        with pytest.raises(InvalidRequestError) as refused:
            body_for(**fields)

        assert refused.value.status == 400
        assert refused.value.param == param

    def test_anthropic_only_details_ride_along(self) -> None:
        cache = {"type": "ephemeral"}
        signed = {"type": "thinking", "thinking": "Hmm.", "signature": "sig-1"}
        body = body_for(
            tools=[{**WEATHER_TOOL, "cache_control": cache}],
            messages=[
                {
                    "role": "system",
                    "content": [{"type": "text", "text": "Long prompt", "cache_control": cache}],
                },
                {"role": "user", "content": "Weather?"},
                {
                    "role": "assistant",
                    "content": None,
                    "thinking_blocks": [signed, {"type": "redacted_thinking", "data": "opaque"}],
                    "tool_calls": [
                        {
                            "id": "t1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": "{}"},
                        }
                    ],
                },
                {
                    "role": "tool",
                    "tool_call_id": "t1",
                    "content": "boom",
                    "is_error": True,
                    "cache_control": cache,
                },
            ],
        )

        assert body["system"] == [{"type": "text", "text": "Long prompt", "cache_control": cache}]
        assert body["tools"][0]["cache_control"] == cache
        assert body["messages"][1]["content"][:2] == [signed, {"type": "redacted_thinking", "data": "opaque"}]
        assert body["messages"][2]["content"] == [
            {
                "type": "tool_result",
                "tool_use_id": "t1",
                "content": "boom",
                "is_error": True,
                "cache_control": cache,
            }
        ]

    def test_empty_messages_are_dropped_and_same_role_turns_merged(self) -> None:
        body = body_for(
            messages=[
                {"role": "user", "content": "One"},
                {"role": "assistant", "content": ""},
                {"role": "user", "content": [{"type": "text", "text": ""}, {"type": "text", "text": "Two"}]},
            ]
        )

        assert body["messages"] == [
            {"role": "user", "content": [{"type": "text", "text": "One"}, {"type": "text", "text": "Two"}]}
        ]


# == Pure translation: Anthropic answer -> OpenAI answer ========================================


def anthropic_message(*content: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": list(content),
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 11, "output_tokens": 5},
        **fields,
    }


class TestParseMessage:
    def test_text_usage_and_the_public_model_name(self) -> None:
        usage = {
            "input_tokens": 11,
            "output_tokens": 5,
            "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 20,
        }

        result = parse_message(
            anthropic_message({"type": "text", "text": REPLY}, usage=usage), "team/claude", chat_request()
        )

        assert result.usage == Usage(
            prompt_tokens=131, completion_tokens=5, cached_tokens=100, cache_write_tokens=20
        )
        completion = result.completion
        assert completion["object"] == "chat.completion"
        assert completion["model"] == "team/claude"
        assert completion["choices"][0]["message"] == {"role": "assistant", "content": REPLY, "refusal": None}
        assert completion["choices"][0]["finish_reason"] == "stop"
        assert completion["usage"] == {
            "prompt_tokens": 131,
            "completion_tokens": 5,
            "total_tokens": 136,
            "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 20},
        }

    def test_tool_use_becomes_tool_calls_with_json_string_arguments(self) -> None:
        answer = anthropic_message(
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            stop_reason="tool_use",
        )

        choice = parse_message(answer, "team/claude", chat_request()).completion["choices"][0]

        assert choice["finish_reason"] == "tool_calls"
        assert choice["message"]["content"] is None
        assert choice["message"]["tool_calls"] == [
            {
                "id": "toolu_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            }
        ]

    def test_thinking_becomes_reasoning_content_and_keeps_its_signature(self) -> None:
        signed = {"type": "thinking", "thinking": "Let me see.", "signature": "sig"}
        redacted = {"type": "redacted_thinking", "data": "opaque"}
        usage = {"input_tokens": 3, "output_tokens": 9, "output_tokens_details": {"thinking_tokens": 4}}

        result = parse_message(
            anthropic_message(signed, redacted, {"type": "text", "text": "42"}, usage=usage),
            "m",
            chat_request(),
        )

        message = result.completion["choices"][0]["message"]
        assert message["content"] == "42"
        assert message["reasoning_content"] == "Let me see."
        assert message["thinking_blocks"] == [signed, redacted]
        assert result.usage.reasoning_tokens == 4

    def test_json_mode_returns_the_forced_tools_input_as_content(self) -> None:
        answer = anthropic_message(
            {
                "type": "tool_use",
                "id": "toolu_j",
                "name": JSON_TOOL,
                "input": {"city": "Paris", "degrees": 18},
            },
            stop_reason="tool_use",
        )

        choice = parse_message(answer, "m", chat_request(response_format={"type": "json_object"})).completion[
            "choices"
        ][0]

        assert json.loads(choice["message"]["content"]) == {"city": "Paris", "degrees": 18}
        assert "tool_calls" not in choice["message"]
        assert choice["finish_reason"] == "stop"

    @pytest.mark.parametrize(
        ("stop_reason", "finish_reason"),
        [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("pause_turn", "stop"),
            ("max_tokens", "length"),
            ("model_context_window_exceeded", "length"),
            ("tool_use", "tool_calls"),
            ("refusal", "content_filter"),
            (None, "stop"),
        ],
    )
    def test_stop_reasons(self, stop_reason: str | None, finish_reason: str) -> None:
        answer = anthropic_message({"type": "text", "text": "x"}, stop_reason=stop_reason)

        assert (
            parse_message(answer, "m", chat_request()).completion["choices"][0]["finish_reason"]
            == finish_reason
        )

    def test_missing_usage_is_estimated_and_labelled(self) -> None:
        answer = anthropic_message({"type": "text", "text": REPLY})
        del answer["usage"]

        result = parse_message(answer, "m", chat_request())

        assert result.usage == ESTIMATED_USAGE
        assert result.completion["usage"]["total_tokens"] == 15

    def test_an_error_body_is_an_upstream_error_with_the_secret_redacted(self) -> None:
        body = {"type": "error", "error": {"type": "api_error", "message": f"key {UPSTREAM_KEY} broke"}}

        with pytest.raises(UpstreamError) as failure:
            parse_message(body, "m", chat_request(), secrets=(UPSTREAM_KEY,))

        assert failure.value.message == "The provider reported an error: key [redacted] broke"

    @pytest.mark.parametrize("body", [[], "text", {"id": "x"}, {"content": "nope"}])
    def test_anything_else_is_an_upstream_error(self, body: Any) -> None:
        with pytest.raises(UpstreamError):
            parse_message(body, "m", chat_request())

    def test_usage_without_counts_is_none(self) -> None:
        assert usage_from_anthropic({"service_tier": "standard"}) is None
        assert usage_from_anthropic(None) is None


def anthropic_error(type_: str = "invalid_request_error", message: Any = "Bad thing.", **extra: Any) -> bytes:
    return json.dumps({"type": "error", "error": {"type": type_, "message": message, **extra}}).encode()


class TestTranslateUpstreamError:
    @pytest.mark.parametrize(
        ("upstream_status", "type_", "kind", "status", "code"),
        [
            (400, "invalid_request_error", UpstreamRejectedError, 400, "upstream_rejected"),
            (404, "not_found_error", UpstreamRejectedError, 404, "upstream_rejected"),
            (413, "request_too_large", UpstreamRejectedError, 413, "upstream_rejected"),
            (401, "authentication_error", UpstreamError, 502, "upstream_auth_failed"),
            (403, "permission_error", UpstreamError, 502, "upstream_auth_failed"),
            (429, "rate_limit_error", RateLimitError, 429, "upstream_rate_limited"),
            (402, "billing_error", UpstreamError, 502, "upstream_quota_exceeded"),
            (500, "api_error", UpstreamError, 502, "upstream_error"),
            (529, "overloaded_error", UpstreamError, 502, "upstream_overloaded"),
            (503, "overloaded_error", UpstreamError, 502, "upstream_overloaded"),
        ],
    )
    def test_status_table(
        self, upstream_status: int, type_: str, kind: type[TollgateError], status: int, code: str
    ) -> None:
        error = translate_upstream_error(upstream_status, anthropic_error(type_), {}, provider="claude")

        assert type(error) is kind
        assert (error.status, error.code) == (status, code)

    def test_an_overload_without_a_json_body_is_still_an_overload(self) -> None:
        error = translate_upstream_error(529, b"<html>529 Overloaded</html>", {}, provider="claude")

        assert (error.status, error.code) == (502, "upstream_overloaded")

    def test_a_refusal_passes_the_providers_message_on_with_secrets_redacted(self) -> None:
        body = anthropic_error(message=f"prompt is too long: 210000 tokens > 200000 maximum ({UPSTREAM_KEY})")

        error = translate_upstream_error(400, body, {}, provider="claude", secrets=(UPSTREAM_KEY,))

        assert error.message == "prompt is too long: 210000 tokens > 200000 maximum ([redacted])"

    def test_an_exhausted_credit_balance_is_the_gateways_problem_not_the_callers(self) -> None:
        body = anthropic_error(message="Your credit balance is too low to access the Anthropic API.")

        error = translate_upstream_error(400, body, {}, provider="claude")

        assert (type(error), error.status, error.code) == (UpstreamError, 502, "upstream_quota_exceeded")
        assert "credit balance" not in error.message

    def test_a_spend_limit_is_not_the_callers_rate_limit(self) -> None:
        body = anthropic_error(
            "rate_limit_error", "spend limit", details={"error_code": "enforced_spend_limit_reached"}
        )

        error = translate_upstream_error(429, body, {}, provider="claude")

        assert (error.status, error.code) == (502, "upstream_quota_exceeded")

    def test_rate_limits_pass_retry_after_on(self) -> None:
        error = translate_upstream_error(
            429, anthropic_error("rate_limit_error"), {"retry-after": "13"}, provider="claude"
        )

        assert isinstance(error, RateLimitError)
        assert error.headers == {"Retry-After": "13"}

    def test_credentials_failures_never_echo_the_key(self) -> None:
        body = anthropic_error("authentication_error", f"invalid x-api-key {UPSTREAM_KEY}")

        error = translate_upstream_error(401, body, {}, provider="claude")

        assert UPSTREAM_KEY not in json.dumps(error.body())


# == The stream translator, fed recorded transcripts ============================================


def transcript(name: str) -> bytes:
    return (TRANSCRIPTS / f"{name}.sse").read_bytes()


def translate(
    name: str, request: ChatRequest | None = None
) -> tuple[list[ChatChunk], AnthropicStreamTranslator]:
    """Decodes a transcript and feeds it to a translator, as the adapter does; the usage chunk
    comes last when the stream finished."""
    translator = AnthropicStreamTranslator(
        "team/claude", request or chat_request(stream=True), provider="claude"
    )
    decoder = SSEDecoder()
    chunks: list[ChatChunk] = []
    for event in [*decoder.feed(transcript(name)), *decoder.close()]:
        chunk = translator.feed(json.loads(event.data))
        if chunk is not None:
            chunks.append(chunk)
    if translator.done:
        chunks.append(translator.usage_chunk())
    return chunks, translator


class TestStreamTranslator:
    def test_cumulative_usage_takes_the_last_count_and_never_sums(self) -> None:
        chunks, _ = translate("cumulative_usage")

        assert content_of(chunks) == "Counting to three: one, two, three."
        final = chunks[-1]
        assert final["choices"] == [] and USAGE_SOURCE_MARKER not in final
        # 3 + 7 + 12 output tokens were reported along the way: the total is the last, 12.
        assert usage_of(final) == Usage(
            prompt_tokens=145, completion_tokens=12, cached_tokens=100, cache_write_tokens=20
        )
        assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]].count("stop") == 1

    def test_zero_input_tokens_at_the_start_are_replaced_by_the_message_delta_count(self) -> None:
        chunks, _ = translate("zero_input_in_start")

        assert usage_of(chunks[-1]) == Usage(prompt_tokens=95, completion_tokens=9, cached_tokens=64)
        assert chunks[-2]["choices"][0]["finish_reason"] == "length"

    def test_pings_and_keep_alives_send_nothing(self) -> None:
        chunks, _ = translate("ping_keepalive")

        deltas = [c["choices"][0]["delta"] for c in chunks[:-1]]
        assert deltas == [
            {"role": "assistant", "content": ""},
            {"content": "Still"},
            {"content": " here."},
            {},
        ]
        assert usage_of(chunks[-1]) == Usage(prompt_tokens=12, completion_tokens=4)

    def test_an_error_event_mid_stream_is_an_upstream_error(self) -> None:
        with pytest.raises(UpstreamError) as failure:
            translate("error_mid_stream")

        assert failure.value.code == "upstream_overloaded"
        assert failure.value.message == "The provider 'claude' failed mid-stream: Overloaded"

    def test_tool_use_streams_as_indexed_tool_call_deltas(self) -> None:
        chunks, _ = translate("tool_use")

        assert content_of(chunks) == "I'll check the weather and the time."
        calls = tool_calls_of(chunks)
        assert [(c["id"], c["name"]) for c in calls.values()] == [
            ("toolu_01WeatherCall", "get_weather"),
            ("toolu_01TimeCall", "get_time"),
        ]
        assert json.loads(calls[0]["arguments"]) == {"location": "San Francisco, CA", "unit": "fahrenheit"}
        assert json.loads(calls[1]["arguments"]) == {"tz": "America/Los_Angeles"}
        assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
        assert usage_of(chunks[-1]) == Usage(prompt_tokens=472, completion_tokens=89)

    def test_thinking_streams_as_reasoning_content_with_its_signature(self) -> None:
        chunks, _ = translate("thinking")

        deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
        assert (
            "".join(d.get("reasoning_content", "") for d in deltas)
            == "The user asks for 27 * 453. 27 * 453 = 12231."
        )
        blocks = [block for d in deltas for block in d.get("thinking_blocks", ())]
        assert blocks == [
            {
                "type": "thinking",
                "thinking": "",
                "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds",
            },
            {
                "type": "redacted_thinking",
                "data": "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpP",
            },
        ]
        assert content_of(chunks) == "27 * 453 = 12,231"
        assert usage_of(chunks[-1]).reasoning_tokens == 41

    def test_a_stream_without_message_stop_is_not_done(self) -> None:
        chunks, translator = translate("no_message_stop")

        assert not translator.done
        assert content_of(chunks) == "Cut"

    def test_json_mode_streams_the_forced_tools_input_as_content(self) -> None:
        request = chat_request(stream=True, response_format={"type": "json_object"})
        translator = AnthropicStreamTranslator("m", request)
        events = [
            {
                "type": "message_start",
                "message": {"id": "msg_j", "usage": {"input_tokens": 5, "output_tokens": 1}},
            },
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "tool_use", "id": "t", "name": JSON_TOOL, "input": {}},
            },
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": '{"a":'},
            },
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": " 1}"},
            },
            {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 4}},
            {"type": "message_stop"},
        ]

        chunks = [chunk for event in events if (chunk := translator.feed(event)) is not None]

        assert json.loads(content_of(chunks)) == {"a": 1}
        assert not tool_calls_of(chunks)
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"

    def test_no_usage_at_all_is_estimated_and_marked(self) -> None:
        translator = AnthropicStreamTranslator("m", chat_request(stream=True))
        for event in (
            {"type": "message_start", "message": {"id": "msg_x"}},
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": REPLY}},
            {"type": "message_stop"},
        ):
            translator.feed(event)

        final = translator.usage_chunk()

        assert final[USAGE_SOURCE_MARKER] == "estimated"
        assert usage_of(final) == Usage(prompt_tokens=6, completion_tokens=9)

    def test_event_types_added_later_are_ignored(self) -> None:
        translator = AnthropicStreamTranslator("m", chat_request(stream=True))

        assert (
            translator.feed({"type": "content_block_delta", "index": 0, "delta": {"type": "citations_delta"}})
            is None
        )
        assert translator.feed({"type": "brand_new_event"}) is None


# == Against the loopback Anthropic ================================================================


@dataclass
class Rig:
    upstream: AnthropicUpstream
    provider: AnthropicProvider

    async def collect(self, request: ChatRequest | None = None) -> list[ChatChunk]:
        return [
            chunk async for chunk in self.provider.stream(request or chat_request(stream=True), "claude-up")
        ]

    async def collect_into(self, received: list[ChatChunk], request: ChatRequest | None = None) -> None:
        """Like ``collect``, keeping what arrived before a failure."""
        async for chunk in self.provider.stream(request or chat_request(stream=True), "claude-up"):
            received.append(chunk)


@asynccontextmanager
async def rig(
    script: AnthropicScript | None = None,
    *,
    provider_key: str = UPSTREAM_KEY,
    read_timeout: float = 5.0,
    base_suffix: str = "",
) -> AsyncIterator[Rig]:
    async with AnthropicUpstream(api_key=UPSTREAM_KEY, script=script) as upstream:
        http = HttpClient(allow_loopback=True, connect_timeout=2.0, read_timeout=read_timeout)
        provider = AnthropicProvider("claude", ANTHROPIC, upstream.base_url + base_suffix, provider_key, http)
        try:
            yield Rig(upstream, provider)
        finally:
            await http.close()


@async_test
async def test_chat_sends_anthropics_headers_and_reads_its_usage() -> None:
    async with rig() as r:
        result = await r.provider.chat(chat_request(temperature=0.5), "claude-up")

        assert result.completion["choices"][0]["message"]["content"] == REPLY
        assert result.completion["model"] == "team/claude"
        assert result.usage == PROVIDER_USAGE
        [sent] = r.upstream.requests
        assert sent.path == "/v1/messages"
        assert sent.headers["x-api-key"] == UPSTREAM_KEY
        assert sent.headers["anthropic-version"] == ANTHROPIC_VERSION
        assert "Authorization" not in sent.headers
        assert sent.json == {
            "model": "claude-up",
            "max_tokens": DEFAULT_MAX_TOKENS,
            "messages": [{"role": "user", "content": "Say hello"}],
            "temperature": 0.5,
        }


@async_test
async def test_a_base_url_ending_in_v1_is_accepted() -> None:
    async with rig(base_suffix="/v1/") as r:
        await r.provider.chat(chat_request(), "claude-up")

        assert r.upstream.requests[0].path == "/v1/messages"


@async_test
async def test_cache_tokens_count_into_the_prompt() -> None:
    async with rig(AnthropicScript(cache_read_tokens=1000, cache_write_tokens=200)) as r:
        result = await r.provider.chat(chat_request(), "claude-up")
        chunks = await r.collect()

        expected = Usage(prompt_tokens=1207, completion_tokens=5, cached_tokens=1000, cache_write_tokens=200)
        assert result.usage == expected
        assert usage_of(chunks[-1]) == expected


@async_test
async def test_stream_order_termination_and_usage() -> None:
    async with rig() as r:
        chunks = await r.collect()

        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        assert content_of(chunks) == REPLY
        assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
        assert chunks[-1]["choices"] == []
        assert usage_of(chunks[-1]) == PROVIDER_USAGE
        assert USAGE_SOURCE_MARKER not in chunks[-1]
        assert all("usage" not in chunk for chunk in chunks[:-1])
        assert {chunk["model"] for chunk in chunks} == {"team/claude"}
        assert {chunk["id"] for chunk in chunks} == {"msg_loopback"}
        sent = r.upstream.requests[0]
        assert sent.json["stream"] is True
        assert sent.headers["Accept"] == "text/event-stream"


@pytest.mark.parametrize(
    "script",
    [
        AnthropicScript(usage_steps=4),
        AnthropicScript(zero_input_in_start=True),
        AnthropicScript(keepalive=True, chunk_delay=0.001),
        AnthropicScript(ping=False),
    ],
    ids=["cumulative-usage", "zero-input-in-start", "keep-alive", "no-ping"],
)
@async_test
async def test_usage_quirks_and_keep_alives_change_nothing(script: AnthropicScript) -> None:
    async with rig() as r:
        plain = await r.collect()
        r.upstream.script = script
        quirky = await r.collect()

        # ``created`` is the clock's second when each stream began: the two may straddle a second.
        assert len({chunk["created"] for chunk in plain}) == len({chunk["created"] for chunk in quirky}) == 1
        assert [{**chunk, "created": 0} for chunk in quirky] == [{**chunk, "created": 0} for chunk in plain]


@async_test
async def test_no_usage_from_the_provider_is_estimated_and_marked() -> None:
    async with rig(AnthropicScript(omit_usage=True)) as r:
        chunks = await r.collect()
        result = await r.provider.chat(chat_request(), "claude-up")

        assert chunks[-1][USAGE_SOURCE_MARKER] == "estimated"
        assert usage_of(chunks[-1]) == Usage(prompt_tokens=6, completion_tokens=9)
        assert result.usage == ESTIMATED_USAGE


@pytest.mark.parametrize(
    "name", ["cumulative_usage", "zero_input_in_start", "ping_keepalive", "tool_use", "thinking"]
)
@async_test
async def test_transcripts_replayed_over_http_in_small_pieces_translate_as_they_do_whole(name: str) -> None:
    async with rig(AnthropicScript(transcript=transcript(name), transcript_piece=13)) as r:
        chunks = await r.collect()

        expected, _ = translate(name)
        strip = ("created", "id")
        assert [{k: v for k, v in c.items() if k not in strip} for c in chunks] == [
            {k: v for k, v in c.items() if k not in strip} for c in expected
        ]


@async_test
async def test_a_transcript_without_message_stop_is_an_upstream_error() -> None:
    async with rig(AnthropicScript(transcript=transcript("no_message_stop"))) as r:
        received: list[ChatChunk] = []
        with pytest.raises(UpstreamError, match="ended early") as failure:
            await r.collect_into(received)

        assert failure.value.code == "upstream_disconnected"
        assert content_of(received) == "Cut"


@async_test
async def test_tool_use_round_trip_passes_anthropics_checks() -> None:
    weather = ToolUse("get_weather", {"city": "Paris", "note": "a longer input split into many pieces"})
    async with rig(AnthropicScript(reply="Let me check.", tool_uses=(weather,))) as r:
        request = chat_request(stream=True, tools=[WEATHER_TOOL], tool_choice="auto")
        chunks = await r.collect(request)
        result = await r.provider.chat(request, "claude-up")

        [call] = tool_calls_of(chunks).values()
        assert (call["id"], call["name"]) == ("toolu_loopback_1", "get_weather")
        assert json.loads(call["arguments"]) == dict(weather.input)
        assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
        message = result.completion["choices"][0]["message"]
        assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == dict(weather.input)

        # The conversation goes on: the tool result must answer the tool_use, as Anthropic checks.
        r.upstream.script = AnthropicScript(reply="18C in Paris.")
        follow_up = chat_request(
            tools=[WEATHER_TOOL],
            messages=[
                {"role": "user", "content": "Weather in Paris?"},
                message,
                {"role": "tool", "tool_call_id": "toolu_loopback_1", "content": "18C"},
            ],
        )
        answer = await r.provider.chat(follow_up, "claude-up")

        assert answer.completion["choices"][0]["message"]["content"] == "18C in Paris."


@async_test
async def test_thinking_passes_through_and_its_signed_blocks_go_back() -> None:
    script = AnthropicScript(thinking="Two plus two.", redacted_thinking="opaque", reply="4")
    async with rig(script) as r:
        thinking = {"type": "enabled", "budget_tokens": 1024}
        chunks = await r.collect(chat_request(stream=True, thinking=thinking))
        result = await r.provider.chat(chat_request(thinking=thinking), "claude-up")

        assert r.upstream.requests[0].json["thinking"] == thinking
        reasoning = "".join(
            c["choices"][0]["delta"].get("reasoning_content", "") for c in chunks if c["choices"]
        )
        assert reasoning == "Two plus two."
        message = result.completion["choices"][0]["message"]
        assert message["reasoning_content"] == "Two plus two."
        assert message["thinking_blocks"] == [
            {"type": "thinking", "thinking": "Two plus two.", "signature": "sig-loopback-0123"},
            {"type": "redacted_thinking", "data": "opaque"},
        ]

        await r.provider.chat(
            chat_request(
                messages=[{"role": "user", "content": "2+2?"}, message, {"role": "user", "content": "Sure?"}]
            ),
            "claude-up",
        )

        assert r.upstream.requests[-1].json["messages"][1]["content"][:2] == message["thinking_blocks"]


@async_test
async def test_json_mode_against_the_upstream() -> None:
    answer = ToolUse(JSON_TOOL, {"city": "Paris", "degrees": 18}, id="toolu_json")
    async with rig(AnthropicScript(reply="", tool_uses=(answer,))) as r:
        schema = {
            "type": "object",
            "properties": {"city": {"type": "string"}, "degrees": {"type": "integer"}},
        }
        request = chat_request(
            stream=True,
            response_format={"type": "json_schema", "json_schema": {"name": "w", "schema": schema}},
        )
        chunks = await r.collect(request)
        result = await r.provider.chat(request, "claude-up")

        sent = r.upstream.requests[0].json
        assert sent["tool_choice"] == {"type": "tool", "name": JSON_TOOL}
        assert sent["tools"][0]["input_schema"] == schema
        assert json.loads(content_of(chunks)) == {"city": "Paris", "degrees": 18}
        assert not tool_calls_of(chunks)
        assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
        assert json.loads(result.completion["choices"][0]["message"]["content"]) == {
            "city": "Paris",
            "degrees": 18,
        }


@async_test
async def test_temperature_above_anthropics_range_is_clamped_not_refused() -> None:
    async with rig() as r:
        result = await r.provider.chat(chat_request(temperature=1.8), "claude-up")

        assert result.completion["choices"][0]["message"]["content"] == REPLY
        assert r.upstream.requests[0].json["temperature"] == 1.0


@async_test
async def test_upstream_401_is_a_502_that_does_not_blame_the_callers_key() -> None:
    async with rig(provider_key="sk-ant-wrong-key") as r:
        for call in (r.provider.chat(chat_request(), "claude-up"), r.collect()):
            with pytest.raises(UpstreamError) as failure:
                await call
            assert (failure.value.status, failure.value.code) == (502, "upstream_auth_failed")
            assert "sk-ant-wrong" not in json.dumps(failure.value.body())


@async_test
async def test_upstream_refusal_keeps_its_status_and_message() -> None:
    async with rig() as r:
        # The strict upstream refuses a conversation whose tool result answers no tool_use.
        request = chat_request(
            messages=[
                {"role": "user", "content": "x"},
                {"role": "tool", "tool_call_id": "nope", "content": "y"},
            ]
        )
        with pytest.raises(UpstreamRejectedError) as failure:
            await r.provider.chat(request, "claude-up")

        assert failure.value.status == 400
        assert "unexpected `tool_use_id`" in failure.value.message


@async_test
async def test_an_error_event_mid_stream_is_an_upstream_error_after_the_chunks_before_it() -> None:
    async with rig(AnthropicScript(error_after=4)) as r:
        received: list[ChatChunk] = []
        with pytest.raises(UpstreamError, match="failed mid-stream: Overloaded") as failure:
            await r.collect_into(received)

        assert failure.value.code == "upstream_overloaded"
        assert content_of(received) == "Hello"


@async_test
async def test_a_stream_without_message_stop_is_an_upstream_error() -> None:
    async with rig(AnthropicScript(omit_message_stop=True)) as r:
        with pytest.raises(UpstreamError, match="ended early"):
            await r.collect()


@async_test
async def test_a_consumer_that_stops_early_releases_the_stream() -> None:
    async with rig() as r:
        stream = r.provider.stream(chat_request(stream=True), "claude-up")
        first = await anext(stream)
        await stream.aclose()  # type: ignore[attr-defined,unused-ignore]

        assert first["choices"][0]["delta"]["role"] == "assistant"
        assert content_of(await r.collect()) == REPLY  # the client still works


def test_the_factory_builds_the_adapter_with_chat_capabilities() -> None:
    record = ProviderRecord(name="claude", type="anthropic", created_at=0, updated_at=0)

    provider = build_adapter(record, UPSTREAM_KEY, HttpClient())

    assert isinstance(provider, AnthropicProvider)
    assert isinstance(provider, Provider)
    assert provider.capabilities == {
        Capability.CHAT,
        Capability.STREAM,
        Capability.TOOLS,
        Capability.VISION,
        Capability.JSON_MODE,
    }
    assert UPSTREAM_KEY not in repr(provider)
