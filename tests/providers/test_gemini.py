"""The Gemini adapter: its pure translation, then the adapter against a real HTTP server on
loopback that speaks the Gemini API (tests/support/gemini_upstream.py)."""

from __future__ import annotations

import array
import asyncio
import base64
import functools
import itertools
import json
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, ParamSpec

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.gemini_upstream import GeminiScript, GeminiUpstream
from tollgate.errors import (
    InvalidRequestError,
    RateLimitError,
    TollgateError,
    UpstreamError,
    UpstreamRejectedError,
    UpstreamTimeoutError,
)
from tollgate.providers.base import USAGE_SOURCE_MARKER, Capability, Provider, Usage
from tollgate.providers.factory import build_adapter
from tollgate.providers.gemini import (
    EMBED_BATCH_LIMIT,
    GEMINI_IMAGE_ASPECT_RATIOS,
    IMAGEN_ASPECT_RATIOS,
    GeminiProvider,
    GeminiStreamTranslator,
    aspect_ratio_for,
    build_embed_body,
    build_generate_body,
    build_image_generate_body,
    build_imagen_body,
    convert_schema,
    embedding_result,
    map_finish_reason,
    model_path,
    parse_generate_response,
    parse_imagen_response,
    translate_gemini_error,
    usage_from_metadata,
)
from tollgate.providers.http import HttpClient
from tollgate.providers.presets import PRESETS
from tollgate.schemas.openai import ChatChunk, ChatRequest, EmbeddingRequest, ImageRequest
from tollgate.store.records import ProviderRecord

P = ParamSpec("P")
UPSTREAM_KEY = "AIza-upstream-secret-0123456789"
REPLY = "Hello from the Gemini loopback."
GEMINI = PRESETS["gemini"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# The loopback API's counts for chat_request(): one content of 2 words + 3; the reply is 5 words.
# Tollgate's estimator says otherwise (6 and 8), so where a number came from is visible.
PROVIDER_USAGE = {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}
ESTIMATED_USAGE = {"prompt_tokens": 6, "completion_tokens": 8, "total_tokens": 14}


def async_test(test: Callable[P, Awaitable[None]]) -> Callable[P, None]:
    """Runs an async test in its own event loop (pytest-asyncio is not installed)."""

    @functools.wraps(test)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), timeout=10))

    return run


def chat_request(**fields: Any) -> ChatRequest:
    body = {"model": "team/gem", "messages": [{"role": "user", "content": "Say hello"}], **fields}
    return ChatRequest.model_validate(body)


def messages_request(*messages: dict[str, Any], **fields: Any) -> ChatRequest:
    return chat_request(messages=list(messages), **fields)


def weather_tool(**parameters: Any) -> dict[str, Any]:
    schema = parameters or {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "A city"}},
        "required": ["city"],
        "additionalProperties": False,
    }
    return {
        "type": "function",
        "function": {"name": "get_weather", "description": "Weather", "parameters": schema},
    }


def usage_counts(usage: dict[str, Any]) -> dict[str, Any]:
    return {key: usage[key] for key in ("prompt_tokens", "completion_tokens", "total_tokens")}


