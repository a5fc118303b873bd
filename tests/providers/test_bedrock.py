"""The Bedrock adapter: its pure translation, the event-stream framing of the loopback server, then
the adapter through the real boto3 ``bedrock-runtime`` client against a real HTTP server on
loopback that speaks Bedrock Runtime's wire protocol (tests/support/bedrock_upstream.py)."""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import random
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, ParamSpec

import pytest
from botocore import UNSIGNED
from botocore import exceptions as boto
from botocore.config import Config
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer
from urllib3 import HTTPConnectionPool
from urllib3.exceptions import ProtocolError, ReadTimeoutError

from tests.support.bedrock_upstream import (
    BedrockScript,
    BedrockUpstream,
    ToolUse,
    encode_frame,
    event_frame,
    exception_frame,
    tiny_png,
)
from tollgate.errors import (
    InvalidRequestError,
    RateLimitError,
    ServiceUnavailableError,
    TollgateError,
    UpstreamError,
    UpstreamRejectedError,
    UpstreamTimeoutError,
)
from tollgate.providers.base import USAGE_SOURCE_MARKER, Capability, Provider, Usage
from tollgate.providers.bedrock import (
    MESSAGE_LIMIT,
    STREAM_THREAD_NAME,
    BedrockProvider,
    ConverseStreamTranslator,
    build_converse_request,
    build_image_body,
    embedding_bodies,
    finish_reason,
    parse_converse_response,
    parse_embedding_answers,
    parse_image_answer,
    translate_bedrock_error,
    usage_from_bedrock,
)
from tollgate.schemas.openai import ChatChunk, ChatRequest, EmbeddingRequest, ImageRequest

P = ParamSpec("P")
ACCESS_KEY_ID = "AKIALOOPBACKTEST0001"
REPLY = "Hello from the loopback Bedrock."
PNG = tiny_png()
PNG_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()


def async_test(test: Callable[P, Awaitable[None]]) -> Callable[P, None]:
    """Runs an async test in its own event loop (pytest-asyncio is not installed)."""

    @functools.wraps(test)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), timeout=10))

    return run


def dead_port() -> int:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(autouse=True)
def aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """Dummy credentials, no shared config, no instance metadata, and a global AWS endpoint that
    leads nowhere: the adapter's explicit endpoint has to win over it, so nothing reaches AWS.
    """
    for name in (
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_BEARER_TOKEN_BEDROCK",
        "AWS_ENDPOINT_URL_BEDROCK_RUNTIME",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "loopback-secret-access-key")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{dead_port()}")


def chat_request(**fields: Any) -> ChatRequest:
    body = {"model": "brock/claude", "messages": [{"role": "user", "content": "Say hello"}], **fields}
    return ChatRequest.model_validate(body)


def converse(request: ChatRequest) -> dict[str, Any]:
    return build_converse_request(request, "anthropic.claude-x")


# The loopback Bedrock's counts for chat_request(): "Say hello" is 2 words + 5 per message; the
# reply is 5 words. Tollgate's estimator says otherwise (6 and 8), so the source is visible.
PROVIDER_USAGE = {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}
ESTIMATED_USAGE = {"prompt_tokens": 6, "completion_tokens": 8, "total_tokens": 14}


def usage_counts(usage: dict[str, Any]) -> dict[str, Any]:
    return {key: usage[key] for key in ("prompt_tokens", "completion_tokens", "total_tokens")}


