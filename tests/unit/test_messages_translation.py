"""The Anthropic-compatible API's translation (tollgate.messages): Messages requests into chat
requests, chat completions and chunks back into Anthropic messages and events, checked against the
``anthropic`` SDK's own types; and round trips through the Anthropic adapter, as properties."""

from __future__ import annotations

import copy
import json
from typing import Any

import anthropic.types
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from tollgate.errors import (
    InsufficientCreditsError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitError,
    TollgateError,
    UpstreamError,
    UpstreamRejectedError,
    UpstreamTimeoutError,
)
from tollgate.messages import (
    AnthropicStreamEncoder,
    MessagesRequest,
    anthropic_error_body,
    completion_to_message,
    messages_to_chat,
)
from tollgate.providers.anthropic import AnthropicStreamTranslator, build_messages_body, parse_message
from tollgate.providers.base import Usage
from tollgate.schemas.openai import ChatChunk
from tollgate.sse import SSEDecoder

STREAM_EVENT: TypeAdapter[Any] = TypeAdapter(anthropic.types.RawMessageStreamEvent)
CACHE = {"type": "ephemeral"}
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def request(**fields: Any) -> MessagesRequest:
    body = {
        "model": "team/claude",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": "Hi"}],
        **fields,
    }
    return MessagesRequest.model_validate(body)


def chat_body(**fields: Any) -> dict[str, Any]:
    return messages_to_chat(request(**fields)).model_dump(exclude_none=True)


# == Messages request -> chat request ==========================================================