def content_of(chunks: list[ChatChunk]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def png_size(encoded: str) -> tuple[int, int]:
    raw = base64.b64decode(encoded)
    assert raw.startswith(PNG_SIGNATURE)
    width, height = struct.unpack(">II", raw[16:24])
    return width, height


@dataclass
class Rig:
    upstream: GeminiUpstream
    provider: GeminiProvider
    http: HttpClient

    async def collect(self, request: ChatRequest | None = None, model: str = "gemini-x") -> list[ChatChunk]:
        return [chunk async for chunk in self.provider.stream(request or chat_request(stream=True), model)]

    async def collect_into(self, received: list[ChatChunk], request: ChatRequest | None = None) -> None:
        """Like ``collect``, keeping what arrived before a failure."""
        async for chunk in self.provider.stream(request or chat_request(stream=True), "gemini-x"):
            received.append(chunk)


@asynccontextmanager
async def rig(
    script: GeminiScript | None = None,
    *,
    provider_key: str | None = UPSTREAM_KEY,
    upstream_key: str | None = UPSTREAM_KEY,
    read_timeout: float = 5.0,
) -> AsyncIterator[Rig]:
    async with GeminiUpstream(api_key=upstream_key, script=script) as upstream:
        http = HttpClient(allow_loopback=True, connect_timeout=2.0, read_timeout=read_timeout)
        provider = GeminiProvider("gem", GEMINI, upstream.base_url, provider_key, http)
        try:
            yield Rig(upstream, provider, http)
        finally:
            await http.close()


# == Pure translation: requests ==================================================================


class TestBuildGenerateBody:
    def test_system_and_developer_messages_become_the_system_instruction(self) -> None:
        request = messages_request(
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            {"role": "assistant", "content": "Salut"},
            {"role": "user", "content": "Again"},
        )

        body = build_generate_body(request)

        assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}, {"text": "Answer in French."}]}
        assert body["contents"] == [
            {"role": "user", "parts": [{"text": "Hi"}]},
            {"role": "model", "parts": [{"text": "Salut"}]},
            {"role": "user", "parts": [{"text": "Again"}]},
        ]
        assert "generationConfig" not in body  # nothing was set, nothing is invented

    def test_adjacent_turns_of_one_role_are_merged_and_empty_ones_dropped(self) -> None:
        request = messages_request(
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": ""},
            {"role": "user", "content": [{"type": "text", "text": "two"}, {"type": "text", "text": ""}]},
        )

        assert build_generate_body(request)["contents"] == [
            {"role": "user", "parts": [{"text": "one"}, {"text": "two"}]}
        ]

    def test_a_conversation_of_system_messages_only_is_refused(self) -> None:
        with pytest.raises(InvalidRequestError) as refused:
            build_generate_body(messages_request({"role": "system", "content": "Be brief."}))

        assert refused.value.param == "messages"

    def test_generation_settings(self) -> None:
        request = chat_request(
            temperature=0.3,
            top_p=0.9,
            max_tokens=100,
            max_completion_tokens=50,
            n=2,
            stop="END",
            seed=7,
            presence_penalty=0.5,
            frequency_penalty=-0.5,
        )

        assert build_generate_body(request)["generationConfig"] == {
            "temperature": 0.3,
            "topP": 0.9,
            "maxOutputTokens": 50,  # max_completion_tokens wins
            "candidateCount": 2,
            "stopSequences": ["END"],
            "seed": 7,
            "presencePenalty": 0.5,
            "frequencyPenalty": -0.5,
        }

    def test_one_candidate_is_the_default_and_not_sent(self) -> None:
        body = build_generate_body(chat_request(n=1, stop=["a", "b"]))

        assert body["generationConfig"] == {"stopSequences": ["a", "b"]}

    @pytest.mark.parametrize(
        ("field", "value"), [("seed", "7"), ("seed", True), ("presence_penalty", "high")]
    )
    def test_mistyped_extras_are_refused(self, field: str, value: Any) -> None:
        with pytest.raises(InvalidRequestError) as refused:
            build_generate_body(chat_request(**{field: value}))

        assert refused.value.param == field

    def test_tool_calls_and_results_become_function_call_and_response_parts(self) -> None:
        request = messages_request(
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    },
                    {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": ""}},
                ],
            },
            {"role": "tool", "tool_call_id": "call_b", "content": "12:00"},
            {"role": "tool", "tool_call_id": "call_a", "content": '{"temp": 21}'},
        )

        contents = build_generate_body(request)["contents"]

        assert contents[1] == {
            "role": "model",
            "parts": [
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                {"functionCall": {"name": "get_time", "args": {}}},
            ],
        }
        # Both results answer the calls in one turn; the names come from the matching call ids.
        assert contents[2] == {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "get_time", "response": {"output": "12:00"}}},
                {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
            ],
        }

    def test_a_thought_signature_rides_back_on_its_tool_call(self) -> None:
        call = {
            "id": "call_a",
            "type": "function",
            "function": {"name": "f", "arguments": "{}"},
            "extra_content": {"google": {"thought_signature": "c2lnbmF0dXJl"}},
        }
        request = messages_request(
            {"role": "user", "content": "go"}, {"role": "assistant", "tool_calls": [call]}
        )

        part = build_generate_body(request)["contents"][1]["parts"][0]

        assert part == {"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "c2lnbmF0dXJl"}

    def test_a_tool_result_for_an_unknown_call_is_refused(self) -> None:
        request = messages_request(
            {"role": "user", "content": "go"}, {"role": "tool", "tool_call_id": "call_x", "content": "1"}
        )

        with pytest.raises(InvalidRequestError, match="call_x") as refused:
            build_generate_body(request)

        assert refused.value.param == "messages[1].tool_call_id"

    def test_a_legacy_function_result_is_named_by_its_message(self) -> None:
        request = messages_request(
            {"role": "user", "content": "go"}, {"role": "function", "name": "f", "content": "done"}
        )

        assert build_generate_body(request)["contents"][0]["parts"][1] == {
            "functionResponse": {"name": "f", "response": {"output": "done"}}
        }

    @pytest.mark.parametrize("arguments", ["{not json", "[1, 2]", '"text"'])
    def test_tool_call_arguments_must_be_a_json_object(self, arguments: str) -> None:
        call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": arguments}}
        request = messages_request(
            {"role": "user", "content": "go"}, {"role": "assistant", "tool_calls": [call]}
        )

        with pytest.raises(InvalidRequestError) as refused:
            build_generate_body(request)

        assert refused.value.param == "messages[1].tool_calls[0].function.arguments"

    def test_images_become_inline_data_or_file_data(self) -> None:
        def image(url: str) -> dict[str, Any]:
            return {"type": "image_url", "image_url": {"url": url, "detail": "high"}}

        request = messages_request(
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Compare"},
                    image("data:image/png;base64,iVBORw0KGgo="),
                    image("https://example.com/cat.JPG?size=large"),
                    image("https://generativelanguage.googleapis.com/v1beta/files/abc123"),
                    image("data:image/svg+xml,%3Csvg%2F%3E"),
                ],
            }
        )

        parts = build_generate_body(request)["contents"][0]["parts"]

        assert parts == [
            {"text": "Compare"},
            {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
            {"fileData": {"fileUri": "https://example.com/cat.JPG?size=large", "mimeType": "image/jpeg"}},
            {"fileData": {"fileUri": "https://generativelanguage.googleapis.com/v1beta/files/abc123"}},
            {"inlineData": {"mimeType": "image/svg+xml", "data": base64.b64encode(b"<svg/>").decode()}},
        ]

    @pytest.mark.parametrize(
        ("url", "message"),
        [
            ("https://example.com/image?id=3", "type of an image URL"),
            ("ftp://example.com/cat.png", "data: URL or an http"),
            ("data:;base64,AAAA", "media type"),
            ("data:image/png;base64,", "empty"),
        ],
    )
    def test_images_gemini_cannot_take_are_a_clear_400(self, url: str, message: str) -> None:
        request = messages_request(
            {
                "role": "user",
                "content": [{"type": "text", "text": "x"}, {"type": "image_url", "image_url": {"url": url}}],
            }
        )

        with pytest.raises(InvalidRequestError, match=message) as refused:
            build_generate_body(request)

        assert refused.value.status == 400
        assert refused.value.param == "messages[0].content[1].image_url"

    def test_audio_and_files_become_inline_data(self) -> None:
        request = messages_request(
            {
                "role": "user",
                "content": [
                    {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
                    {
                        "type": "file",
                        "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"},
                    },
                    {"type": "file", "file": {"file_data": "JVBERi0=", "filename": "b.pdf"}},
                ],
            }
        )

        assert build_generate_body(request)["contents"][0]["parts"] == [
            {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
            {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
            {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
        ]

    @pytest.mark.parametrize(
        ("part", "param"),
        [
            ({"type": "file", "file": {"file_id": "file-abc"}}, "messages[0].content[0].file"),
            (
                {"type": "input_audio", "input_audio": {"data": "AA==", "format": "midi"}},
                "messages[0].content[0].input_audio.format",
            ),
            ({"type": "video_url", "video_url": {"url": "https://x/v.mp4"}}, "messages[0].content[0]"),
        ],
    )
    def test_parts_gemini_cannot_take_are_refused_with_their_param(
        self, part: dict[str, Any], param: str
    ) -> None:
        with pytest.raises(InvalidRequestError) as refused:
            build_generate_body(messages_request({"role": "user", "content": [part]}))

        assert refused.value.param == param

    @pytest.mark.parametrize(
        ("choice", "config"),
        [
            (None, None),
            ("auto", {"functionCallingConfig": {"mode": "AUTO"}}),
            ("none", {"functionCallingConfig": {"mode": "NONE"}}),
            ("required", {"functionCallingConfig": {"mode": "ANY"}}),
            (
                {"type": "function", "function": {"name": "get_weather"}},
                {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
            ),
        ],
    )
    def test_tools_and_tool_choice(self, choice: Any, config: dict[str, Any] | None) -> None:
        body = build_generate_body(chat_request(tools=[weather_tool()], tool_choice=choice))

        assert body["tools"] == [
            {
                "functionDeclarations": [
                    {
                        "name": "get_weather",
                        "description": "Weather",
                        "parameters": {
                            "type": "object",
                            "properties": {"city": {"type": "string", "description": "A city"}},
                            "required": ["city"],
                        },
                    }
                ]
            }
        ]
        assert body.get("toolConfig") == config

    def test_a_function_without_parameters_declares_none(self) -> None:
        tool = weather_tool(type="object", properties={})

        declaration = build_generate_body(chat_request(tools=[tool]))["tools"][0]["functionDeclarations"][0]

        assert "parameters" not in declaration

    @pytest.mark.parametrize(
        ("fields", "param"),
        [
            ({"tools": [{"type": "web_search"}]}, "tools[0]"),
            ({"tool_choice": "required"}, "tool_choice"),
            ({"tools": [weather_tool()], "tool_choice": "sometimes"}, "tool_choice"),
        ],
    )
    def test_tool_settings_gemini_cannot_take_are_refused(self, fields: dict[str, Any], param: str) -> None:
        with pytest.raises(InvalidRequestError) as refused:
            build_generate_body(chat_request(**fields))

        assert refused.value.param == param

    def test_json_modes(self) -> None:
        schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": False}

        json_object = build_generate_body(chat_request(response_format={"type": "json_object"}))
        json_schema = build_generate_body(
            chat_request(
                response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
            )
        )
        text = build_generate_body(chat_request(response_format={"type": "text"}))

        assert json_object["generationConfig"] == {"responseMimeType": "application/json"}
        assert json_schema["generationConfig"] == {
            "responseMimeType": "application/json",
            "responseSchema": {"type": "object", "properties": {"a": {"type": "integer"}}},
        }
        assert "generationConfig" not in text
        with pytest.raises(InvalidRequestError):
            build_generate_body(chat_request(response_format={"type": "xml"}))

    def test_reasoning_effort_and_google_options(self) -> None:
        google = {
            "thinking_config": {"thinking_budget": 2048, "include_thoughts": True},
            "safety_settings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
            "cached_content": "cachedContents/abc",
        }

        effort = build_generate_body(chat_request(reasoning_effort="low"))
        native = build_generate_body(chat_request(google=google))

        assert effort["generationConfig"] == {
            "thinkingConfig": {"thinkingBudget": 1024, "includeThoughts": True}
        }
        assert native["generationConfig"] == {
            "thinkingConfig": {"thinkingBudget": 2048, "includeThoughts": True}
        }
        assert native["safetySettings"] == google["safety_settings"]
        assert native["cachedContent"] == "cachedContents/abc"
        with pytest.raises(InvalidRequestError):
            build_generate_body(chat_request(reasoning_effort="extreme"))


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("gemini-2.5-flash", "models/gemini-2.5-flash"),
        ("models/gemini-x", "models/gemini-x"),
        ("tunedModels/my-model-7", "tunedModels/my-model-7"),
    ],
)
def test_model_path(name: str, path: str) -> None:
    assert model_path(name) == path


@pytest.mark.parametrize(
    "name", ["../files/x", "gemini-x:embedContent", "gemini?key=1", "a/b", "", ".hidden"]
)
def test_model_names_cannot_reach_other_upstream_paths(name: str) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        model_path(name)

    assert refused.value.param == "model"


# -- Property: text conversations survive translation ---------------------------------------------

_texts = st.text(st.characters(codec="utf-8"), min_size=1, max_size=20)
_conversation = st.lists(
    st.tuples(st.sampled_from(["system", "developer", "user", "assistant"]), _texts), min_size=1, max_size=12
).filter(lambda messages: any(role in ("user", "assistant") for role, _ in messages))


@given(_conversation)
@settings(max_examples=80, deadline=None)
def test_text_messages_survive_translation_in_order(messages: list[tuple[str, str]]) -> None:
    request = messages_request(*({"role": role, "content": text} for role, text in messages))

    body = build_generate_body(request)

    system = [text for role, text in messages if role in ("system", "developer")]
    spoken = [(role, text) for role, text in messages if role in ("user", "assistant")]
    assert [part["text"] for part in body.get("systemInstruction", {}).get("parts", [])] == system
    flattened = [
        ("user" if content["role"] == "user" else "assistant", part["text"])
        for content in body["contents"]
        for part in content["parts"]
    ]
    assert flattened == spoken
    roles = [content["role"] for content in body["contents"]]
    assert all(first != second for first, second in itertools.pairwise(roles))


_json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10,
)


@given(st.dictionaries(st.text(max_size=8), _json_values, max_size=4))
@settings(max_examples=60, deadline=None)
def test_function_call_arguments_survive_the_round_trip(args: dict[str, Any]) -> None:
    # Gemini's functionCall -> an OpenAI tool call -> sent back -> the same functionCall.
    answer = {"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "args": args}}]}}]}
    message = parse_generate_response(answer, "m", chat_request(), provider="gem").completion["choices"][0][
        "message"
    ]

    again = build_generate_body(messages_request({"role": "user", "content": "go"}, message))

    assert again["contents"][1]["parts"] == [{"functionCall": {"name": "f", "args": args}}]


# == Pure translation: JSON Schema ==================================================================


class TestConvertSchema:
    def test_a_pydantic_style_strict_schema(self) -> None:
        schema = {
            "$defs": {
                "Step": {
                    "title": "Step",
                    "type": "object",
                    "properties": {"explanation": {"type": "string"}, "output": {"type": "string"}},
                    "required": ["explanation", "output"],
                    "additionalProperties": False,
                }
            },
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "Reasoning",
            "type": "object",
            "properties": {
                "steps": {"type": "array", "items": {"$ref": "#/$defs/Step"}, "uniqueItems": True},
                "answer": {"anyOf": [{"type": "string"}, {"type": "null"}], "description": "The answer"},
                "when": {"type": "string", "format": "date-time"},
                "email": {"type": "string", "format": "email", "examples": ["a@b.c"]},
                "mood": {"enum": ["happy", "sad", None]},
                "kind": {"const": "final"},
            },
            "required": ["steps", "answer"],
            "additionalProperties": False,
        }

        assert convert_schema(schema, param="p") == {
            "title": "Reasoning",
            "type": "object",
            "properties": {
                "steps": {
                    "type": "array",
                    "items": {
                        "title": "Step",
                        "type": "object",
                        "properties": {"explanation": {"type": "string"}, "output": {"type": "string"}},
                        "required": ["explanation", "output"],
                    },
                },
                "answer": {"type": "string", "description": "The answer", "nullable": True},
                "when": {"type": "string", "format": "date-time"},
                "email": {"type": "string"},
                "mood": {"type": "string", "enum": ["happy", "sad"], "nullable": True},
                "kind": {"type": "string", "enum": ["final"]},
            },
            "required": ["steps", "answer"],
        }

    def test_type_lists_and_unions(self) -> None:
        assert convert_schema({"type": ["integer", "null"]}, param="p") == {
            "type": "integer",
            "nullable": True,
        }
        assert convert_schema({"anyOf": [{"type": ["integer", "null"]}]}, param="p") == {
            "type": "integer",
            "nullable": True,
        }
        assert convert_schema({"type": "integer", "nullable": False}, param="p") == {"type": "integer"}
        assert convert_schema({"oneOf": [{"type": "string"}, {"type": "integer"}]}, param="p") == {
            "anyOf": [{"type": "string"}, {"type": "integer"}]
        }
        optional = {
            "anyOf": [{"type": "string", "description": "inner"}, {"type": "null"}],
            "description": "outer",
        }
        assert convert_schema(optional, param="p") == {
            "type": "string",
            "description": "outer",
            "nullable": True,
        }
        assert convert_schema({"allOf": [{"type": "string"}], "description": "d"}, param="p") == {
            "type": "string",
            "description": "d",
        }

    @pytest.mark.parametrize(
        ("schema", "message"),
        [
            ({"not": {"type": "string"}}, "'not'"),
            (
                {
                    "$defs": {"N": {"type": "object", "properties": {"next": {"$ref": "#/$defs/N"}}}},
                    "$ref": "#/$defs/N",
                },
                "recursive",
            ),
            ({"$ref": "https://example.com/schema.json"}, "does not point"),
            ({"enum": [1, 2, 3]}, "strings only"),
            ({"type": ["string", "integer"]}, "one type"),
            ({"type": "array", "items": [{"type": "string"}]}, "tuples"),
            ({"allOf": [{"type": "string"}, {"minLength": 2}]}, "allOf"),
            ({"type": "date"}, "unknown type"),
            ("string", "must be an object"),
        ],
    )
    def test_what_would_change_the_meaning_is_refused(self, schema: Any, message: str) -> None:
        with pytest.raises(InvalidRequestError, match=message) as refused:
            convert_schema(schema, param="response_format.json_schema.schema")

        assert refused.value.param == "response_format.json_schema.schema"


# The keys the strict loopback API (like the real one) accepts in a schema.
GEMINI_SCHEMA_KEYS = {
    "type", "format", "title", "description", "nullable", "enum", "items", "properties", "required",
    "minItems", "maxItems", "minLength", "maxLength", "pattern", "minimum", "maximum", "minProperties",
    "maxProperties", "anyOf", "propertyOrdering", "default", "example",
}  # fmt: skip
_schema_noise = st.dictionaries(
    st.sampled_from(
        [
            "additionalProperties",
            "$schema",
            "examples",
            "uniqueItems",
            "multipleOf",
            "exclusiveMinimum",
            "x-vendor",
            "$comment",
        ]
    ),
    st.booleans() | st.integers(0, 5),
    max_size=3,
)
_leaf_schemas = st.builds(
    lambda kind, noise, description: {
        "type": kind,
        **noise,
        **({"description": description} if description else {}),
    },
    st.sampled_from(["string", "integer", "number", "boolean", ["string", "null"]]),
    _schema_noise,
    st.none() | st.text(max_size=5),
)
_schemas = st.recursive(
    _leaf_schemas,
    lambda inner: (
        st.builds(
            lambda props, noise: {"type": "object", "properties": props, **noise},
            st.dictionaries(st.text(min_size=1, max_size=5), inner, min_size=1, max_size=3),
            _schema_noise,
        )
        | st.builds(lambda item: {"type": "array", "items": item}, inner)
        | st.builds(
            lambda options: {"anyOf": [*options, {"type": "null"}]}, st.lists(inner, min_size=1, max_size=3)
        )
    ),
    max_leaves=12,
)


def _schema_keys(schema: dict[str, Any]) -> set[str]:
    keys = set(schema)
    for value in (schema.get("properties") or {}).values():
        keys |= _schema_keys(value)
    for option in schema.get("anyOf") or ():
        keys |= _schema_keys(option)
    if "items" in schema:
        keys |= _schema_keys(schema["items"])
    return keys


@given(_schemas)
@settings(max_examples=80, deadline=None)
def test_converted_schemas_use_only_keys_gemini_knows(schema: dict[str, Any]) -> None:
    assert _schema_keys(convert_schema(schema, param="p")) <= GEMINI_SCHEMA_KEYS


# == Pure translation: responses ===================================================================


@pytest.mark.parametrize(
    ("metadata", "usage"),
    [
        (
            {"promptTokenCount": 120, "candidatesTokenCount": 30, "totalTokenCount": 150},
            Usage(prompt_tokens=120, completion_tokens=30),
        ),
        (
            {
                "promptTokenCount": 1000,
                "candidatesTokenCount": 40,
                "thoughtsTokenCount": 260,
                "cachedContentTokenCount": 800,
                "totalTokenCount": 1300,
            },
            Usage(prompt_tokens=1000, completion_tokens=300, cached_tokens=800, reasoning_tokens=260),
        ),
        (  # tool-use prompt tokens (search results and the like) are billed as input
            {"promptTokenCount": 10, "toolUsePromptTokenCount": 90, "candidatesTokenCount": 5},
            Usage(prompt_tokens=100, completion_tokens=5),
        ),
        (  # a blocked answer has no candidates count; nonsense counts are zero
            {"promptTokenCount": 7, "candidatesTokenCount": -3, "thoughtsTokenCount": "9"},
            Usage(prompt_tokens=7, completion_tokens=0),
        ),
    ],
)
def test_usage_golden_values(metadata: dict[str, Any], usage: Usage) -> None:
    assert usage_from_metadata(metadata) == usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


@pytest.mark.parametrize(
    ("reason", "tool_calls", "finish"),
    [
        ("STOP", False, "stop"),
        ("STOP", True, "tool_calls"),
        ("MAX_TOKENS", False, "length"),
        ("MAX_TOKENS", True, "length"),
        ("SAFETY", False, "content_filter"),
        ("RECITATION", False, "content_filter"),
        ("BLOCKLIST", False, "content_filter"),
        ("PROHIBITED_CONTENT", False, "content_filter"),
        ("SPII", False, "content_filter"),
        ("IMAGE_SAFETY", False, "content_filter"),
        ("MALFORMED_FUNCTION_CALL", False, "stop"),
        ("OTHER", False, "stop"),
        ("FINISH_REASON_UNSPECIFIED", False, "stop"),
        (None, False, "stop"),
    ],
)
def test_finish_reason_mapping(reason: str | None, tool_calls: bool, finish: str) -> None:
    assert map_finish_reason(reason, tool_calls=tool_calls) == finish


class TestParseGenerateResponse:
    def answer(self, *parts: dict[str, Any], **fields: Any) -> dict[str, Any]:
        candidate = {"content": {"role": "model", "parts": list(parts)}, "finishReason": "STOP", "index": 0}
        return {"candidates": [candidate], "responseId": "abc", **fields}

    def test_text_thoughts_usage_and_the_public_model(self) -> None:
        body = self.answer(
            {"text": "Considering", "thought": True},
            {"text": "Hello"},
            {"text": " there"},
            usageMetadata={"promptTokenCount": 4, "candidatesTokenCount": 2, "thoughtsTokenCount": 1},
        )

        result = parse_generate_response(body, "team/gem", chat_request(), provider="gem")

        message = result.completion["choices"][0]["message"]
        assert message == {
            "role": "assistant",
            "content": "Hello there",
            "refusal": None,
            "reasoning_content": "Considering",
        }
        assert result.completion["choices"][0]["finish_reason"] == "stop"
        assert (result.completion["id"], result.completion["model"]) == ("chatcmpl-abc", "team/gem")
        assert result.usage == Usage(prompt_tokens=4, completion_tokens=3, reasoning_tokens=1)
        assert result.completion["usage"] == {
            "prompt_tokens": 4,
            "completion_tokens": 3,
            "total_tokens": 7,
            "completion_tokens_details": {"reasoning_tokens": 1},
        }

    def test_function_calls_become_tool_calls(self) -> None:
        body = self.answer(
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "sig"},
            {"functionCall": {"name": "get_time", "id": "fc-7"}},
        )

        choice = parse_generate_response(body, "m", chat_request(), provider="gem").completion["choices"][0]

        first, second = choice["message"]["tool_calls"]
        assert choice["finish_reason"] == "tool_calls"
        assert choice["message"]["content"] is None
        assert first["id"].startswith("call_") and first["id"] != second["id"]
        assert first["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
        assert first["extra_content"] == {"google": {"thought_signature": "sig"}}
        assert second == {
            "id": "fc-7",
            "type": "function",
            "function": {"name": "get_time", "arguments": "{}"},
        }

    def test_several_candidates_are_several_choices(self) -> None:
        body = {
            "candidates": [
                {"content": {"parts": [{"text": "A"}]}, "finishReason": "STOP", "index": 0},
                {"content": {"parts": [{"text": "B"}]}, "finishReason": "MAX_TOKENS", "index": 1},
            ]
        }

        choices = parse_generate_response(body, "m", chat_request(n=2), provider="gem").completion["choices"]

        assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in choices] == [
            (0, "A", "stop"),
            (1, "B", "length"),
        ]

    def test_a_safety_stop_without_content_is_an_empty_filtered_answer(self) -> None:
        body = {"candidates": [{"finishReason": "SAFETY", "index": 0, "safetyRatings": []}]}

        choice = parse_generate_response(body, "m", chat_request(), provider="gem").completion["choices"][0]

        assert (choice["message"]["content"], choice["finish_reason"]) == ("", "content_filter")

    def test_missing_usage_is_estimated_and_labelled(self) -> None:
        result = parse_generate_response(self.answer({"text": REPLY}), "m", chat_request(), provider="gem")

        assert result.usage.source == "estimated"
        assert usage_counts(result.completion["usage"]) == ESTIMATED_USAGE

    def test_a_blocked_prompt_is_a_clear_400(self) -> None:
        body = {
            "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
            "usageMetadata": {"promptTokenCount": 3},
        }

        with pytest.raises(
            UpstreamRejectedError, match="blocked the prompt \\(PROHIBITED_CONTENT\\)"
        ) as refused:
            parse_generate_response(body, "m", chat_request(), provider="gem")

        assert (refused.value.status, refused.value.code) == (400, "content_filter")

    @pytest.mark.parametrize("body", [[], "text", {}, {"candidates": []}, {"error": {"message": "boom"}}])
    def test_anything_else_is_an_upstream_error(self, body: Any) -> None:
        with pytest.raises(UpstreamError):
            parse_generate_response(body, "m", chat_request(), provider="gem")


def event(
    *parts: dict[str, Any], finish: str | None = None, usage: dict[str, Any] | None = None, index: int = 0
) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": list(parts)}, "index": index}
    if finish:
        candidate["finishReason"] = finish
    answer: dict[str, Any] = {"candidates": [candidate], "responseId": "r1"}
    if usage:
        answer["usageMetadata"] = usage
    return answer


class TestStreamTranslator:
    def feed_all(self, translator: GeminiStreamTranslator, *events: dict[str, Any]) -> list[ChatChunk]:
        return [chunk for item in events for chunk in translator.feed(item)]

    def test_role_deltas_finish_then_the_last_usage(self) -> None:
        translator = GeminiStreamTranslator(chat_request(stream=True), provider="gem")

        chunks = self.feed_all(
            translator,
            event({"text": "Hmm", "thought": True}, usage={"promptTokenCount": 9, "totalTokenCount": 9}),
            event({"text": "Hel"}, usage={"promptTokenCount": 9, "candidatesTokenCount": 1}),
            event(
                {"text": "lo"},
                finish="STOP",
                usage={
                    "promptTokenCount": 9,
                    "candidatesTokenCount": 2,
                    "thoughtsTokenCount": 1,
                    "cachedContentTokenCount": 4,
                },
            ),
        )
        final = translator.usage_chunk()

        assert [c["choices"][0]["delta"] for c in chunks] == [
            {"role": "assistant", "content": ""},
            {"reasoning_content": "Hmm"},
            {"content": "Hel"},
            {"content": "lo"},
            {},
        ]
        assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, None, None, "stop"]
        assert {c["id"] for c in [*chunks, final]} == {"chatcmpl-r1"}
        assert translator.finished
        assert final["choices"] == []
        assert final["usage"] == {
            "prompt_tokens": 9,
            "completion_tokens": 3,
            "total_tokens": 12,
            "prompt_tokens_details": {"cached_tokens": 4},
            "completion_tokens_details": {"reasoning_tokens": 1},
        }
        assert USAGE_SOURCE_MARKER not in final

    def test_tool_calls_are_indexed_across_events(self) -> None:
        translator = GeminiStreamTranslator(chat_request(stream=True), provider="gem")

        chunks = self.feed_all(
            translator,
            event({"functionCall": {"name": "a", "args": {"x": 1}}}),
            event({"functionCall": {"name": "b", "args": {}}}, finish="STOP"),
        )

        calls = [
            c["choices"][0]["delta"]["tool_calls"][0]
            for c in chunks
            if "tool_calls" in c["choices"][0]["delta"]
        ]
        assert [
            (call["index"], call["function"]["name"], call["function"]["arguments"]) for call in calls
        ] == [
            (0, "a", '{"x":1}'),
            (1, "b", "{}"),
        ]
        assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"

    def test_no_usage_at_all_is_estimated_and_marked(self) -> None:
        translator = GeminiStreamTranslator(chat_request(stream=True), provider="gem")
        self.feed_all(translator, event({"text": REPLY}, finish="STOP"))

        final = translator.usage_chunk()

        assert final[USAGE_SOURCE_MARKER] == "estimated"
        assert usage_counts(final["usage"]) == ESTIMATED_USAGE

    def test_every_candidate_must_finish(self) -> None:
        translator = GeminiStreamTranslator(chat_request(stream=True, n=2), provider="gem")

        chunks = self.feed_all(
            translator, event({"text": "A"}, index=0), event({"text": "B"}, finish="STOP", index=1)
        )
        assert not translator.finished
        chunks += self.feed_all(translator, event(finish="STOP", index=0))

        assert translator.finished
        roles = [c["choices"][0]["index"] for c in chunks if c["choices"][0]["delta"].get("role")]
        assert roles == [0, 1]

    def test_a_stream_without_a_finish_is_unfinished(self) -> None:
        translator = GeminiStreamTranslator(chat_request(stream=True), provider="gem")
        self.feed_all(translator, event({"text": "Hel"}))

        assert not translator.finished

    def test_blocked_prompts_and_error_events_raise(self) -> None:
        translator = GeminiStreamTranslator(chat_request(stream=True), provider="gem", secrets=("s3cret",))

        with pytest.raises(UpstreamRejectedError, match="SAFETY"):
            translator.feed({"promptFeedback": {"blockReason": "SAFETY"}})
        with pytest.raises(UpstreamError, match="failed mid-stream: overloaded \\[redacted\\]"):
            translator.feed({"error": {"code": 503, "message": "overloaded s3cret", "status": "UNAVAILABLE"}})
        with pytest.raises(UpstreamError, match="malformed"):
            translator.feed([1, 2])


# == Pure translation: errors ======================================================================


def gemini_error(status: int, google_status: str, message: str = "Bad thing.", **extra: Any) -> bytes:
    return json.dumps(
        {"error": {"code": status, "message": message, "status": google_status, **extra}}
    ).encode()


API_KEY_INVALID = gemini_error(
    400,
    "INVALID_ARGUMENT",
    "API key not valid. Please pass a valid API key.",
    details=[
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "API_KEY_INVALID",
            "domain": "googleapis.com",
        }
    ],
)