def content_of(chunks: list[ChatChunk]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


# == Chat request translation ===================================================================


class TestBuildConverseRequest:
    def test_system_and_developer_messages_become_system_blocks(self) -> None:
        kwargs = converse(
            chat_request(
                messages=[
                    {"role": "system", "content": "Be brief."},
                    {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
                    {"role": "user", "content": "Say hello"},
                ]
            )
        )

        assert kwargs["modelId"] == "anthropic.claude-x"
        assert kwargs["system"] == [{"text": "Be brief."}, {"text": "Use French."}]
        assert kwargs["messages"] == [{"role": "user", "content": [{"text": "Say hello"}]}]

    def test_consecutive_messages_of_one_role_are_merged(self) -> None:
        kwargs = converse(
            chat_request(
                messages=[
                    {"role": "user", "content": "one"},
                    {"role": "user", "content": "two"},
                    {"role": "assistant", "content": "three"},
                    {"role": "assistant", "content": ""},  # says nothing: left out
                ]
            )
        )

        assert kwargs["messages"] == [
            {"role": "user", "content": [{"text": "one"}, {"text": "two"}]},
            {"role": "assistant", "content": [{"text": "three"}]},
        ]

    def test_a_tool_round_trip(self) -> None:
        call = {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        }
        second = {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": ""}}
        kwargs = converse(
            chat_request(
                messages=[
                    {"role": "user", "content": "Weather and time in Paris?"},
                    {"role": "assistant", "content": "Checking.", "tool_calls": [call, second]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "18C and sunny"},
                    {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "noon"}]},
                    {"role": "user", "content": "Thanks!"},
                ],
                tools=[{"type": "function", "function": {"name": "get_weather"}}],
            )
        )

        assert kwargs["messages"][1] == {
            "role": "assistant",
            "content": [
                {"text": "Checking."},
                {"toolUse": {"toolUseId": "call_1", "name": "get_weather", "input": {"city": "Paris"}}},
                {"toolUse": {"toolUseId": "call_2", "name": "get_time", "input": {}}},
            ],
        }
        # Tool results (and what the user said next) are one user turn.
        assert kwargs["messages"][2] == {
            "role": "user",
            "content": [
                {"toolResult": {"toolUseId": "call_1", "content": [{"text": "18C and sunny"}]}},
                {"toolResult": {"toolUseId": "call_2", "content": [{"text": "noon"}]}},
                {"text": "Thanks!"},
            ],
        }
        assert len(kwargs["messages"]) == 3

    @pytest.mark.parametrize(
        ("mime", "expected"),
        [
            ("image/png", "png"),
            ("image/jpeg", "jpeg"),
            ("image/jpg", "jpeg"),
            ("image/gif", "gif"),
            ("image/webp", "webp"),
        ],
    )
    def test_data_url_images_become_bytes_with_their_format(self, mime: str, expected: str) -> None:
        url = f"data:{mime};base64," + base64.b64encode(PNG).decode()
        content = [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": url}},
        ]

        kwargs = converse(chat_request(messages=[{"role": "user", "content": content}]))

        assert kwargs["messages"][0]["content"] == [
            {"text": "What is this?"},
            {"image": {"format": expected, "source": {"bytes": PNG}}},
        ]

    @pytest.mark.parametrize(
        ("url", "message"),
        [
            ("https://example.com/cat.png", "cannot fetch images from URLs"),
            ("http://example.com/cat.png", "cannot fetch images from URLs"),
            ("data:image/tiff;base64,AAAA", "not 'image/tiff'"),
            ("data:image/png,rawbytes", "must be base64"),
            ("data:image/png;base64,!!!not-base64!!!", "not valid base64"),
        ],
    )
    def test_unusable_images_are_a_400_naming_the_part(self, url: str, message: str) -> None:
        content = [{"type": "text", "text": "What?"}, {"type": "image_url", "image_url": {"url": url}}]
        with pytest.raises(InvalidRequestError, match=message) as refused:
            converse(chat_request(messages=[{"role": "user", "content": content}]))

        assert refused.value.status == 400
        assert refused.value.param == "messages[0].content[1].image_url"

    def test_inference_parameters(self) -> None:
        kwargs = converse(
            chat_request(max_tokens=50, max_completion_tokens=64, temperature=0.3, top_p=0.9, stop="END")
        )

        assert kwargs["inferenceConfig"] == {
            "maxTokens": 64,
            "temperature": 0.3,
            "topP": 0.9,
            "stopSequences": ["END"],
        }
        assert converse(chat_request(stop=["a", "b"]))["inferenceConfig"] == {"stopSequences": ["a", "b"]}
        assert "inferenceConfig" not in converse(chat_request())

    @pytest.mark.parametrize(
        ("choice", "expected"),
        [
            (None, None),
            ("auto", {"auto": {}}),
            ("required", {"any": {}}),
            ({"type": "function", "function": {"name": "get_weather"}}, {"tool": {"name": "get_weather"}}),
        ],
    )
    def test_tools_and_tool_choice(self, choice: Any, expected: dict[str, Any] | None) -> None:
        schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
        tools = [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Weather now",
                    "parameters": schema,
                    "strict": True,
                },
            },
            {"type": "function", "function": {"name": "ping"}},
        ]

        config = converse(chat_request(tools=tools, tool_choice=choice))["toolConfig"]

        assert config["tools"] == [
            {
                "toolSpec": {
                    "name": "get_weather",
                    "description": "Weather now",
                    "inputSchema": {"json": schema},
                    "strict": True,
                }
            },
            {"toolSpec": {"name": "ping", "inputSchema": {"json": {"type": "object", "properties": {}}}}},
        ]
        assert config.get("toolChoice") == expected

    def test_tool_choice_none_leaves_the_tools_out_unless_the_conversation_used_them(self) -> None:
        tools = [{"type": "function", "function": {"name": "get_weather"}}]
        assert "toolConfig" not in converse(chat_request(tools=tools, tool_choice="none"))

        call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
        history = [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ]
        config = converse(chat_request(messages=history, tools=tools, tool_choice="none"))["toolConfig"]
        assert "toolChoice" not in config  # Bedrock requires the tools here, and has no "none"

    def test_json_schema_response_format_is_bedrock_structured_output(self) -> None:
        schema = {"type": "object", "properties": {"name": {"type": "string"}}, "additionalProperties": False}
        response_format = {
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": schema, "strict": True},
        }

        kwargs = converse(chat_request(response_format=response_format))

        definition = kwargs["outputConfig"]["textFormat"]["structure"]["jsonSchema"]
        assert kwargs["outputConfig"]["textFormat"]["type"] == "json_schema"
        assert definition["name"] == "person"
        assert json.loads(definition["schema"]) == schema  # Bedrock takes the schema as a JSON string
        assert "outputConfig" not in converse(chat_request(response_format={"type": "text"}))

    def test_schema_less_json_mode_is_a_400(self) -> None:
        with pytest.raises(InvalidRequestError) as refused:
            converse(chat_request(response_format={"type": "json_object"}))

        assert (refused.value.param, refused.value.code) == ("response_format", "unsupported_response_format")

    def test_vendor_extras_pass_only_under_their_documented_field(self) -> None:
        thinking = {"thinking": {"type": "enabled", "budget_tokens": 2048}}

        kwargs = converse(
            chat_request(additional_model_request_fields=thinking, seed=7, reasoning_effort="low")
        )

        assert kwargs["additionalModelRequestFields"] == thinking
        assert set(kwargs) == {"modelId", "messages", "additionalModelRequestFields"}

    @pytest.mark.parametrize(
        ("fields", "param"),
        [
            ({"n": 2}, "n"),
            ({"additional_model_request_fields": ["not", "an", "object"]}, "additional_model_request_fields"),
            (
                {"tool_choice": "sometimes", "tools": [{"type": "function", "function": {"name": "f"}}]},
                "tool_choice",
            ),
            ({"tools": [{"type": "code_interpreter"}]}, "tools[0]"),
            (
                {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
                "response_format.json_schema",
            ),
            ({"messages": [{"role": "function", "content": "x", "name": "f"}]}, "messages[0].role"),
            ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
            (
                {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
                "messages[0].content[0].type",
            ),
            (
                {
                    "messages": [
                        {
                            "role": "assistant",
                            "tool_calls": [
                                {
                                    "id": "c",
                                    "type": "function",
                                    "function": {"name": "f", "arguments": "{oops"},
                                }
                            ],
                        }
                    ]
                },
                "messages[0].tool_calls[0].function.arguments",
            ),
        ],
    )
    def test_what_converse_cannot_express_is_a_400_naming_the_field(
        self, fields: dict[str, Any], param: str
    ) -> None:
        with pytest.raises(InvalidRequestError) as refused:
            converse(chat_request(**fields))

        assert refused.value.status == 400
        assert refused.value.param == param


# == Chat response translation ==================================================================


def converse_answer(**fields: Any) -> dict[str, Any]:
    return {
        "ResponseMetadata": {"RequestId": "7f1c-req", "HTTPStatusCode": 200},
        "output": {"message": {"role": "assistant", "content": [{"text": REPLY}]}},
        "stopReason": "end_turn",
        "usage": {"inputTokens": 7, "outputTokens": 5, "totalTokens": 12},
        "metrics": {"latencyMs": 42},
        **fields,
    }


class TestParseConverseResponse:
    def test_a_text_answer(self) -> None:
        result = parse_converse_response(converse_answer(), chat_request())

        completion = result.completion
        assert completion["id"] == "chatcmpl-7f1c-req"  # traceable to Bedrock's request id
        assert (completion["object"], completion["model"]) == ("chat.completion", "brock/claude")
        assert completion["choices"] == [
            {
                "index": 0,
                "message": {"role": "assistant", "content": REPLY},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ]
        assert result.usage == Usage(prompt_tokens=7, completion_tokens=5)
        assert completion["usage"] == PROVIDER_USAGE

    def test_tool_calls_reasoning_and_their_finish_reason(self) -> None:
        content = [
            {"reasoningContent": {"reasoningText": {"text": "The user wants weather.", "signature": "sig"}}},
            {
                "toolUse": {
                    "toolUseId": "tooluse_1",
                    "name": "get_weather",
                    "input": {"city": "Paris", "days": 2},
                }
            },
        ]
        answer = converse_answer(
            output={"message": {"role": "assistant", "content": content}}, stopReason="tool_use"
        )

        message = parse_converse_response(answer, chat_request()).completion["choices"][0]["message"]

        assert message["content"] is None
        assert message["reasoning_content"] == "The user wants weather."
        [call] = message["tool_calls"]
        assert (call["id"], call["type"], call["function"]["name"]) == (
            "tooluse_1",
            "function",
            "get_weather",
        )
        assert json.loads(call["function"]["arguments"]) == {"city": "Paris", "days": 2}
        assert (
            parse_converse_response(answer, chat_request()).completion["choices"][0]["finish_reason"]
            == "tool_calls"
        )

    def test_missing_usage_is_estimated_and_labelled(self) -> None:
        answer = converse_answer()
        del answer["usage"]

        result = parse_converse_response(answer, chat_request())

        assert result.usage == Usage(prompt_tokens=6, completion_tokens=8, source="estimated")
        assert usage_counts(result.completion["usage"]) == ESTIMATED_USAGE

    @pytest.mark.parametrize("output", [None, {}, {"message": {"content": "text"}}, "nope"])
    def test_anything_but_a_message_is_an_upstream_error(self, output: Any) -> None:
        with pytest.raises(UpstreamError):
            parse_converse_response(converse_answer(output=output), chat_request())


@pytest.mark.parametrize(
    ("stop_reason", "expected"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("guardrail_intervened", "content_filter"),
        ("content_filtered", "content_filter"),
        ("malformed_model_output", "stop"),
        (None, "stop"),
    ],
)
def test_stop_reason_mapping(stop_reason: str | None, expected: str) -> None:
    assert finish_reason(stop_reason) == expected


class TestUsage:
    def test_golden_usage_with_prompt_caching(self) -> None:
        usage = usage_from_bedrock(
            {
                "inputTokens": 10,
                "outputTokens": 5,
                "totalTokens": 135,
                "cacheReadInputTokens": 100,
                "cacheWriteInputTokens": 20,
            }
        )

        assert usage == Usage(
            prompt_tokens=130, completion_tokens=5, cached_tokens=100, cache_write_tokens=20
        )
        assert usage is not None and usage.to_openai() == {
            "prompt_tokens": 130,
            "completion_tokens": 5,
            "total_tokens": 135,
            "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 20},
        }

    @pytest.mark.parametrize("value", [None, {}, {"totalTokens": 3}, "12"])
    def test_no_counts_is_no_usage(self, value: Any) -> None:
        assert usage_from_bedrock(value) is None

    def test_nonsense_counts_are_zero(self) -> None:
        assert usage_from_bedrock({"inputTokens": -4, "outputTokens": True}) == Usage(0, 0)


# == Stream translation ==========================================================================


def stream_events(*, usage: dict[str, Any] | None = None, stop: str = "end_turn") -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = [
        {"messageStart": {"role": "assistant"}},
        {"contentBlockDelta": {"delta": {"reasoningContent": {"text": "Hmm."}}, "contentBlockIndex": 0}},
        {"contentBlockDelta": {"delta": {"reasoningContent": {"signature": "sig"}}, "contentBlockIndex": 0}},
        {"contentBlockStop": {"contentBlockIndex": 0}},
        {"contentBlockDelta": {"delta": {"text": "Hello"}, "contentBlockIndex": 1}},
        {"contentBlockDelta": {"delta": {"text": " there."}, "contentBlockIndex": 1}},
        {"contentBlockStop": {"contentBlockIndex": 1}},
        {
            "contentBlockStart": {
                "start": {"toolUse": {"toolUseId": "t1", "name": "f"}},
                "contentBlockIndex": 2,
            }
        },
        {"contentBlockDelta": {"delta": {"toolUse": {"input": '{"a":'}}, "contentBlockIndex": 2}},
        {"contentBlockDelta": {"delta": {"toolUse": {"input": "1}"}}, "contentBlockIndex": 2}},
        {"contentBlockStop": {"contentBlockIndex": 2}},
        {"messageStop": {"stopReason": stop}},
    ]
    if usage is not None:
        events.append({"metadata": {"usage": usage, "metrics": {"latencyMs": 9}}})
    return events


class TestConverseStreamTranslator:
    def test_events_become_openai_chunks_in_order(self) -> None:
        translator = ConverseStreamTranslator(chat_request(stream=True), completion_id="chatcmpl-x")
        usage = {"inputTokens": 3, "outputTokens": 8, "totalTokens": 11, "cacheReadInputTokens": 4}

        chunks = [c for e in stream_events(usage=usage, stop="tool_use") if (c := translator.translate(e))]
        chunks.append(translator.final_chunk())

        deltas = [c["choices"][0]["delta"] for c in chunks[:-1]]
        assert deltas == [
            {"role": "assistant", "content": ""},
            {"reasoning_content": "Hmm."},
            {"content": "Hello"},
            {"content": " there."},
            {
                "tool_calls": [
                    {"index": 0, "id": "t1", "type": "function", "function": {"name": "f", "arguments": ""}}
                ]
            },
            {"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]},
            {"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]},
            {},
        ]
        assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None] * 7 + ["tool_calls"]
        assert translator.finished
        final = chunks[-1]
        assert final["choices"] == []
        assert final["usage"] == {
            "prompt_tokens": 7,
            "completion_tokens": 8,
            "total_tokens": 15,
            "prompt_tokens_details": {"cached_tokens": 4},
        }
        assert USAGE_SOURCE_MARKER not in final
        assert {c["id"] for c in chunks} == {"chatcmpl-x"}
        assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
        assert {c["model"] for c in chunks} == {"brock/claude"}

    def test_a_stream_without_metadata_gets_an_estimate_marked_as_such(self) -> None:
        translator = ConverseStreamTranslator(chat_request(stream=True))
        for event in stream_events(usage=None):
            translator.translate(event)

        final = translator.final_chunk()

        assert final[USAGE_SOURCE_MARKER] == "estimated"
        assert final["usage"]["completion_tokens"] > 0

    def test_a_stream_is_finished_only_by_message_stop(self) -> None:
        translator = ConverseStreamTranslator(chat_request(stream=True))
        for event in stream_events()[:-1]:
            translator.translate(event)

        assert not translator.finished

    def test_the_role_comes_first_even_without_message_start(self) -> None:
        translator = ConverseStreamTranslator(chat_request(stream=True))

        chunk = translator.translate({"contentBlockDelta": {"delta": {"text": "Hi"}, "contentBlockIndex": 0}})

        assert chunk is not None and chunk["choices"][0]["delta"] == {"role": "assistant", "content": "Hi"}


# == Error translation ==========================================================================


def client_error(code: str, message: str = "Something went wrong.", status: int = 400) -> boto.ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return boto.ClientError(response, "Converse")


class TestTranslateBedrockError:
    @pytest.mark.parametrize(
        ("code", "kind", "status", "error_code"),
        [
            ("ThrottlingException", RateLimitError, 429, "upstream_rate_limited"),
            ("ServiceQuotaExceededException", RateLimitError, 429, "upstream_rate_limited"),
            (
                "throttlingException",
                RateLimitError,
                429,
                "upstream_rate_limited",
            ),  # a stream's exception event
            ("AccessDeniedException", UpstreamError, 502, "upstream_auth_failed"),
            ("UnrecognizedClientException", UpstreamError, 502, "upstream_auth_failed"),
            ("ExpiredTokenException", UpstreamError, 502, "upstream_auth_failed"),
            ("ValidationException", UpstreamRejectedError, 400, "upstream_rejected"),
            ("validationException", UpstreamRejectedError, 400, "upstream_rejected"),
            ("ResourceNotFoundException", UpstreamRejectedError, 404, "upstream_rejected"),
            ("ModelTimeoutException", UpstreamTimeoutError, 504, "upstream_timeout"),
            ("ModelNotReadyException", UpstreamError, 502, "upstream_error"),
            ("ServiceUnavailableException", UpstreamError, 502, "upstream_error"),
            ("serviceUnavailableException", UpstreamError, 502, "upstream_error"),
            ("InternalServerException", UpstreamError, 502, "upstream_error"),
            ("internalServerException", UpstreamError, 502, "upstream_error"),
            ("ModelErrorException", UpstreamError, 502, "upstream_error"),
            ("modelStreamErrorException", UpstreamError, 502, "upstream_error"),
            ("SomethingNew", UpstreamError, 502, "upstream_error"),
        ],
    )
    def test_error_code_table(
        self, code: str, kind: type[TollgateError], status: int, error_code: str
    ) -> None:
        error = translate_bedrock_error(client_error(code), "brock")

        assert type(error) is kind
        assert (error.status, error.code) == (status, error_code)

    def test_a_refusal_passes_the_aws_message_on_truncated_and_scrubbed(self) -> None:
        message = "Key AKIAIOSFODNN7EXAMPLE with Signature=abcdef0123 may not do this. " + "x" * 5000

        error = translate_bedrock_error(client_error("ValidationException", message), "brock")

        assert error.message.startswith("Key [redacted] with [redacted] may not do this.")
        assert "AKIA" not in error.message and "abcdef0123" not in error.message
        assert len(error.message) == MESSAGE_LIMIT

    def test_credential_failures_never_blame_the_caller_or_echo_aws_text(self) -> None:
        message = "The security token AKIAIOSFODNN7EXAMPLE included in the request is invalid."

        error = translate_bedrock_error(client_error("UnrecognizedClientException", message, 403), "brock")

        assert (
            error.message
            == "The provider rejected Tollgate's credentials for 'brock' (UnrecognizedClientException)."
        )
        assert "AKIA" not in json.dumps(error.body())

    @pytest.mark.parametrize(
        ("exc", "kind", "status", "error_code"),
        [
            (
                ReadTimeoutError(HTTPConnectionPool("10.1.2.3", 4567), "/model/x", "Read timed out."),
                UpstreamTimeoutError,
                504,
                "upstream_timeout",
            ),
            (
                boto.ReadTimeoutError(endpoint_url="http://10.1.2.3:4567/x"),
                UpstreamTimeoutError,
                504,
                "upstream_timeout",
            ),
            (
                boto.EndpointConnectionError(endpoint_url="http://10.1.2.3:4567/x"),
                UpstreamError,
                502,
                "upstream_unreachable",
            ),
            (
                boto.ConnectTimeoutError(endpoint_url="http://10.1.2.3:4567/x"),
                UpstreamError,
                502,
                "upstream_unreachable",
            ),
            (ProtocolError("Response ended prematurely"), UpstreamError, 502, "upstream_disconnected"),
            (
                boto.ConnectionClosedError(endpoint_url="http://10.1.2.3:4567/x"),
                UpstreamError,
                502,
                "upstream_disconnected",
            ),
            (ChecksumMismatch(1, 2), UpstreamError, 502, "upstream_error"),
            (boto.NoCredentialsError(), UpstreamError, 502, "upstream_auth_failed"),
            (boto.NoRegionError(), ServiceUnavailableError, 503, "upstream_not_configured"),
            (
                boto.ParamValidationError(report="Invalid length for parameter x"),
                InvalidRequestError,
                400,
                "invalid_bedrock_request",
            ),
        ],
    )
    def test_transport_and_configuration_failures(
        self, exc: BaseException, kind: type[TollgateError], status: int, error_code: str
    ) -> None:
        error = translate_bedrock_error(exc, "brock")

        assert type(error) is kind
        assert (error.status, error.code) == (status, error_code)
        assert "10.1.2.3" not in error.message and "4567" not in error.message


# == The event-stream framing of the loopback server ============================================


class TestEventStreamFraming:
    def test_frames_decoded_by_botocore_give_back_the_same_events(self) -> None:
        events: list[tuple[str, dict[str, Any]]] = [
            ("messageStart", {"role": "assistant"}),
            ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Grüße 👋"}}),
            (
                "metadata",
                {
                    "usage": {"inputTokens": 1, "outputTokens": 2, "totalTokens": 3},
                    "metrics": {"latencyMs": 1},
                },
            ),
        ]
        data = b"".join(event_frame(name, payload) for name, payload in events)
        data += exception_frame("throttlingException", {"message": "slow down"})
        # Fed in random slices, as a network would deliver them.
        buffer = EventStreamBuffer()
        rng = random.Random(7)
        decoded: list[Any] = []
        position = 0
        while position < len(data):
            step = rng.randint(1, 40)
            buffer.add_data(data[position : position + step])
            position += step
            decoded.extend(buffer)

        assert [(m.headers[":event-type"], json.loads(m.payload)) for m in decoded[:3]] == events
        assert {m.headers[":message-type"] for m in decoded[:3]} == {"event"}
        assert decoded[3].headers == {
            ":exception-type": "throttlingException",
            ":content-type": "application/json",
            ":message-type": "exception",
        }
        assert json.loads(decoded[3].payload) == {"message": "slow down"}

    def test_the_prelude_and_message_checksums_are_real(self) -> None:
        frame = bytearray(encode_frame({":event-type": "messageStart"}, b'{"role":"assistant"}'))
        total, headers_length = struct.unpack(">II", frame[:8])
        assert (total, headers_length) == (len(frame), 1 + 11 + 3 + 12)

        frame[-6] ^= 0xFF  # one flipped payload byte
        buffer = EventStreamBuffer()
        buffer.add_data(bytes(frame))
        with pytest.raises(ChecksumMismatch):
            next(buffer)


# == The adapter against the loopback Bedrock ====================================================


@dataclass
class Rig:
    upstream: BedrockUpstream
    provider: BedrockProvider

    async def collect(self, request: ChatRequest | None = None) -> list[ChatChunk]:
        stream = self.provider.stream(request or chat_request(stream=True), "anthropic.claude-x")
        return [chunk async for chunk in stream]

    async def collect_into(self, received: list[ChatChunk]) -> None:
        """Like ``collect``, keeping what arrived before a failure."""
        async for chunk in self.provider.stream(chat_request(stream=True), "anthropic.claude-x"):
            received.append(chunk)


@asynccontextmanager
async def rig(
    script: BedrockScript | None = None,
    *,
    read_timeout: float = 5.0,
    access_key_id: str | None = ACCESS_KEY_ID,
) -> AsyncIterator[Rig]:
    async with BedrockUpstream(script=script, access_key_id=access_key_id) as upstream:
        provider = BedrockProvider(
            "brock",
            region="us-east-1",
            endpoint_url=upstream.endpoint_url,
            connect_timeout=2.0,
            read_timeout=read_timeout,
        )
        yield Rig(upstream, provider)


def stream_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == STREAM_THREAD_NAME]


async def no_stream_threads_within(seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while stream_threads():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def test_the_adapter_is_a_provider_with_the_preset_capabilities() -> None:
    provider = BedrockProvider("brock", region="us-east-1", endpoint_url=None)

    assert isinstance(provider, Provider)
    assert provider.name == "brock"
    assert provider.capabilities == {
        Capability.CHAT,
        Capability.STREAM,
        Capability.TOOLS,
        Capability.VISION,
        Capability.JSON_MODE,
        Capability.EMBEDDINGS,
        Capability.IMAGES,
    }


def test_importing_the_adapter_loads_no_aws_sdk() -> None:
    code = "import sys, tollgate.providers.bedrock; print(sorted(m for m in sys.modules if m.startswith(('botocore', 'boto3'))))"

    modules = subprocess.run(  # noqa: S603  # our own interpreter, a fixed snippet
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout

    assert modules.strip() == "[]"


@async_test
async def test_chat() -> None:
    async with rig() as r:
        result = await r.provider.chat(
            chat_request(
                messages=[
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Say hello"},
                ],
                temperature=0.5,
            ),
            "anthropic.claude-x:0",
        )

        assert result.completion["choices"][0]["message"]["content"] == REPLY
        assert result.completion["choices"][0]["finish_reason"] == "stop"
        assert result.completion["id"] == "chatcmpl-req-loopback-0001"
        assert result.completion["model"] == "brock/claude"
        assert result.usage == Usage(prompt_tokens=9, completion_tokens=5)  # 2 system + 2 user words + 5
        [sent] = r.upstream.requests
        assert (sent.operation, sent.model_id) == ("converse", "anthropic.claude-x:0")
        assert sent.json["system"] == [{"text": "Be brief."}]
        assert sent.json["inferenceConfig"] == {"temperature": 0.5}
        # SigV4-signed with the environment's credentials, for the provider's region.
        assert sent.headers["Authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/")
        assert (sent.region, sent.access_key_id) == ("us-east-1", ACCESS_KEY_ID)


@async_test
async def test_the_service_specific_endpoint_variable_is_honoured_without_a_base_url() -> None:
    async with BedrockUpstream() as upstream:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", upstream.endpoint_url)
            provider = BedrockProvider("brock", region="eu-west-3", endpoint_url=None)

            result = await provider.chat(chat_request(), "anthropic.claude-x")

        assert result.completion["choices"][0]["message"]["content"] == REPLY
        assert upstream.requests[0].region == "eu-west-3"


@async_test
async def test_stream_order_termination_and_usage() -> None:
    async with rig() as r:
        chunks = await r.collect()

        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        assert content_of(chunks) == REPLY
        assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
        assert chunks[-1]["choices"] == []
        assert usage_counts(chunks[-1]["usage"]) == PROVIDER_USAGE
        assert USAGE_SOURCE_MARKER not in chunks[-1]
        assert all("usage" not in chunk for chunk in chunks[:-1])
        assert {chunk["model"] for chunk in chunks} == {"brock/claude"}
        assert {chunk["id"] for chunk in chunks} == {"chatcmpl-req-loopback-0002"}
        assert r.upstream.requests[0].operation == "converse-stream"
        assert await no_stream_threads_within(1.0)


@async_test
async def test_finished_streams_leave_their_connection_in_the_pool() -> None:
    async with rig() as r:
        await r.collect()
        await r.collect()
        await r.provider.chat(chat_request(), "anthropic.claude-x")

        assert len({sent.client_port for sent in r.upstream.requests}) == 1


@async_test
async def test_a_stream_with_tool_use_reasoning_and_cache_counts() -> None:
    script = BedrockScript(
        reasoning="Think first.", tool_use=ToolUse(), cache_read_tokens=30, cache_write_tokens=4
    )
    async with rig(script) as r:
        chunks = await r.collect()

        reasoning = "".join(
            c["choices"][0]["delta"].get("reasoning_content") or "" for c in chunks if c["choices"]
        )
        calls = [
            call for c in chunks if c["choices"] for call in c["choices"][0]["delta"].get("tool_calls") or []
        ]
        assert reasoning == "Think first."
        assert content_of(chunks) == REPLY
        assert (calls[0]["id"], calls[0]["function"]["name"]) == ("tooluse_loopback01", "get_weather")
        assert json.loads("".join(call["function"]["arguments"] for call in calls)) == {
            "city": "Paris",
            "unit": "celsius",
        }
        assert {call["index"] for call in calls} == {0}
        assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
        # 7 input + 30 read from the cache + 4 written to it; 5 + 2 words + 10 for the tool call.
        assert chunks[-1]["usage"] == {
            "prompt_tokens": 41,
            "completion_tokens": 17,
            "total_tokens": 58,
            "prompt_tokens_details": {"cached_tokens": 30, "cache_write_tokens": 4},
        }


@async_test
async def test_chat_with_tool_use_and_image_input() -> None:
    async with rig(BedrockScript(reply="", tool_use=ToolUse())) as r:
        content = [
            {"type": "text", "text": "Where is this?"},
            {"type": "image_url", "image_url": {"url": PNG_URL}},
        ]
        tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]

        result = await r.provider.chat(
            chat_request(
                messages=[{"role": "user", "content": content}], tools=tools, tool_choice="required"
            ),
            "anthropic.claude-x",
        )

        message = result.completion["choices"][0]["message"]
        assert message["content"] is None
        assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == {
            "city": "Paris",
            "unit": "celsius",
        }
        assert result.completion["choices"][0]["finish_reason"] == "tool_calls"
        sent = r.upstream.requests[0].json
        # On the wire the image bytes are base64 again, as Bedrock's JSON protocol wants.
        assert sent["messages"][0]["content"][1] == {
            "image": {"format": "png", "source": {"bytes": base64.b64encode(PNG).decode()}}
        }
        assert sent["toolConfig"]["toolChoice"] == {"any": {}}


@async_test
async def test_a_stream_without_metadata_usage_is_estimated_and_marked() -> None:
    async with rig(BedrockScript(omit_usage=True)) as r:
        chunks = await r.collect()

        final = chunks[-1]
        assert final["choices"] == []
        assert final[USAGE_SOURCE_MARKER] == "estimated"
        assert usage_counts(final["usage"]) == ESTIMATED_USAGE


@async_test
async def test_an_exception_event_mid_stream_is_an_upstream_error() -> None:
    async with rig(BedrockScript(exception_after=3)) as r:
        received: list[ChatChunk] = []
        with pytest.raises(UpstreamError) as failure:
            await r.collect_into(received)

        assert (failure.value.status, failure.value.code) == (502, "upstream_error")
        assert "modelStreamErrorException" in failure.value.message
        assert len(received) == 3


@async_test
async def test_a_throttling_exception_event_mid_stream_is_a_rate_limit() -> None:
    async with rig(BedrockScript(exception_after=2, exception="throttlingException")) as r:
        with pytest.raises(RateLimitError):
            await r.collect()


@async_test
async def test_a_stream_that_ends_before_message_stop_is_an_upstream_error() -> None:
    async with rig(BedrockScript(end_after=4)) as r:
        received: list[ChatChunk] = []
        with pytest.raises(UpstreamError, match="ended early"):
            await r.collect_into(received)

        assert len(received) == 4


@async_test
async def test_a_consumer_that_stops_mid_stall_ends_the_streams_thread_at_once() -> None:
    async with rig(BedrockScript(stall_after=2, stall_seconds=30)) as r:
        stream = r.provider.stream(chat_request(stream=True), "anthropic.claude-x")
        first, second = await anext(stream), await anext(stream)  # the two frames before the stall
        assert stream_threads()

        started = time.perf_counter()
        await stream.aclose()  # type: ignore[attr-defined,unused-ignore]  # as a client disconnect does

        assert time.perf_counter() - started < 0.2  # closing never waits for the blocked read
        assert (first["choices"][0]["delta"]["role"], second["choices"][0]["delta"]["content"]) == (
            "assistant",
            "Hello",
        )
        assert await no_stream_threads_within(1.0)  # not after the 5 s read timeout
        r.upstream.script = BedrockScript()
        assert content_of(await r.collect()) == REPLY  # the client still works


@async_test
async def test_streams_waiting_on_bedrock_do_not_hold_the_default_executor() -> None:
    # More silent streams than the default executor has threads (at most 32): DynamoDB reads,
    # which run there, must not queue behind them.
    async with rig(BedrockScript(latency=5)) as r:
        streams = [r.provider.stream(chat_request(stream=True), "anthropic.claude-x") for _ in range(40)]
        waiting = [asyncio.ensure_future(anext(stream)) for stream in streams]
        await asyncio.sleep(0.2)

        started = time.perf_counter()
        assert await asyncio.to_thread(lambda: "free") == "free"
        assert time.perf_counter() - started < 0.5

        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        for stream in streams:
            await stream.aclose()  # type: ignore[attr-defined]


@async_test
async def test_throttling_is_a_429_and_botocore_does_not_retry() -> None:
    async with rig(BedrockScript(fail="ThrottlingException")) as r:
        for call in (r.provider.chat(chat_request(), "anthropic.claude-x"), r.collect()):
            with pytest.raises(RateLimitError) as failure:
                await call
            assert (failure.value.status, failure.value.code) == (429, "upstream_rate_limited")

        assert len(r.upstream.requests) == 2  # one attempt each: Tollgate does its own retries


@async_test
async def test_a_validation_exception_is_a_400_with_bedrocks_message() -> None:
    script = BedrockScript(fail="ValidationException", fail_message="max_tokens: 99999 > 8192, the maximum")
    async with rig(script) as r:
        with pytest.raises(UpstreamRejectedError) as failure:
            await r.collect()

        assert (failure.value.status, failure.value.message) == (400, "max_tokens: 99999 > 8192, the maximum")


@async_test
async def test_credentials_bedrock_refuses_are_a_502_that_does_not_blame_the_caller() -> None:
    async with rig(access_key_id="AKIASOMEONEELSE00001") as r:
        with pytest.raises(UpstreamError) as failure:
            await r.provider.chat(chat_request(), "anthropic.claude-x")
        r.upstream.script = BedrockScript(fail="AccessDeniedException")
        with pytest.raises(UpstreamError) as denied:
            await r.collect()

    for error in (failure.value, denied.value):
        assert (error.status, error.code) == (502, "upstream_auth_failed")
        assert ACCESS_KEY_ID not in json.dumps(error.body())


@async_test
async def test_a_model_bedrock_does_not_know_is_a_404() -> None:
    async with rig(BedrockScript(fail="ResourceNotFoundException", fail_message="Model not found.")) as r:
        with pytest.raises(UpstreamRejectedError) as failure:
            await r.provider.chat(chat_request(), "anthropic.claude-nope")

        assert (failure.value.status, failure.value.message) == (404, "Model not found.")


@async_test
async def test_untranslatable_requests_fail_before_any_network_call() -> None:
    async with rig() as r:
        content = [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]
        with pytest.raises(InvalidRequestError):
            await r.provider.chat(
                chat_request(messages=[{"role": "user", "content": content}]), "anthropic.claude-x"
            )
        with pytest.raises(InvalidRequestError):
            await r.collect(chat_request(stream=True, response_format={"type": "json_object"}))

        assert r.upstream.requests == []


@async_test
async def test_an_unreachable_endpoint_is_a_502_that_hides_the_address() -> None:
    port = dead_port()
    provider = BedrockProvider(
        "brock", region="us-east-1", endpoint_url=f"http://127.0.0.1:{port}", connect_timeout=1
    )

    with pytest.raises(UpstreamError) as failure:
        await provider.chat(chat_request(), "anthropic.claude-x")

    assert (failure.value.status, failure.value.code) == (502, "upstream_unreachable")
    assert str(port) not in failure.value.message


@async_test
async def test_a_metadata_endpoint_is_refused_before_connecting() -> None:
    provider = BedrockProvider("brock", region="us-east-1", endpoint_url="http://169.254.169.254/")

    with pytest.raises(UpstreamError) as failure:
        await provider.chat(chat_request(), "anthropic.claude-x")

    assert failure.value.code == "upstream_address_forbidden"


@async_test
async def test_no_region_anywhere_is_a_configuration_error() -> None:
    with pytest.MonkeyPatch.context() as env:
        env.delenv("AWS_REGION", raising=False)
        env.delenv("AWS_DEFAULT_REGION", raising=False)
        provider = BedrockProvider("brock", region=None, endpoint_url=None)

        with pytest.raises(ServiceUnavailableError, match="no AWS region"):
            await provider.chat(chat_request(), "anthropic.claude-x")


# -- Embeddings and images ------------------------------------------------------------------------


class TestEmbeddingAndImageTranslation:
    def test_titan_takes_one_text_per_call(self) -> None:
        request = EmbeddingRequest(model="brock/titan", input=["one", "two"], dimensions=256)

        assert embedding_bodies(request, "amazon.titan-embed-text-v2:0") == [
            {"inputText": "one", "dimensions": 256, "normalize": True},
            {"inputText": "two", "dimensions": 256, "normalize": True},
        ]
        assert embedding_bodies(EmbeddingRequest(model="m", input="x"), "amazon.titan-embed-text-v1") == [
            {"inputText": "x"}
        ]

    def test_cohere_takes_up_to_96_texts_per_call(self) -> None:
        request = EmbeddingRequest(
            model="m", input=[f"text {i}" for i in range(100)], input_type="search_query"
        )

        bodies = embedding_bodies(request, "us.cohere.embed-english-v3")

        assert [len(body["texts"]) for body in bodies] == [96, 4]
        assert {body["input_type"] for body in bodies} == {"search_query"}
        assert embedding_bodies(EmbeddingRequest(model="m", input="x"), "cohere.embed-v4:0") == [
            {"texts": ["x"], "input_type": "search_document"}
        ]

    @pytest.mark.parametrize(
        ("model", "value", "param"),
        [("amazon.titan-embed-text-v2:0", [1, 2, 3], "input"), ("meta.llama3-8b", "x", "model")],
    )
    def test_what_bedrock_cannot_embed_is_a_400(self, model: str, value: Any, param: str) -> None:
        with pytest.raises(InvalidRequestError) as refused:
            embedding_bodies(EmbeddingRequest(model="m", input=value), model)

        assert refused.value.param == param

    def test_base64_encoding_is_little_endian_float32(self) -> None:
        request = EmbeddingRequest(model="brock/titan", input="a b", encoding_format="base64")

        result = parse_embedding_answers(
            [({"embedding": [0.5, -1.25], "inputTextTokenCount": 2}, {})],
            request,
            "amazon.titan-embed-text-v2:0",
        )

        encoded = result.body["data"][0]["embedding"]
        assert struct.unpack("<2f", base64.b64decode(encoded)) == (0.5, -1.25)
        assert result.usage == Usage(prompt_tokens=2, completion_tokens=0)

    def test_cohere_usage_comes_from_bedrocks_header_or_is_estimated(self) -> None:
        request = EmbeddingRequest(model="m", input=["hello world"])
        answer = {"embeddings": {"float": [[0.1, 0.2]]}}

        counted = parse_embedding_answers(
            [(answer, {"x-amzn-bedrock-input-token-count": "4"})], request, "cohere.embed-v4:0"
        )
        estimated = parse_embedding_answers([(answer, {})], request, "cohere.embed-v4:0")

        assert counted.usage == Usage(prompt_tokens=4, completion_tokens=0)
        assert estimated.usage == Usage(prompt_tokens=3, completion_tokens=0, source="estimated")
        assert estimated.body["data"][0]["embedding"] == [0.1, 0.2]

    @pytest.mark.parametrize(
        ("size", "width", "height"), [(None, 1024, 1024), ("auto", 1024, 1024), ("512x768", 512, 768)]
    )
    def test_image_body(self, size: str | None, width: int, height: int) -> None:
        request = ImageRequest(
            model="brock/canvas", prompt="a red fox", n=2, size=size, quality="hd", negative_prompt="blur"
        )

        assert build_image_body(request, "amazon.nova-canvas-v1:0") == {
            "taskType": "TEXT_IMAGE",
            "textToImageParams": {"text": "a red fox", "negativeText": "blur"},
            "imageGenerationConfig": {
                "numberOfImages": 2,
                "width": width,
                "height": height,
                "quality": "premium",
            },
        }

    @pytest.mark.parametrize(
        ("fields", "model", "param"),
        [
            ({"size": "big"}, "amazon.nova-canvas-v1:0", "size"),
            ({"size": "1024x0"}, "amazon.nova-canvas-v1:0", "size"),
            ({"size": "8192x8192"}, "amazon.titan-image-generator-v2:0", "size"),
            ({"response_format": "url"}, "amazon.nova-canvas-v1:0", "response_format"),
            ({"quality": "ultra"}, "amazon.nova-canvas-v1:0", "quality"),
            ({}, "stability.sd3-large-v1:0", "model"),
        ],
    )
    def test_image_requests_bedrock_cannot_serve_are_a_400(
        self, fields: dict[str, Any], model: str, param: str
    ) -> None:
        with pytest.raises(InvalidRequestError) as refused:
            build_image_body(ImageRequest(model="m", prompt="x", **fields), model)

        assert refused.value.param == param

    def test_image_answers(self) -> None:
        result = parse_image_answer({"images": ["aGk=", "aG8="], "error": None})

        assert result.images == 2
        assert result.body["data"] == [{"b64_json": "aGk="}, {"b64_json": "aG8="}]
        with pytest.raises(UpstreamRejectedError) as refused:
            parse_image_answer(
                {"images": [], "error": "This request has been blocked by our content filters."}
            )
        assert (refused.value.status, refused.value.code) == (400, "content_filter")
        with pytest.raises(UpstreamError):
            parse_image_answer({"images": []})


@async_test
async def test_titan_embeddings() -> None:
    async with rig() as r:
        request = EmbeddingRequest(
            model="brock/titan", input=["two words", "three more words"], dimensions=256
        )

        result = await r.provider.embed(request, "amazon.titan-embed-text-v2:0")

        assert [item["index"] for item in result.body["data"]] == [0, 1]
        assert result.body["data"][0]["embedding"] == BedrockUpstream.vector("two words", 256)
        assert result.body["data"][1]["embedding"] == BedrockUpstream.vector("three more words", 256)
        assert result.body["model"] == "brock/titan"
        assert result.usage == Usage(prompt_tokens=5, completion_tokens=0)
        assert result.body["usage"] == {"prompt_tokens": 5, "total_tokens": 5}
        assert [
            sent.json["inputText"]
            for sent in sorted(r.upstream.requests, key=lambda s: len(s.json["inputText"]))
        ] == [
            "two words",
            "three more words",
        ]
        assert {(sent.operation, sent.model_id) for sent in r.upstream.requests} == {
            ("invoke", "amazon.titan-embed-text-v2:0")
        }


@async_test
async def test_cohere_embeddings_in_one_call() -> None:
    async with rig() as r:
        request = EmbeddingRequest(model="brock/cohere", input=["two words", "three more words"])

        result = await r.provider.embed(request, "cohere.embed-english-v3")

        assert [item["embedding"] for item in result.body["data"]] == [
            BedrockUpstream.vector("two words", 8),
            BedrockUpstream.vector("three more words", 8),
        ]
        assert result.usage == Usage(prompt_tokens=5, completion_tokens=0)
        [sent] = r.upstream.requests
        assert sent.json == {"texts": ["two words", "three more words"], "input_type": "search_document"}

        r.upstream.script = BedrockScript(token_count_headers=False)
        estimated = await r.provider.embed(request, "cohere.embed-english-v3")
        assert estimated.usage.source == "estimated"


@async_test
async def test_nova_canvas_images() -> None:
    async with rig() as r:
        result = await r.provider.image(
            ImageRequest(model="brock/canvas", prompt="a red fox", n=2, size="512x512"),
            "amazon.nova-canvas-v1:0",
        )

        assert result.images == 2
        assert result.usage is None
        for item in result.body["data"]:
            assert base64.b64decode(item["b64_json"]).startswith(b"\x89PNG\r\n\x1a\n")
        [sent] = r.upstream.requests
        assert sent.json["imageGenerationConfig"] == {"numberOfImages": 2, "width": 512, "height": 512}


@async_test
async def test_embeddings_and_images_errors_are_translated_like_chat() -> None:
    async with rig(BedrockScript(fail="ThrottlingException")) as r:
        with pytest.raises(RateLimitError):
            await r.provider.embed(
                EmbeddingRequest(model="m", input=["a", "b"]), "amazon.titan-embed-text-v2:0"
            )
        r.upstream.script = BedrockScript(fail="ValidationException", fail_message="numberOfImages too large")
        with pytest.raises(UpstreamRejectedError, match="numberOfImages too large"):
            await r.provider.image(ImageRequest(model="m", prompt="x", n=9), "amazon.nova-canvas-v1:0")


@pytest.fixture(scope="module")
def threaded_upstream() -> Iterator[BedrockUpstream]:
    with BedrockUpstream.in_thread() as upstream:
        yield upstream


def test_the_threaded_server_serves_a_plain_boto3_client(threaded_upstream: BedrockUpstream) -> None:
    import boto3

    client = boto3.client(
        "bedrock-runtime", region_name="us-east-1", endpoint_url=threaded_upstream.endpoint_url
    )

    answer = client.converse(
        modelId="amazon.nova-lite-v1:0", messages=[{"role": "user", "content": [{"text": "hi"}]}]
    )
    events = list(
        client.converse_stream(
            modelId="amazon.nova-lite-v1:0", messages=[{"role": "user", "content": [{"text": "hi"}]}]
        )["stream"]
    )

    assert answer["output"]["message"]["content"] == [{"text": REPLY}]
    assert [next(iter(event)) for event in events][:2] == ["messageStart", "contentBlockDelta"]
    assert [next(iter(event)) for event in events][-2:] == ["messageStop", "metadata"]
    with pytest.raises(boto.ClientError) as unsigned:
        boto3.client(
            "bedrock-runtime",
            region_name="us-east-1",
            endpoint_url=threaded_upstream.endpoint_url,
            config=Config(signature_version=UNSIGNED),
        ).converse(modelId="m", messages=[{"role": "user", "content": [{"text": "hi"}]}])
    assert unsigned.value.response["Error"]["Code"] == "MissingAuthenticationTokenException"
