"""Acceptance: the official ``anthropic`` SDK against a live local Tollgate, on the fake provider and
through an Anthropic upstream on loopback registered with the admin API; and the ``openai`` SDK on
that same Anthropic-backed model. Both directions of translation, as users would run them."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest

from tests.e2e.test_openai_sdk import issue_key
from tests.support.anthropic_upstream import AnthropicScript, AnthropicUpstream, ToolUse
from tests.support.live import LiveServer

CANARY = f"sk-ant-canary-{secrets.token_hex(16)}"
MODEL = "claude-loop/claude-x"
PLAIN = AnthropicScript(reply="Hi from Claude", cache_read_tokens=50)
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture(scope="module")
def key(live_server: LiveServer) -> str:
    return issue_key(live_server, "claude")


@pytest.fixture(scope="module")
def claude(live_server: LiveServer, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=live_server.base_url, api_key=key, max_retries=0)


@pytest.fixture(scope="module")
def upstream(live_server: LiveServer) -> Iterator[AnthropicUpstream]:
    """The loopback Anthropic, registered as provider ``claude-loop``."""
    with AnthropicUpstream.in_thread(api_key=CANARY, script=PLAIN) as server:
        admin = {"Authorization": f"Bearer {live_server.admin_key}"}
        put = httpx.put(
            f"{live_server.base_url}/admin/v1/providers/claude-loop",
            json={"type": "anthropic", "base_url": server.base_url, "api_key": CANARY},
            headers=admin,
        )
        assert put.status_code == 200, put.text
        yield server


@pytest.fixture
def script(upstream: AnthropicUpstream) -> Iterator[AnthropicUpstream]:
    """The upstream, set back to its plain script after the test."""
    yield upstream
    upstream.script = PLAIN


# -- the fake provider -----------------------------------------------------------------------


def test_messages_create_on_fake_echo(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(
        model="fake/echo", max_tokens=64, messages=[{"role": "user", "content": "ping from the SDK"}]
    )

    assert message.content[0].type == "text"
    assert message.content[0].text == "Echo: ping from the SDK"
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0


def test_messages_stream_on_fake_echo(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model="fake/echo", max_tokens=64, messages=[{"role": "user", "content": "stream me"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()

    assert text == "Echo: stream me"
    assert final.content[0].type == "text" and final.content[0].text == "Echo: stream me"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0


def test_the_sdk_sees_anthropic_errors(claude: anthropic.Anthropic, live_server: LiveServer) -> None:
    with pytest.raises(anthropic.NotFoundError) as not_found:
        claude.messages.create(
            model="nobody/nothing", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
    assert not_found.value.body == {  # type: ignore[comparison-overlap]
        "type": "error",
        "error": {
            "type": "not_found_error",
            "message": "The model 'nobody/nothing' does not exist or you do not have access to it.",
        },
    }

    stranger = anthropic.Anthropic(base_url=live_server.base_url, api_key="tg-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        stranger.messages.create(model="fake/echo", max_tokens=8, messages=[{"role": "user", "content": "x"}])


# -- through the Anthropic upstream ----------------------------------------------------------------


def test_anthropic_sdk_tool_use_round_trip_through_anthropic(
    claude: anthropic.Anthropic, script: AnthropicUpstream
) -> None:
    script.script = AnthropicScript(
        reply="Let me check.", tool_uses=(ToolUse("get_weather", {"city": "Paris"}),)
    )
    question = {"role": "user", "content": "Weather in Paris?"}

    first = claude.messages.create(model=MODEL, max_tokens=256, tools=[WEATHER_TOOL], messages=[question])  # type: ignore[list-item]

    assert first.stop_reason == "tool_use"
    tool_use = first.content[-1]
    assert tool_use.type == "tool_use"
    assert (tool_use.name, tool_use.input) == ("get_weather", {"city": "Paris"})

    script.script = AnthropicScript(reply="18C and sunny.")
    answer = claude.messages.create(
        model=MODEL,
        max_tokens=256,
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        messages=[
            question,  # type: ignore[list-item]
            {"role": "assistant", "content": first.content},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "18C"}],
            },
        ],
    )

    assert answer.content[0].type == "text" and answer.content[0].text == "18C and sunny."
    sent = script.requests[-1]
    assert sent.headers["x-api-key"] == CANARY
    assert sent.json["model"] == "claude-x"
    assert sent.json["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": tool_use.id, "content": "18C"}
    ]


def test_anthropic_sdk_streams_thinking_and_cache_usage_through_anthropic(
    claude: anthropic.Anthropic, script: AnthropicUpstream
) -> None:
    script.script = AnthropicScript(
        thinking="Two and two.", reply="Four.", cache_read_tokens=1000, cache_write_tokens=30, usage_steps=3
    )

    with claude.messages.stream(
        model=MODEL,
        max_tokens=4096,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "2+2?"}],
    ) as stream:
        final = stream.get_final_message()

    thinking, text = final.content
    assert thinking.type == "thinking"
    assert (thinking.thinking, thinking.signature) == ("Two and two.", "sig-loopback-0123")
    assert text.type == "text" and text.text == "Four."
    # The upstream's counts ("2+2?" is 1 word + 5; 3 + 1 words out), cumulative, not summed.
    assert (final.usage.input_tokens, final.usage.output_tokens) == (6, 4)
    assert (final.usage.cache_read_input_tokens, final.usage.cache_creation_input_tokens) == (1000, 30)


def test_a_mid_stream_overload_reaches_the_anthropic_sdk_as_an_error(
    claude: anthropic.Anthropic, script: AnthropicUpstream
) -> None:
    script.script = AnthropicScript(error_after=4)

    with (
        pytest.raises(anthropic.APIStatusError) as failure,
        claude.messages.stream(
            model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "x"}]
        ) as stream,
    ):
        "".join(stream.text_stream)

    assert "Overloaded" in str(failure.value)
    assert CANARY not in str(failure.value)


def test_openai_sdk_streams_from_the_anthropic_backed_model_with_usage(
    live_server: LiveServer, key: str, upstream: AnthropicUpstream
) -> None:
    client = openai.OpenAI(base_url=f"{live_server.base_url}/v1", api_key=key, max_retries=0)

    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hi from Claude"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    # The upstream's counts: system 2 words + ("hello there" 2 + 5), plus 50 cache reads.
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (59, 3)
    assert chunks[-1].usage.prompt_tokens_details is not None
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == 50
    sent = upstream.requests[-1].json
    assert (sent["system"], sent["messages"]) == ("Be brief.", [{"role": "user", "content": "hello there"}])


def test_openai_sdk_gets_tool_calls_and_json_mode_from_anthropic(
    live_server: LiveServer, key: str, script: AnthropicUpstream
) -> None:
    client = openai.OpenAI(base_url=f"{live_server.base_url}/v1", api_key=key, max_retries=0)
    script.script = AnthropicScript(reply="", tool_uses=(ToolUse("get_weather", {"city": "Rome"}),))
    tool = {
        "type": "function",
        "function": {"name": "get_weather", "parameters": WEATHER_TOOL["input_schema"]},
    }

    called = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Rome?"}], tools=[tool]
    )  # type: ignore[list-item]

    assert called.choices[0].finish_reason == "tool_calls"
    [call] = called.choices[0].message.tool_calls or []
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Rome"})  # type: ignore[union-attr]

    script.script = AnthropicScript(
        reply="", tool_uses=(ToolUse("json_response", {"city": "Rome", "degrees": 21}),)
    )
    answered = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Rome, as JSON"}],
        response_format={"type": "json_object"},
    )

    assert json.loads(answered.choices[0].message.content or "") == {"city": "Rome", "degrees": 21}
    assert answered.choices[0].finish_reason == "stop"


def test_openai_sdk_embeddings_and_images_on_anthropic_are_a_clean_400(
    live_server: LiveServer, key: str, upstream: AnthropicUpstream
) -> None:
    client = openai.OpenAI(base_url=f"{live_server.base_url}/v1", api_key=key, max_retries=0)
    before = len(upstream.requests)

    with pytest.raises(openai.BadRequestError) as no_embeddings:
        client.embeddings.create(model=MODEL, input="hello")
    with pytest.raises(openai.BadRequestError) as no_images:
        client.images.generate(model=MODEL, prompt="a red fox")

    assert no_embeddings.value.code == no_images.value.code == "unsupported_model"
    assert len(upstream.requests) == before  # refused before any call to Anthropic