class TestTranslateGeminiError:
    @pytest.mark.parametrize(
        ("upstream_status", "body", "kind", "status", "code"),
        [
            (400, API_KEY_INVALID, UpstreamError, 502, "upstream_auth_failed"),
            (403, gemini_error(403, "PERMISSION_DENIED"), UpstreamError, 502, "upstream_auth_failed"),
            (401, gemini_error(401, "UNAUTHENTICATED"), UpstreamError, 502, "upstream_auth_failed"),
            (400, gemini_error(400, "INVALID_ARGUMENT"), UpstreamRejectedError, 400, "upstream_rejected"),
            (404, gemini_error(404, "NOT_FOUND"), UpstreamRejectedError, 404, "upstream_rejected"),
            (413, b"", UpstreamRejectedError, 413, "upstream_rejected"),
            (400, gemini_error(400, "FAILED_PRECONDITION"), UpstreamError, 502, "upstream_unavailable"),
            (429, gemini_error(429, "RESOURCE_EXHAUSTED"), RateLimitError, 429, "upstream_rate_limited"),
            (500, gemini_error(500, "INTERNAL"), UpstreamError, 502, "upstream_error"),
            (503, gemini_error(503, "UNAVAILABLE"), UpstreamError, 502, "upstream_error"),
            (504, gemini_error(504, "DEADLINE_EXCEEDED"), UpstreamError, 502, "upstream_error"),
            (302, b"", UpstreamError, 502, "upstream_redirect"),
        ],
    )
    def test_status_table(
        self, upstream_status: int, body: bytes, kind: type[TollgateError], status: int, code: str
    ) -> None:
        error = translate_gemini_error(upstream_status, body, {}, provider="gem")

        assert type(error) is kind
        assert (error.status, error.code) == (status, code)

    def test_a_refusal_passes_geminis_message_on_redacted(self) -> None:
        body = gemini_error(400, "INVALID_ARGUMENT", f"* contents[0].parts: bad value for key {UPSTREAM_KEY}")

        error = translate_gemini_error(400, body, {}, provider="gem", secrets=(UPSTREAM_KEY,))

        assert error.message == "* contents[0].parts: bad value for key [redacted]"
        assert UPSTREAM_KEY not in json.dumps(error.body())

    def test_a_bad_key_never_blames_the_caller_or_echoes_the_key(self) -> None:
        error = translate_gemini_error(400, API_KEY_INVALID, {}, provider="gem", secrets=(UPSTREAM_KEY,))

        assert error.message == "The provider rejected Tollgate's credentials for 'gem'."

    @pytest.mark.parametrize(
        ("headers", "details", "seconds"),
        [
            ({}, [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}], 37),
            ({}, [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.2s"}], 2),
            (
                {"Retry-After": "5"},
                [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}],
                5,
            ),
            ({}, [], None),
        ],
    )
    def test_rate_limits_carry_the_retry_delay(
        self, headers: dict[str, str], details: list[Any], seconds: int | None
    ) -> None:
        body = gemini_error(429, "RESOURCE_EXHAUSTED", details=details)

        error = translate_gemini_error(429, body, headers, provider="gem")

        assert isinstance(error, RateLimitError)
        assert error.retry_after == seconds
        assert error.headers == ({"Retry-After": str(seconds)} if seconds is not None else {})

    def test_a_list_body_and_a_non_json_body_are_read(self) -> None:
        listed = translate_gemini_error(
            404, b"[" + gemini_error(404, "NOT_FOUND", "models/x is not found") + b"]", {}, provider="gem"
        )
        html = translate_gemini_error(404, b"<html>404</html>", {}, provider="gem")

        assert listed.message == "models/x is not found"
        assert html.message == "The provider 'gem' rejected the request (HTTP 404)."