class TestMessagesToChat:
    def test_a_plain_request(self) -> None:
        assert chat_body(system="Be brief.", temperature=0.2, top_p=0.9) == {
            "model": "team/claude",
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
            "max_tokens": 256,
            "stream": False,
            "temperature": 0.2,
            "top_p": 0.9,
        }

    def test_a_stream_always_asks_for_usage(self) -> None:
        body = chat_body(stream=True)

        assert body["stream"] is True
        assert body["stream_options"] == {"include_usage": True}

    def test_anthropic_parameters_map_to_their_openai_names_or_ride_along(self) -> None:
        thinking = {"type": "enabled", "budget_tokens": 1024}

        body = chat_body(
            stop_sequences=["END", "STOP"],
            metadata={"user_id": "u-7"},
            top_k=20,
            thinking=thinking,
            service_tier="auto",
        )

        assert body["stop"] == ["END", "STOP"]
        assert body["user"] == "u-7"
        assert body["top_k"] == 20
        assert body["thinking"] == thinking
        assert "service_tier" not in body and "metadata" not in body  # not translated, not passed on

    def test_system_blocks_keep_their_cache_control(self) -> None:
        body = chat_body(
            system=[
                {"type": "text", "text": "Long"},
                {"type": "text", "text": "rules", "cache_control": CACHE},
            ]
        )

        assert body["messages"][0] == {
            "role": "system",
            "content": [
                {"type": "text", "text": "Long"},
                {"type": "text", "text": "rules", "cache_control": CACHE},
            ],
        }

    def test_user_blocks_become_parts_and_tool_results_become_tool_messages_first(self) -> None:
        content = [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
            {
                "type": "tool_result",
                "tool_use_id": "toolu_2",
                "content": [{"type": "text", "text": "boom"}],
                "is_error": True,
                "cache_control": CACHE,
            },
            {"type": "text", "text": "And now?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
            {
                "type": "document",
                "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"},
                "title": "a.pdf",
            },
        ]

        messages = chat_body(messages=[{"role": "user", "content": content}])["messages"]

        assert messages == [
            {"role": "tool", "content": "18C", "tool_call_id": "toolu_1"},
            {
                "role": "tool",
                "content": "boom",
                "tool_call_id": "toolu_2",
                "is_error": True,
                "cache_control": CACHE,
            },
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "And now?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                    {
                        "type": "file",
                        "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"},
                    },
                ],
            },
        ]

    def test_assistant_blocks_become_content_tool_calls_and_thinking_blocks(self) -> None:
        signed = {"type": "thinking", "thinking": "Hmm.", "signature": "sig"}
        content = [
            signed,
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
        ]

        [_, assistant] = chat_body(
            messages=[{"role": "user", "content": "Weather?"}, {"role": "assistant", "content": content}]
        )["messages"]

        assert assistant == {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
            "thinking_blocks": [signed],
        }

    @pytest.mark.parametrize(
        ("tool_choice", "expected", "parallel"),
        [
            ({"type": "auto"}, "auto", None),
            ({"type": "any"}, "required", None),
            ({"type": "none"}, "none", None),
            (
                {"type": "tool", "name": "get_weather"},
                {"type": "function", "function": {"name": "get_weather"}},
                None,
            ),
            ({"type": "auto", "disable_parallel_tool_use": True}, "auto", False),
        ],
    )
    def test_tools_and_tool_choice(
        self, tool_choice: dict[str, Any], expected: Any, parallel: bool | None
    ) -> None:
        body = chat_body(tools=[{**WEATHER, "cache_control": CACHE}], tool_choice=tool_choice)

        assert body["tools"] == [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "parameters": WEATHER["input_schema"],
                    "description": "The weather in a city",
                },
                "cache_control": CACHE,
            }
        ]
        assert body["tool_choice"] == expected
        assert body.get("parallel_tool_calls") == parallel

    @pytest.mark.parametrize(
        ("fields", "param"),
        [
            ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.0.type"),
            ({"tools": [{"name": "x"}]}, "tools.0.input_schema"),
            ({"tool_choice": {"type": "sometimes"}}, "tool_choice"),
            ({"system": [{"type": "image", "source": {}}]}, "system.0.type"),
            (
                {"messages": [{"role": "user", "content": [{"type": "search_result"}]}]},
                "messages.0.content.0.type",
            ),
            (
                {
                    "messages": [
                        {
                            "role": "user",
                            "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}],
                        }
                    ]
                },
                "messages.0.content.0.source.type",
            ),
            (
                {
                    "messages": [
                        {"role": "user", "content": [{"type": "image", "source": {"type": "base64"}}]}
                    ]
                },
                "messages.0.content.0.source",
            ),
            ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages.0.content.0.text"),
            (
                {"messages": [{"role": "user", "content": [{"type": "tool_result"}]}]},
                "messages.0.content.0.tool_use_id",
            ),
            (
                {
                    "messages": [
                        {
                            "role": "assistant",
                            "content": [{"type": "tool_use", "id": "t", "name": "f", "input": [1]}],
                        }
                    ]
                },
                "messages.0.content.0.input",
            ),
            (
                {"messages": [{"role": "assistant", "content": [{"type": "server_tool_use"}]}]},
                "messages.0.content.0.type",
            ),
        ],
    )
    def test_what_cannot_be_translated_is_a_400_naming_the_param(
        self, fields: dict[str, Any], param: str
    ) -> None:
        with pytest.raises(InvalidRequestError) as refused:
            messages_to_chat(request(**fields))

        assert refused.value.param == param


# == chat.completion -> Anthropic message =======================================================


def completion(message: dict[str, Any], finish_reason: str = "stop", **usage_extras: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-abc",
        "object": "chat.completion",
        "created": 1,
        "model": "team/claude",
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 130, "completion_tokens": 9, "total_tokens": 139, **usage_extras},
    }


USAGE = Usage(prompt_tokens=130, completion_tokens=9, cached_tokens=100, cache_write_tokens=20)