# == Pure translation: embeddings and images ======================================================


class TestEmbeddingsAndImages:
    def test_embed_body_is_one_request_per_input(self) -> None:
        assert build_embed_body(["a", "b"], "gemini-embedding-001", 256) == {
            "requests": [
                {
                    "model": "models/gemini-embedding-001",
                    "content": {"parts": [{"text": "a"}]},
                    "outputDimensionality": 256,
                },
                {
                    "model": "models/gemini-embedding-001",
                    "content": {"parts": [{"text": "b"}]},
                    "outputDimensionality": 256,
                },
            ]
        }

    def test_embedding_usage_is_estimated_and_base64_is_float32(self) -> None:
        request = EmbeddingRequest(
            model="team/embed", input=["one two three", "four"], encoding_format="base64"
        )

        result = embedding_result([[0.5, -1.25], [0.0, 2.0]], request)

        assert result.usage == Usage(prompt_tokens=5, completion_tokens=0, source="estimated")
        assert result.body["usage"] == {"prompt_tokens": 5, "total_tokens": 5}
        decoded = [
            array.array("f", base64.b64decode(item["embedding"])).tolist() for item in result.body["data"]
        ]
        assert decoded == [[0.5, -1.25], [0.0, 2.0]]
        assert [item["index"] for item in result.body["data"]] == [0, 1]

    @pytest.mark.parametrize(
        ("size", "supported", "ratio"),
        [
            (None, IMAGEN_ASPECT_RATIOS, None),
            ("auto", IMAGEN_ASPECT_RATIOS, None),
            ("1024x1024", IMAGEN_ASPECT_RATIOS, "1:1"),
            ("256x256", IMAGEN_ASPECT_RATIOS, "1:1"),
            ("1792x1024", IMAGEN_ASPECT_RATIOS, "16:9"),
            ("1024x1792", IMAGEN_ASPECT_RATIOS, "9:16"),
            ("1024x768", IMAGEN_ASPECT_RATIOS, "4:3"),
            ("16:9", IMAGEN_ASPECT_RATIOS, "16:9"),
            ("1536x1024", GEMINI_IMAGE_ASPECT_RATIOS, "3:2"),
            ("2560x1080", GEMINI_IMAGE_ASPECT_RATIOS, "21:9"),
        ],
    )
    def test_sizes_become_aspect_ratios(
        self, size: str | None, supported: tuple[str, ...], ratio: str | None
    ) -> None:
        assert aspect_ratio_for(size, supported) == ratio

    @pytest.mark.parametrize("size", ["1536x1024", "big", "0x100", "1024x"])
    def test_sizes_imagen_cannot_draw_are_a_clear_400(self, size: str) -> None:
        with pytest.raises(InvalidRequestError) as refused:
            aspect_ratio_for(size, IMAGEN_ASPECT_RATIOS)

        assert refused.value.param == "size"

    def test_imagen_body(self) -> None:
        body = build_imagen_body(ImageRequest(model="m", prompt="a red fox", n=3, size="1024x1792"))

        assert body == {
            "instances": [{"prompt": "a red fox"}],
            "parameters": {"sampleCount": 3, "includeRaiReason": True, "aspectRatio": "9:16"},
        }

    @pytest.mark.parametrize("build", [build_imagen_body, build_image_generate_body])
    def test_image_urls_cannot_be_served(self, build: Callable[[ImageRequest], Any]) -> None:
        with pytest.raises(InvalidRequestError, match="b64_json") as refused:
            build(ImageRequest(model="m", prompt="x", response_format="url"))

        assert refused.value.param == "response_format"

    def test_imagen_predictions_and_filtered_images(self) -> None:
        body = {
            "predictions": [
                {"bytesBase64Encoded": "AAAA", "mimeType": "image/png", "prompt": "a red fox, detailed"},
                {"raiFilteredReason": "Filtered."},
            ]
        }

        result = parse_imagen_response(body, provider="gem")

        assert result.images == 1
        assert result.body["data"] == [{"b64_json": "AAAA", "revised_prompt": "a red fox, detailed"}]
        with pytest.raises(UpstreamRejectedError, match="no image for this prompt: Filtered") as refused:
            parse_imagen_response({"predictions": [{"raiFilteredReason": "Filtered."}]}, provider="gem")
        assert refused.value.code == "content_filter"


def test_the_factory_builds_the_gemini_adapter() -> None:
    record = ProviderRecord(name="gem", type="gemini", created_at=0, updated_at=0)

    provider = build_adapter(record, UPSTREAM_KEY, HttpClient())

    assert isinstance(provider, GeminiProvider)
    assert isinstance(provider, Provider)
    assert provider.capabilities >= {
        Capability.CHAT,
        Capability.STREAM,
        Capability.EMBEDDINGS,
        Capability.IMAGES,
    }
    assert UPSTREAM_KEY not in repr(provider)


# == Against the loopback API ======================================================================


@async_test
async def test_chat() -> None:
    async with rig() as r:
        request = messages_request(
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello"},
            temperature=0.5,
        )

        result = await r.provider.chat(request, "gemini-x")

        assert result.completion["choices"][0]["message"]["content"] == REPLY
        assert result.completion["choices"][0]["finish_reason"] == "stop"
        assert result.completion["model"] == "team/gem"
        # 5 for the user turn, 3 + 2 for the system instruction.
        assert result.usage == Usage(prompt_tokens=10, completion_tokens=5, source="provider")
        [sent] = r.upstream.requests
        assert sent.path == "/v1beta/models/gemini-x:generateContent"
        assert sent.query == {}  # the key is never in the URL
        assert sent.headers["x-goog-api-key"] == UPSTREAM_KEY
        assert sent.json["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
        assert sent.json["generationConfig"] == {"temperature": 0.5}


@async_test
async def test_stream_order_termination_and_the_last_usage() -> None:
    async with rig() as r:
        chunks = await r.collect()

        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        assert content_of(chunks) == REPLY
        assert chunks[-2]["choices"][0] == {
            "index": 0,
            "delta": {},
            "logprobs": None,
            "finish_reason": "stop",
        }
        assert chunks[-1]["choices"] == []
        # Every event carried usageMetadata; only the last one is complete.
        assert usage_counts(chunks[-1]["usage"]) == PROVIDER_USAGE
        assert USAGE_SOURCE_MARKER not in chunks[-1]
        assert all("usage" not in chunk for chunk in chunks[:-1])
        assert {chunk["model"] for chunk in chunks} == {"team/gem"}
        assert len({chunk["id"] for chunk in chunks}) == 1
        [sent] = r.upstream.requests
        assert (sent.path, sent.query) == ("/v1beta/models/gemini-x:streamGenerateContent", {"alt": "sse"})
        assert sent.headers["Accept"] == "text/event-stream"


@async_test
async def test_a_stream_and_a_completion_agree() -> None:
    async with rig(GeminiScript(thoughts="Think it through.", cached_tokens=3)) as r:
        request = chat_request(reasoning_effort="medium")
        completion = await r.provider.chat(request, "gemini-x")
        chunks = await r.collect(chat_request(stream=True, reasoning_effort="medium"))

        reasoning = "".join(
            c["choices"][0]["delta"].get("reasoning_content") or "" for c in chunks if c["choices"]
        )
        assert (
            reasoning
            == completion.completion["choices"][0]["message"]["reasoning_content"]
            == "Think it through."
        )
        assert content_of(chunks) == completion.completion["choices"][0]["message"]["content"] == REPLY
        assert (
            chunks[-1]["usage"]
            == completion.completion["usage"]
            == {
                "prompt_tokens": 5,
                "completion_tokens": 8,
                "total_tokens": 13,
                "prompt_tokens_details": {"cached_tokens": 3},
                "completion_tokens_details": {"reasoning_tokens": 3},
            }
        )


@async_test
async def test_missing_usage_is_estimated_and_marked() -> None:
    async with rig(GeminiScript(omit_usage=True)) as r:
        completion = await r.provider.chat(chat_request(), "gemini-x")
        chunks = await r.collect()

        assert completion.usage == Usage(prompt_tokens=6, completion_tokens=8, source="estimated")
        assert chunks[-1][USAGE_SOURCE_MARKER] == "estimated"
        assert usage_counts(chunks[-1]["usage"]) == ESTIMATED_USAGE


@async_test
async def test_tools_round_trip() -> None:
    script = GeminiScript(
        function_calls=(("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"})),
        thought_signature="c2lnLTE=",
        reply="Sunny in both.",
    )
    async with rig(script) as r:
        ask = messages_request(
            {"role": "user", "content": "Weather in Paris and Rome?"}, tools=[weather_tool()]
        )

        first = await r.provider.chat(ask, "gemini-x")

        choice = first.completion["choices"][0]
        assert choice["finish_reason"] == "tool_calls"
        calls = choice["message"]["tool_calls"]
        assert [json.loads(call["function"]["arguments"]) for call in calls] == [
            {"city": "Paris"},
            {"city": "Rome"},
        ]
        assert calls[0]["extra_content"] == {"google": {"thought_signature": "c2lnLTE="}}

        results = [
            {"role": "tool", "tool_call_id": call["id"], "content": f'{{"sky":"sunny {n}"}}'}
            for n, call in enumerate(calls)
        ]
        answer = messages_request(
            *ask.model_dump()["messages"], choice["message"], *results, tools=[weather_tool()]
        )
        second = await r.provider.chat(answer, "gemini-x")

        assert second.completion["choices"][0]["message"]["content"] == "Sunny in both."
        sent = r.upstream.requests[1].json["contents"]
        assert sent[1]["parts"][0]["thoughtSignature"] == "c2lnLTE="
        assert sent[2] == {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"sky": "sunny 0"}}},
                {"functionResponse": {"name": "get_weather", "response": {"sky": "sunny 1"}}},
            ],
        }
        # The strict schema's additionalProperties never reached Gemini, which refuses it.
        assert "additionalProperties" not in json.dumps(r.upstream.requests[0].json["tools"])