class TestCompletionToMessage:
    def test_a_text_answer_is_a_valid_anthropic_message(self) -> None:
        message = completion_to_message(
            completion({"role": "assistant", "content": "Hello!"}, cost="0.000123", currency="USD"),
            USAGE,
            "team/claude",
        )

        assert message == {
            "id": "msg_chatcmpl-abc",
            "type": "message",
            "role": "assistant",
            "model": "team/claude",
            "content": [{"type": "text", "text": "Hello!"}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": 10,  # Anthropic counts cache reads and writes apart
                "output_tokens": 9,
                "cache_creation_input_tokens": 20,
                "cache_read_input_tokens": 100,
                "cost": "0.000123",
                "currency": "USD",
            },
        }
        anthropic.types.Message.model_validate(message)

    def test_tool_calls_become_tool_use_blocks(self) -> None:
        calls = [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            },
            {"id": "call_2", "type": "function", "function": {"name": "ping", "arguments": ""}},
            {
                "id": "call_3",
                "type": "function",
                "function": {"name": "broken", "arguments": '{"unterminated'},
            },
        ]

        message = completion_to_message(
            completion({"role": "assistant", "content": None, "tool_calls": calls}, "tool_calls"), USAGE, "m"
        )

        assert message["stop_reason"] == "tool_use"
        assert message["content"] == [
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "ping", "input": {}},
            {
                "type": "tool_use",
                "id": "call_3",
                "name": "broken",
                "input": {"_raw_arguments": '{"unterminated'},
            },
        ]
        anthropic.types.Message.model_validate(message)

    def test_reasoning_becomes_thinking_first_signed_blocks_preferred(self) -> None:
        signed = [
            {"type": "thinking", "thinking": "Hmm.", "signature": "sig"},
            {"type": "redacted_thinking", "data": "x"},
        ]
        with_blocks = {
            "role": "assistant",
            "content": "42",
            "reasoning_content": "Hmm.",
            "thinking_blocks": signed,
        }
        reasoning_only = {"role": "assistant", "content": "42", "reasoning_content": "Hmm."}

        assert completion_to_message(completion(with_blocks), USAGE, "m")["content"] == [
            *signed,
            {"type": "text", "text": "42"},
        ]
        assert completion_to_message(completion(reasoning_only), USAGE, "m")["content"] == [
            {"type": "thinking", "thinking": "Hmm.", "signature": ""},
            {"type": "text", "text": "42"},
        ]

    @pytest.mark.parametrize(
        ("finish_reason", "stop_reason"),
        [
            ("stop", "end_turn"),
            ("length", "max_tokens"),
            ("tool_calls", "tool_use"),
            ("content_filter", "refusal"),
            ("odd", "end_turn"),
        ],
    )
    def test_stop_reasons(self, finish_reason: str, stop_reason: str) -> None:
        message = completion_to_message(
            completion({"role": "assistant", "content": "x"}, finish_reason), USAGE, "m"
        )

        assert message["stop_reason"] == stop_reason


@pytest.mark.parametrize(
    ("error", "status", "type_"),
    [
        (InvalidRequestError("bad"), 400, "invalid_request_error"),
        (InsufficientCreditsError("broke"), 402, "billing_error"),
        (NotFoundError("gone"), 404, "not_found_error"),
        (PayloadTooLargeError("big"), 413, "request_too_large"),
        (RateLimitError("slow down", retry_after=3), 429, "rate_limit_error"),
        (UpstreamRejectedError("no", status=422), 422, "invalid_request_error"),
        (UpstreamError("down"), 502, "api_error"),
        (UpstreamTimeoutError("slow"), 504, "timeout_error"),
        (TollgateError("oops"), 500, "api_error"),
    ],
)
def test_errors_in_anthropics_shape(error: TollgateError, status: int, type_: str) -> None:
    body = anthropic_error_body(error)

    assert error.status == status
    assert body == {"type": "error", "error": {"type": type_, "message": error.message}}
    if type_ != "request_too_large":  # documented by Anthropic, but not (yet) a type of the SDK's
        anthropic.types.ErrorResponse.model_validate({**body, "request_id": None})


# == chunks -> Anthropic SSE ====================================================================


def events_of(stream: bytes) -> list[tuple[str, dict[str, Any]]]:
    """The named events of an Anthropic stream; every one must be valid for the SDK."""
    decoder = SSEDecoder()
    events = []
    for event in [*decoder.feed(stream), *decoder.close()]:
        payload = json.loads(event.data)
        assert event.event == payload["type"]
        STREAM_EVENT.validate_python(payload)
        events.append((event.event, payload))
    return events