@async_test
async def test_streamed_tool_calls() -> None:
    script = GeminiScript(function_calls=(("get_weather", {"city": "Oslo"}),), function_call_ids=True)
    async with rig(script) as r:
        chunks = await r.collect(chat_request(stream=True, tools=[weather_tool()], tool_choice="required"))

        [call] = [
            c["choices"][0]["delta"]["tool_calls"][0]
            for c in chunks
            if c["choices"] and "tool_calls" in c["choices"][0]["delta"]
        ]
        assert call["index"] == 0
        assert call["id"].startswith("fc-")
        assert call["function"] == {"name": "get_weather", "arguments": '{"city":"Oslo"}'}
        assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
        assert r.upstream.requests[0].json["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}


@async_test
async def test_image_input_and_json_schema_reach_the_strict_api() -> None:
    async with rig() as r:
        schema = {
            "type": "object",
            "properties": {"colour": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
            "required": ["colour"],
            "additionalProperties": False,
        }
        request = messages_request(
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What colour?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                ],
            },
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "c", "strict": True, "schema": schema},
            },
        )

        result = await r.provider.chat(request, "gemini-x")

        sent = r.upstream.requests[0].json
        assert sent["contents"][0]["parts"][1] == {
            "inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}
        }
        assert sent["generationConfig"]["responseSchema"]["properties"]["colour"] == {
            "type": "string",
            "nullable": True,
        }
        assert result.usage.prompt_tokens == 3 + 2 + 258  # the image counts as Gemini counts images


@async_test
async def test_several_candidates() -> None:
    async with rig() as r:
        result = await r.provider.chat(chat_request(n=2), "gemini-x")
        chunks = await r.collect(chat_request(stream=True, n=2))

        assert [choice["index"] for choice in result.completion["choices"]] == [0, 1]
        assert result.usage.completion_tokens == 10
        finishes = [
            c["choices"][0]["index"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]
        ]
        assert finishes == [0, 1]
        assert chunks[-1]["usage"]["completion_tokens"] == 10


@async_test
async def test_a_blocked_prompt_is_a_400_before_any_chunk() -> None:
    async with rig(GeminiScript(block_reason="SAFETY")) as r:
        with pytest.raises(UpstreamRejectedError) as chat_failure:
            await r.provider.chat(chat_request(), "gemini-x")
        received: list[ChatChunk] = []
        with pytest.raises(UpstreamRejectedError) as stream_failure:
            await r.collect_into(received)

        for failure in (chat_failure, stream_failure):
            assert (failure.value.status, failure.value.code) == (400, "content_filter")
            assert "SAFETY" in failure.value.message
        assert received == []


@async_test
async def test_embeddings_in_order_across_batches() -> None:
    async with rig() as r:
        texts = [f"text number {n}" for n in range(EMBED_BATCH_LIMIT + 30)]

        whole = await r.provider.embed(
            EmbeddingRequest(model="team/embed", input=texts, dimensions=4), "gemini-embedding-001"
        )
        single = await r.provider.embed(
            EmbeddingRequest(model="team/embed", input=texts[-1], dimensions=4), "gemini-embedding-001"
        )

        assert len(whole.body["data"]) == len(texts)
        assert [item["index"] for item in whole.body["data"]] == list(range(len(texts)))
        assert whole.body["data"][-1]["embedding"] == single.body["data"][0]["embedding"]
        assert whole.body["model"] == "team/embed"
        assert whole.usage.source == "estimated"
        sizes = [len(sent.json["requests"]) for sent in r.upstream.requests[:2]]
        assert sorted(sizes) == [30, EMBED_BATCH_LIMIT]
        assert r.upstream.requests[0].path == "/v1beta/models/gemini-embedding-001:batchEmbedContents"
        assert r.upstream.requests[0].json["requests"][0]["outputDimensionality"] == 4