def accumulate(events: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The final message a client builds from the events, checking the order Anthropic guarantees:
    message_start first; blocks opened in index order, added to only while open; message_stop last."""
    assert events[0][0] == "message_start" and events[-1][0] == "message_stop"
    message: dict[str, Any] = copy.deepcopy(events[0][1]["message"])
    open_blocks: set[int] = set()
    json_parts: dict[int, str] = {}
    for name, payload in events[1:-1]:
        if name == "content_block_start":
            assert payload["index"] == len(message["content"])
            message["content"].append(dict(payload["content_block"]))
            open_blocks.add(payload["index"])
        elif name == "content_block_delta":
            assert payload["index"] in open_blocks
            block, delta = message["content"][payload["index"]], payload["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "input_json_delta":
                json_parts[payload["index"]] = json_parts.get(payload["index"], "") + delta["partial_json"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif delta["type"] == "signature_delta":
                block["signature"] = delta["signature"]
        elif name == "content_block_stop":
            open_blocks.remove(payload["index"])
            block = message["content"][payload["index"]]
            if block["type"] == "tool_use":
                block["input"] = json.loads(json_parts.get(payload["index"]) or "{}")
        elif name == "message_delta":
            message.update(payload["delta"])
            message["usage"].update(payload["usage"])
        else:
            assert name == "ping", name
    assert not open_blocks
    anthropic.types.Message.model_validate(message)
    return message


def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> ChatChunk:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


def usage_chunk(usage: Usage, **extras: Any) -> ChatChunk:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [],
        "usage": {**usage.to_openai(), **extras},
    }


def encode(chunks: list[ChatChunk], usage: Usage, *, input_estimate: int = 7) -> bytes:
    """What ChatCall sends through an encoder: every chunk (the usage chunk too), then finish."""
    encoder = AnthropicStreamEncoder("team/claude", input_tokens=input_estimate)
    return b"".join(encoder.chunk(c) or b"" for c in chunks) + encoder.finish(usage)


class TestAnthropicStreamEncoder:
    def test_text_stream_with_the_estimate_first_and_the_real_usage_last(self) -> None:
        usage = Usage(prompt_tokens=30, completion_tokens=3, cached_tokens=10)
        stream = encode(
            [
                chunk({"role": "assistant", "content": ""}),
                chunk({"content": "Hel"}),
                chunk({"content": "lo"}),
                chunk({}, "stop"),
                usage_chunk(usage, cost="0.01"),
            ],
            usage,
        )

        events = events_of(stream)
        assert [name for name, _ in events] == [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
        assert events[0][1]["message"]["usage"]["input_tokens"] == 7
        message = accumulate(events)
        assert message["content"] == [{"type": "text", "text": "Hello"}]
        assert message["stop_reason"] == "end_turn"
        assert message["id"] == "msg_chatcmpl-1"
        assert message["usage"] == {
            "input_tokens": 20,
            "output_tokens": 3,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 10,
            "cost": "0.01",
        }

    def test_thinking_then_text_then_tool_calls_each_get_their_block(self) -> None:
        chunks = [
            chunk({"role": "assistant", "content": ""}),
            chunk({"reasoning_content": "Let me "}),
            chunk({"reasoning_content": "see."}),
            chunk({"thinking_blocks": [{"type": "thinking", "thinking": "", "signature": "sig-1"}]}),
            chunk({"thinking_blocks": [{"type": "redacted_thinking", "data": "opaque"}]}),
            chunk({"content": "Checking."}),
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_a",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": ""},
                        }
                    ]
                }
            ),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": 1,
                            "id": "call_b",
                            "type": "function",
                            "function": {"name": "ping", "arguments": "{}"},
                        }
                    ]
                }
            ),
            chunk({}, "tool_calls"),
        ]

        message = accumulate(events_of(encode(chunks, Usage(prompt_tokens=5, completion_tokens=20))))

        assert message["content"] == [
            {"type": "thinking", "thinking": "Let me see.", "signature": "sig-1"},
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_b", "name": "ping", "input": {}},
        ]
        assert message["stop_reason"] == "tool_use"

    def test_a_stream_without_a_finish_chunk_still_closes_its_block(self) -> None:
        usage = Usage(prompt_tokens=4, completion_tokens=1)

        message = accumulate(events_of(encode([chunk({"content": "Hi"}), usage_chunk(usage)], usage)))

        assert message["content"] == [{"type": "text", "text": "Hi"}]
        assert message["stop_reason"] == "end_turn"

    def test_a_signature_ends_its_thinking_block(self) -> None:
        chunks = [
            chunk({"reasoning_content": "First."}),
            chunk({"thinking_blocks": [{"type": "thinking", "thinking": "", "signature": "sig-1"}]}),
            chunk({"reasoning_content": "Second."}),
            chunk({"thinking_blocks": [{"type": "thinking", "thinking": "", "signature": "sig-2"}]}),
            chunk({}, "stop"),
        ]

        message = accumulate(events_of(encode(chunks, Usage(prompt_tokens=1, completion_tokens=2))))

        assert message["content"] == [
            {"type": "thinking", "thinking": "First.", "signature": "sig-1"},
            {"type": "thinking", "thinking": "Second.", "signature": "sig-2"},
        ]

    def test_a_stream_with_no_content_is_still_well_formed(self) -> None:
        usage = Usage(prompt_tokens=4, completion_tokens=0)

        message = accumulate(events_of(encode([usage_chunk(usage)], usage)))

        assert message["content"] == []
        assert message["usage"]["input_tokens"] == 4

    def test_a_late_error_is_an_error_event_in_anthropics_shape(self) -> None:
        encoder = AnthropicStreamEncoder("m", input_tokens=1)
        encoder.chunk(chunk({"content": "Part"}))

        closing = encoder.error(UpstreamError("The provider 'claude' failed mid-stream: Overloaded"))

        assert closing == (
            b"event: error\n"
            b'data: {"type":"error","error":{"type":"api_error","message":"The provider \'claude\' failed mid-stream: Overloaded"}}\n\n'
        )


# == Round trips, as properties =================================================================

text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=24)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(text, children, max_size=3),
    max_leaves=8,
)
tool_inputs = st.dictionaries(text, json_values, max_size=4)
tool_names = st.from_regex(r"[a-zA-Z][a-zA-Z0-9_-]{0,20}", fullmatch=True)
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def conversations(draw: st.DrawFn) -> tuple[Any, list[dict[str, Any]]]:
    """An optional system prompt and alternating user/assistant turns, as strings or text blocks."""
    system = draw(
        st.none()
        | text
        | st.lists(text, min_size=1, max_size=3).map(lambda ts: [{"type": "text", "text": t} for t in ts])
    )
    turns = []
    for position in range(draw(st.integers(1, 5))):
        role = "user" if position % 2 == 0 else "assistant"
        content = draw(
            text
            | st.lists(text, min_size=1, max_size=3).map(lambda ts: [{"type": "text", "text": t} for t in ts])
        )
        turns.append({"role": role, "content": content})
    return system, turns


def texts(content: Any) -> list[str]:
    return [content] if isinstance(content, str) else [block["text"] for block in content]


@FAST
@given(conversations())
def test_requests_keep_roles_and_text_through_openai_and_back(
    conversation: tuple[Any, list[dict[str, Any]]],
) -> None:
    system, turns = conversation
    original = request(system=system, messages=turns)

    body = build_messages_body(messages_to_chat(original), "claude-up", stream=False)

    assert [turn["role"] for turn in body["messages"]] == [turn["role"] for turn in turns]
    assert [texts(turn["content"]) for turn in body["messages"]] == [texts(turn["content"]) for turn in turns]
    assert texts(body.get("system") or []) == (texts(system) if system else [])
    assert body["max_tokens"] == 256


@st.composite
def answers(draw: st.DrawFn) -> tuple[list[str], list[tuple[str, str, dict[str, Any]]], dict[str, int]]:
    pieces = draw(st.lists(text, max_size=5))
    tools = draw(
        st.lists(
            st.tuples(st.uuids().map(lambda u: f"toolu_{u.hex[:20]}"), tool_names, tool_inputs), max_size=3
        )
    )
    usage = draw(
        st.fixed_dictionaries(
            {
                key: st.integers(0, 10**6)
                for key in (
                    "input_tokens",
                    "output_tokens",
                    "cache_read_input_tokens",
                    "cache_creation_input_tokens",
                )
            }
        )
    )
    return pieces, tools, usage


def anthropic_events(
    pieces: list[str], tools: list[tuple[str, str, dict[str, Any]]], usage: dict[str, int], split: int
) -> list[dict[str, Any]]:
    """An Anthropic stream of one text block and the tool uses, tool input split every ``split`` characters."""
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {"id": "msg_p", "usage": {**usage, "output_tokens": 1}}}
    ]
    index = 0
    if pieces:
        events.append(
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
        )
        events += [
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}}
            for p in pieces
        ]
        events.append({"type": "content_block_stop", "index": 0})
        index = 1
    for offset, (tool_id, name, tool_input) in enumerate(tools):
        block = index + offset
        events.append(
            {
                "type": "content_block_start",
                "index": block,
                "content_block": {"type": "tool_use", "id": tool_id, "name": name, "input": {}},
            }
        )
        encoded = json.dumps(tool_input)
        events += [
            {
                "type": "content_block_delta",
                "index": block,
                "delta": {"type": "input_json_delta", "partial_json": encoded[i : i + split]},
            }
            for i in range(0, len(encoded), split)
        ]
        events.append({"type": "content_block_stop", "index": block})
    stop_reason = "tool_use" if tools else "end_turn"
    events.append(
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason},
            "usage": {"output_tokens": usage["output_tokens"]},
        }
    )
    events.append({"type": "message_stop"})
    return events


@FAST
@given(answers(), st.integers(1, 9))
def test_streams_keep_text_tools_and_usage_from_anthropic_through_openai_to_anthropic(
    answer: tuple[list[str], list[tuple[str, str, dict[str, Any]]], dict[str, int]], split: int
) -> None:
    pieces, tools, usage = answer
    chat = messages_to_chat(request(stream=True))
    translator = AnthropicStreamTranslator("team/claude", chat)

    chunks = [
        c
        for event in anthropic_events(pieces, tools, usage, split)
        if (c := translator.feed(event)) is not None
    ]
    final = translator.usage_chunk()
    message = accumulate(events_of(encode([*chunks, final], Usage.from_openai(final["usage"]))))

    expected: list[dict[str, Any]] = [{"type": "text", "text": "".join(pieces)}] if pieces else []
    expected += [{"type": "tool_use", "id": i, "name": n, "input": tool_input} for i, n, tool_input in tools]
    assert message["content"] == expected
    assert message["stop_reason"] == ("tool_use" if tools else "end_turn")
    assert {key: message["usage"][key] for key in usage} == usage


@FAST
@given(answers())
def test_messages_keep_text_tools_and_usage_from_anthropic_through_openai_to_anthropic(
    answer: tuple[list[str], list[tuple[str, str, dict[str, Any]]], dict[str, int]],
) -> None:
    pieces, tools, usage = answer
    content: list[dict[str, Any]] = [{"type": "text", "text": "".join(pieces)}] if pieces else []
    content += [{"type": "tool_use", "id": i, "name": n, "input": tool_input} for i, n, tool_input in tools]
    body = {
        "id": "msg_r",
        "type": "message",
        "content": content,
        "stop_reason": "tool_use" if tools else "end_turn",
        "usage": usage,
    }

    result = parse_message(body, "team/claude", messages_to_chat(request()))
    message = completion_to_message(result.completion, result.usage, "team/claude")

    assert message["content"] == content
    assert message["stop_reason"] == body["stop_reason"]
    assert {key: message["usage"][key] for key in usage} == usage
    assert message["id"] == "msg_r"