@async_test
async def test_token_id_embeddings_are_refused_before_any_call() -> None:
    async with rig() as r:
        with pytest.raises(InvalidRequestError) as refused:
            await r.provider.embed(EmbeddingRequest(model="m", input=[[1, 2, 3]]), "gemini-embedding-001")

        assert (refused.value.status, refused.value.param) == (400, "input")
        assert r.upstream.requests == []


@async_test
async def test_imagen_images() -> None:
    async with rig() as r:
        result = await r.provider.image(
            ImageRequest(model="team/draw", prompt="a red fox", n=2, size="1792x1024"), "imagen-x"
        )

        assert result.images == 2
        assert [png_size(item["b64_json"]) for item in result.body["data"]] == [(16, 9), (16, 9)]
        assert result.usage is None
        [sent] = r.upstream.requests
        assert sent.path == "/v1beta/models/imagen-x:predict"
        assert sent.json["parameters"]["sampleCount"] == 2


@async_test
async def test_gemini_image_model_images() -> None:
    async with rig() as r:
        result = await r.provider.image(
            ImageRequest(model="team/draw", prompt="a red fox", n=2, size="1536x1024"), "gemini-x-image"
        )

        assert result.images == 2
        assert png_size(result.body["data"][0]["b64_json"]) == (3, 2)
        assert result.usage == Usage(prompt_tokens=2 * 6, completion_tokens=2 * (4 + 1290))
        assert len(r.upstream.requests) == 2


@async_test
async def test_filtered_images_are_a_content_filter_400() -> None:
    async with rig(GeminiScript(filter_images=True)) as r:
        with pytest.raises(UpstreamRejectedError, match="filtered out") as refused:
            await r.provider.image(ImageRequest(model="m", prompt="x"), "imagen-x")

        assert refused.value.code == "content_filter"


@async_test
async def test_a_wrong_key_is_a_502_that_does_not_blame_the_caller() -> None:
    async with rig(provider_key="AIza-wrong-key-for-upstream") as r:
        for call in (
            r.provider.chat(chat_request(), "gemini-x"),
            r.collect(),
            r.provider.embed(EmbeddingRequest(model="m", input="x"), "gemini-embedding-001"),
        ):
            with pytest.raises(UpstreamError) as failure:
                await call
            assert (failure.value.status, failure.value.code) == (502, "upstream_auth_failed")
            assert "AIza-wrong" not in json.dumps(failure.value.body())


@async_test
async def test_no_key_is_a_502_too() -> None:
    async with rig(provider_key=None) as r:
        with pytest.raises(UpstreamError) as failure:
            await r.provider.chat(chat_request(), "gemini-x")

        assert (failure.value.status, failure.value.code) == (502, "upstream_auth_failed")
        assert "x-goog-api-key" not in r.upstream.requests[0].headers


@async_test
async def test_an_unknown_model_is_a_404_with_geminis_message() -> None:
    async with rig() as r:
        with pytest.raises(UpstreamRejectedError) as failure:
            await r.provider.chat(chat_request(), "gemini-nope")

        assert failure.value.status == 404
        assert failure.value.message.startswith("models/gemini-nope is not found for API version v1beta")


@async_test
async def test_upstream_5xx_is_a_502() -> None:
    async with rig(GeminiScript(fail_status=503)) as r:
        with pytest.raises(UpstreamError) as failure:
            await r.provider.image(ImageRequest(model="m", prompt="x"), "imagen-x")

        assert (type(failure.value), failure.value.status, failure.value.code) == (
            UpstreamError,
            502,
            "upstream_error",
        )


@async_test
async def test_a_refusal_echoing_the_key_is_redacted() -> None:
    body = {
        "error": {"code": 400, "message": f"Bad request from {UPSTREAM_KEY}", "status": "INVALID_ARGUMENT"}
    }
    async with rig(GeminiScript(fail_status=400, fail_body=body)) as r:
        with pytest.raises(UpstreamRejectedError) as failure:
            await r.provider.chat(chat_request(), "gemini-x")

        assert failure.value.message == "Bad request from [redacted]"


@async_test
async def test_an_upstream_slower_than_the_idle_timeout_is_a_504() -> None:
    async with rig(GeminiScript(latency=5), read_timeout=0.2) as r:
        started = time.perf_counter()
        with pytest.raises(UpstreamTimeoutError) as failure:
            await r.provider.chat(chat_request(), "gemini-x")

        assert (failure.value.status, failure.value.code) == (504, "upstream_timeout")
        assert time.perf_counter() - started < 2


@async_test
async def test_a_stream_that_ends_before_its_finish_is_an_upstream_error() -> None:
    async with rig(GeminiScript(end_after=2)) as r:
        received: list[ChatChunk] = []
        with pytest.raises(UpstreamError, match="ended early"):
            await r.collect_into(received)

        assert content_of(received) == "Hello from"


@async_test
async def test_an_error_event_mid_stream_is_an_upstream_error() -> None:
    async with rig(GeminiScript(error_after=2)) as r:
        with pytest.raises(UpstreamError, match="failed mid-stream: An internal error"):
            await r.collect()


@async_test
async def test_chunk_delays_within_the_idle_timeout_are_fine() -> None:
    async with rig(GeminiScript(chunk_delay=0.05), read_timeout=0.5) as r:
        assert content_of(await r.collect()) == REPLY


@pytest.mark.parametrize("status", [302, 307])
@async_test
async def test_redirects_are_never_followed(status: int) -> None:
    async with rig() as r:
        target = f"{r.upstream.base_url}/v1beta/models/gemini-x:generateContent"
        r.upstream.script = GeminiScript(fail_status=status, fail_headers={"Location": target})
        with pytest.raises(UpstreamError) as failure:
            await r.provider.chat(chat_request(), "gemini-x")

        assert failure.value.code == "upstream_redirect"
        assert len(r.upstream.requests) == 1


@async_test
async def test_a_bad_model_name_is_refused_before_any_call() -> None:
    async with rig() as r:
        with pytest.raises(InvalidRequestError):
            await r.provider.chat(chat_request(), "../../v1beta/files")

        assert r.upstream.requests == []


@async_test
async def test_an_unreachable_upstream_is_a_502_that_hides_the_address() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    http = HttpClient(allow_loopback=True, connect_timeout=2)
    provider = GeminiProvider("gem", GEMINI, f"http://127.0.0.1:{port}", UPSTREAM_KEY, http)
    try:
        with pytest.raises(UpstreamError) as failure:
            await provider.chat(chat_request(), "gemini-x")
    finally:
        await http.close()

    assert (failure.value.status, failure.value.code) == (502, "upstream_unreachable")
    assert str(port) not in failure.value.message


@async_test
async def test_a_consumer_that_stops_early_releases_the_stream() -> None:
    async with rig(GeminiScript(chunk_delay=0.01)) as r:
        stream = r.provider.stream(chat_request(stream=True), "gemini-x")
        first = await anext(stream)
        await stream.aclose()  # type: ignore[attr-defined,unused-ignore]

        assert first["choices"][0]["delta"]["role"] == "assistant"
        assert content_of(await r.collect()) == REPLY  # the client still works


def test_a_base_url_with_its_api_version_is_kept() -> None:
    async def run() -> list[str]:
        async with GeminiUpstream(api_key=UPSTREAM_KEY) as upstream:
            http = HttpClient(allow_loopback=True)
            provider = GeminiProvider("gem", GEMINI, f"{upstream.base_url}/v1beta/", UPSTREAM_KEY, http)
            try:
                await provider.chat(chat_request(), "models/gemini-x")
            finally:
                await http.close()
            return [sent.path for sent in upstream.requests]

    assert asyncio.run(run()) == ["/v1beta/models/gemini-x:generateContent"]
