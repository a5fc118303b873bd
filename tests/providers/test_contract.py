"""The provider contract, once, for every adapter: each preset of the OpenAI-compatible family,
Anthropic, Gemini and Bedrock (through the real boto3 client), each against its loopback vendor
(tests/support/*_upstream.py), through the adapter's public interface only (``base.Provider``).

What every adapter owes its callers:

* a non-streamed completion: OpenAI's ``chat.completion`` under the public model name;
* a stream: the role first, the text, exactly one finish reason, then one ``choices: []`` chunk
  with the usage, and nothing after it;
* usage: the vendor's exact counts (golden values, prompt-cache reads and writes included), or,
  when the vendor sends none, Tollgate's estimate, marked as such, the same for every adapter;
* errors: the vendor's refusal, credential failure, rate limit, 5xx and overload become the same
  Tollgate errors (class, status, code, ``Retry-After``, retryable or not), before the first chunk
  and mid-stream (a stall is the idle timeout, a dropped connection an upstream error);
* tools both ways: OpenAI tool definitions reach the vendor in its format, its calls come back as
  OpenAI ``tool_calls`` (streamed and not), and a tool result goes back answering its call;
* images: an image in a message reaches the vendor natively, an unusable image URL is a 400 (never
  a silently dropped part), and image generation and embeddings work exactly where the adapter
  says it offers them, and are a clear 400 where it does not.

Per-vendor specifics (models, scripts, golden numbers, where a vendor puts what on the wire) live
in the ``CASES`` table; the tests themselves are the same for everyone.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, ParamSpec

import pytest

from tests.support.anthropic_upstream import AnthropicScript, AnthropicUpstream
from tests.support.anthropic_upstream import ToolUse as AnthropicToolUse
from tests.support.bedrock_upstream import BedrockScript, BedrockUpstream, tiny_png
from tests.support.bedrock_upstream import ToolUse as BedrockToolUse
from tests.support.gemini_upstream import GeminiScript, GeminiUpstream
from tests.support.openai_upstream import OpenAIUpstream, UpstreamScript
from tollgate.errors import (
    InvalidRequestError,
    RateLimitError,
    TollgateError,
    UpstreamError,
    UpstreamRejectedError,
    UpstreamTimeoutError,
)
from tollgate.providers.anthropic import AnthropicProvider
from tollgate.providers.base import USAGE_SOURCE_MARKER, Capability, Provider, Usage
from tollgate.providers.bedrock import BedrockProvider
from tollgate.providers.factory import build_adapter
from tollgate.providers.gemini import GeminiProvider
from tollgate.providers.http import HttpClient
from tollgate.providers.openai_compat import OpenAICompatibleProvider
from tollgate.providers.presets import PRESETS
from tollgate.routing import is_retryable
from tollgate.schemas.openai import ChatChunk, ChatRequest, EmbeddingRequest, ImageRequest
from tollgate.store.records import ProviderRecord

P = ParamSpec("P")

REPLY = "Hello from the loopback."
FIRST_WORD = "Hello"
CITY = {"city": "Paris"}
PNG = tiny_png()
PNG_BASE64 = base64.b64encode(PNG).decode()
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
#: Tollgate's own estimate for ``chat_request()`` and ``REPLY``, whoever the vendor is.
ESTIMATED = Usage(prompt_tokens=12, completion_tokens=6, source="estimated")

Failure = Literal["refused", "credentials", "rate_limited", "server", "overloaded"]


def async_test(test: Callable[P, Awaitable[None]]) -> Callable[P, None]:
    """Runs an async test in its own event loop (pytest-asyncio is not installed)."""

    @functools.wraps(test)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), timeout=10))

    return run


def chat_request(**fields: Any) -> ChatRequest:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]
    return ChatRequest.model_validate({"model": "team/chat", "messages": messages, **fields})


def image_message(url: str) -> dict[str, Any]:
    return {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": url}},
        ],
    }


def content_of(chunks: list[ChatChunk]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def tool_calls_of(chunks: list[ChatChunk]) -> list[dict[str, Any]]:
    """Streamed tool calls, accumulated by index as OpenAI's SDKs do."""
    calls: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            for call in choice["delta"].get("tool_calls") or ():
                entry = calls.setdefault(call["index"], {"id": "", "type": "", "name": "", "arguments": ""})
                entry["id"] += call.get("id") or ""
                entry["type"] += call.get("type") or ""
                entry["name"] += (call.get("function") or {}).get("name") or ""
                entry["arguments"] += (call.get("function") or {}).get("arguments") or ""
    return [calls[index] for index in sorted(calls)]


# == What each vendor looks like ===================================================================


@dataclass(frozen=True)
class Scenario:
    """What the loopback vendor is asked to do, in the contract's words."""

    reply: str = REPLY
    #: The model calls ``get_weather(CITY)`` (when it is offered).
    tool_call: bool = False
    #: The vendor reports prompt-cache reads (and writes, where it has them).
    cached: bool = False
    omit_usage: bool = False
    failure: Failure | None = None
    #: Go silent, or drop the connection, right after the event carrying ``FIRST_WORD``.
    stall: bool = False
    drop: bool = False


@dataclass(frozen=True)
class VendorCase:
    """One adapter against its loopback vendor. Subclasses say how the vendor is scripted and
    where it puts things on the wire; the numbers are the vendor's own golden values."""

    id: str
    chat_model: str
    #: Usage of ``chat_request()`` answered with ``REPLY``; then with the prompt cache in play.
    golden: Usage
    golden_cached: Usage
    #: Prompt tokens of one ``image_message`` (the vendor's own way of counting images).
    image_prompt_tokens: int
    embedding_model: str | None = None
    embedding_usage: Usage | None = None
    image_model: str | None = None
    #: ``Retry-After`` seconds a rate limit of this vendor carries.
    retry_after: int | None = None
    #: The code of the vendor's "overloaded" answer.
    overloaded_code: str = "upstream_error"
    #: The adapter refuses an unusable image URL itself, before any call (else the vendor does).
    checks_image_urls: bool = True
    #: Which loopback server serves this case (cases may share one).
    server: str = ""
    #: How many stream events carry everything up to ``FIRST_WORD``.
    first_word_events: ClassVar[int] = 2

    def start(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def build(self, server: Any, http: HttpClient, read_timeout: float) -> Provider:
        raise NotImplementedError

    def record(self, server: Any) -> ProviderRecord:
        raise NotImplementedError

    def script(self, scenario: Scenario) -> Any:
        raise NotImplementedError

    # Where the vendor's request carries things.
    def sent_tools(self, body: Any) -> dict[str, set[str]]:
        """The declared tools: name -> parameter names."""
        raise NotImplementedError

    def sent_tool_result(self, body: Any, call: Mapping[str, Any]) -> str | None:
        """The text of the tool result answering ``call`` (an OpenAI tool call), if sent."""
        raise NotImplementedError

    def sent_image(self, body: Any) -> tuple[str, str]:
        """The media type and base64 data of the image in the last message."""
        raise NotImplementedError


@dataclass(frozen=True)
class OpenAICase(VendorCase):
    preset: str = "openai"
    key: str | None = "sk-upstream-contract"

    FAILURES: ClassVar[dict[str, dict[str, Any]]] = {
        "refused": {"fail_status": 400},
        "credentials": {"fail_status": 401},
        "rate_limited": {"fail_status": 429, "fail_headers": {"Retry-After": "7"}},
        "server": {"fail_status": 500},
        "overloaded": {"fail_status": 503},
    }

    def start(self) -> AbstractContextManager[Any]:
        return OpenAIUpstream.in_thread(api_key=self.key)

    def build(self, server: Any, http: HttpClient, read_timeout: float) -> Provider:
        preset = PRESETS[self.preset]
        return OpenAICompatibleProvider(
            self.id, preset, server.base_url, self.key, http, read_timeout=read_timeout
        )

    def record(self, server: Any) -> ProviderRecord:
        return ProviderRecord(
            name=self.id, type=self.preset, base_url=server.base_url, created_at=0, updated_at=0
        )

    def script(self, scenario: Scenario) -> UpstreamScript:
        fields: dict[str, Any] = {"reply": scenario.reply, "omit_usage": scenario.omit_usage}
        if scenario.tool_call:
            fields |= {"reply": "", "tool_calls": (("get_weather", CITY),)}
        if scenario.cached:
            fields["cached_tokens"] = 8
        if scenario.stall:
            fields |= {"stall_after": self.first_word_events, "stall_seconds": 5}
        if scenario.drop:
            fields["drop_after"] = self.first_word_events
        if scenario.failure:
            fields |= self.FAILURES[scenario.failure]
        return UpstreamScript(**fields)

    def sent_tools(self, body: Any) -> dict[str, set[str]]:
        return {t["function"]["name"]: set(t["function"]["parameters"]["properties"]) for t in body["tools"]}

    def sent_tool_result(self, body: Any, call: Mapping[str, Any]) -> str | None:
        answers = [m["content"] for m in body["messages"] if m.get("tool_call_id") == call["id"]]
        return answers[0] if answers else None

    def sent_image(self, body: Any) -> tuple[str, str]:
        url = body["messages"][-1]["content"][1]["image_url"]["url"]
        header, _, data = url.partition(",")
        return header.removeprefix("data:").removesuffix(";base64"), data


@dataclass(frozen=True)
class AnthropicCase(VendorCase):
    key: str = "sk-ant-upstream-contract"
    first_word_events: ClassVar[int] = 4  # message_start, content_block_start, ping, "Hello"

    FAILURES: ClassVar[dict[str, dict[str, Any]]] = {
        "refused": {"fail_status": 400},
        "credentials": {"fail_status": 401},
        "rate_limited": {"fail_status": 429, "fail_headers": {"retry-after": "9"}},
        "server": {"fail_status": 500},
        "overloaded": {"fail_status": 529},
    }

    def start(self) -> AbstractContextManager[Any]:
        return AnthropicUpstream.in_thread(api_key=self.key)

    def build(self, server: Any, http: HttpClient, read_timeout: float) -> Provider:
        preset = PRESETS["anthropic"]
        return AnthropicProvider(self.id, preset, server.base_url, self.key, http, read_timeout=read_timeout)

    def record(self, server: Any) -> ProviderRecord:
        return ProviderRecord(
            name=self.id, type="anthropic", base_url=server.base_url, created_at=0, updated_at=0
        )

    def script(self, scenario: Scenario) -> AnthropicScript:
        fields: dict[str, Any] = {"reply": scenario.reply, "omit_usage": scenario.omit_usage}
        if scenario.tool_call:
            fields |= {"reply": "", "tool_uses": (AnthropicToolUse("get_weather", CITY),)}
        if scenario.cached:
            fields |= {"cache_read_tokens": 100, "cache_write_tokens": 20}
        if scenario.stall:
            fields |= {"stall_after": self.first_word_events, "stall_seconds": 5}
        if scenario.drop:
            fields["drop_after"] = self.first_word_events
        if scenario.failure:
            fields |= self.FAILURES[scenario.failure]
        return AnthropicScript(**fields)

    def sent_tools(self, body: Any) -> dict[str, set[str]]:
        return {t["name"]: set(t["input_schema"]["properties"]) for t in body["tools"]}

    def sent_tool_result(self, body: Any, call: Mapping[str, Any]) -> str | None:
        for message in body["messages"]:
            for block in message["content"] if isinstance(message["content"], list) else ():
                if block.get("type") == "tool_result" and block.get("tool_use_id") == call["id"]:
                    content = block["content"]
                    return content if isinstance(content, str) else content[0]["text"]
        return None

    def sent_image(self, body: Any) -> tuple[str, str]:
        [image] = [b for b in body["messages"][-1]["content"] if b["type"] == "image"]
        assert image["source"]["type"] == "base64"
        return image["source"]["media_type"], image["source"]["data"]


#: Gemini's answer to a key it does not know: a 400, not a 401.
GEMINI_KEY_INVALID = {
    "error": {
        "code": 400,
        "message": "API key not valid. Please pass a valid API key.",
        "status": "INVALID_ARGUMENT",
        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}],
    }
}


@dataclass(frozen=True)
class GeminiCase(VendorCase):
    key: str = "AIza-upstream-contract"
    first_word_events: ClassVar[int] = 1  # every event is a part; the first is "Hello"

    FAILURES: ClassVar[dict[str, dict[str, Any]]] = {
        "refused": {"fail_status": 400},
        "credentials": {"fail_status": 400, "fail_body": GEMINI_KEY_INVALID},
        "rate_limited": {"fail_status": 429},  # RetryInfo says 21s
        "server": {"fail_status": 500},
        "overloaded": {"fail_status": 503},
    }

    def start(self) -> AbstractContextManager[Any]:
        return GeminiUpstream.in_thread(api_key=self.key)

    def build(self, server: Any, http: HttpClient, read_timeout: float) -> Provider:
        preset = PRESETS["gemini"]
        return GeminiProvider(self.id, preset, server.base_url, self.key, http, read_timeout=read_timeout)

    def record(self, server: Any) -> ProviderRecord:
        return ProviderRecord(
            name=self.id, type="gemini", base_url=server.base_url, created_at=0, updated_at=0
        )

    def script(self, scenario: Scenario) -> GeminiScript:
        fields: dict[str, Any] = {"reply": scenario.reply, "omit_usage": scenario.omit_usage}
        if scenario.tool_call:
            fields["function_calls"] = (("get_weather", CITY),)
        if scenario.cached:
            fields["cached_tokens"] = 8
        if scenario.stall:
            fields |= {"stall_after": self.first_word_events, "stall_seconds": 5}
        if scenario.drop:
            fields["drop_after"] = self.first_word_events
        if scenario.failure:
            fields |= self.FAILURES[scenario.failure]
        return GeminiScript(**fields)

    def sent_tools(self, body: Any) -> dict[str, set[str]]:
        declared = [d for tool in body["tools"] for d in tool["functionDeclarations"]]
        return {d["name"]: set(d["parameters"]["properties"]) for d in declared}

    def sent_tool_result(self, body: Any, call: Mapping[str, Any]) -> str | None:
        # Gemini answers a call by the function's name (and its id, when the call had one).
        for content in body["contents"]:
            for part in content["parts"]:
                response = part.get("functionResponse")
                if response and response["name"] == call["function"]["name"]:
                    return str(response["response"]["output"])
        return None

    def sent_image(self, body: Any) -> tuple[str, str]:
        [image] = [p["inlineData"] for p in body["contents"][-1]["parts"] if "inlineData" in p]
        return image["mimeType"], image["data"]


@dataclass(frozen=True)
class BedrockCase(VendorCase):
    FAILURES: ClassVar[dict[str, dict[str, Any]]] = {
        "refused": {"fail": "ValidationException"},
        "credentials": {"fail": "UnrecognizedClientException"},
        "rate_limited": {"fail": "ThrottlingException"},  # Bedrock sends no Retry-After
        "server": {"fail": "InternalServerException"},
        "overloaded": {"fail": "ServiceUnavailableException"},
    }

    def start(self) -> AbstractContextManager[Any]:
        return BedrockUpstream.in_thread()

    def build(self, server: Any, http: HttpClient, read_timeout: float) -> Provider:
        # As the factory builds it, with the idle timeout of the HTTP families.
        return BedrockProvider(
            self.id,
            region="us-east-1",
            endpoint_url=server.endpoint_url,
            connect_timeout=2.0,
            read_timeout=read_timeout,
            url_check=http.check_url,
            address_check=http.check_resolved,
        )

    def record(self, server: Any) -> ProviderRecord:
        return ProviderRecord(
            name=self.id,
            type="bedrock",
            region="us-east-1",
            base_url=server.endpoint_url,
            created_at=0,
            updated_at=0,
        )

    def script(self, scenario: Scenario) -> BedrockScript:
        fields: dict[str, Any] = {"reply": scenario.reply, "omit_usage": scenario.omit_usage}
        if scenario.tool_call:
            fields |= {"reply": "", "tool_use": BedrockToolUse("get_weather", CITY)}
        if scenario.cached:
            fields |= {"cache_read_tokens": 30, "cache_write_tokens": 4}
        if scenario.stall:
            fields |= {"stall_after": self.first_word_events, "stall_seconds": 5}
        if scenario.drop:
            fields["drop_after"] = self.first_word_events
        if scenario.failure:
            fields |= self.FAILURES[scenario.failure]
        return BedrockScript(**fields)

    def sent_tools(self, body: Any) -> dict[str, set[str]]:
        specs = [tool["toolSpec"] for tool in body["toolConfig"]["tools"]]
        return {spec["name"]: set(spec["inputSchema"]["json"]["properties"]) for spec in specs}

    def sent_tool_result(self, body: Any, call: Mapping[str, Any]) -> str | None:
        for message in body["messages"]:
            for block in message["content"]:
                result = block.get("toolResult")
                if result and result["toolUseId"] == call["id"]:
                    return str(result["content"][0]["text"])
        return None

    def sent_image(self, body: Any) -> tuple[str, str]:
        [image] = [b["image"] for b in body["messages"][-1]["content"] if "image" in b]
        return f"image/{image['format']}", image["source"]["bytes"]  # base64 in Bedrock's JSON


def openai_case(preset: str, *, key: str | None = "sk-upstream-contract") -> OpenAICase:
    """A preset of the OpenAI-compatible family: one adapter, one loopback server, the endpoints
    its vendor serves. A keyless one (Ollama) gets a server that asks for no key."""
    capabilities = PRESETS[preset].capabilities
    embeds = Capability.EMBEDDINGS in capabilities
    return OpenAICase(
        id=preset,
        preset=preset,
        key=key,
        server="openai" if key else "openai-keyless",
        chat_model="gpt-loopback",
        # (2 + 5) + (2 + 5) prompt tokens; 4 words. Cache reads are a part of the prompt.
        golden=Usage(prompt_tokens=14, completion_tokens=4),
        golden_cached=Usage(prompt_tokens=14, completion_tokens=4, cached_tokens=8),
        image_prompt_tokens=3 + 5 + 85,
        embedding_model="text-embedding-loopback" if embeds else None,
        embedding_usage=Usage(prompt_tokens=5, completion_tokens=0) if embeds else None,
        image_model="gpt-image-1" if Capability.IMAGES in capabilities else None,
        retry_after=7,
        checks_image_urls=False,  # passed through; the vendor refuses it
    )


CASES: list[VendorCase] = [
    *(openai_case(preset) for preset in ("openai", "deepseek", "xai", "openrouter", "doubao", "poe")),
    openai_case("ollama", key=None),
    openai_case("openai_compatible"),
    AnthropicCase(
        id="anthropic",
        server="anthropic",
        chat_model="claude-x",
        # 2 system words + (2 + 5); cache reads and writes are reported apart and added in.
        golden=Usage(prompt_tokens=9, completion_tokens=4),
        golden_cached=Usage(prompt_tokens=129, completion_tokens=4, cached_tokens=100, cache_write_tokens=20),
        image_prompt_tokens=3 + 5,
        retry_after=9,
        overloaded_code="upstream_overloaded",
    ),
    GeminiCase(
        id="gemini",
        server="gemini",
        chat_model="gemini-x",
        # (3 + 2) for the system instruction + (3 + 2); the cached tokens are a part of the prompt.
        golden=Usage(prompt_tokens=10, completion_tokens=4),
        golden_cached=Usage(prompt_tokens=10, completion_tokens=4, cached_tokens=8),
        image_prompt_tokens=3 + 3 + 258,
        embedding_model="gemini-embedding-001",
        # Gemini reports no embedding usage: estimated from the input.
        embedding_usage=Usage(prompt_tokens=7, completion_tokens=0, source="estimated"),
        image_model="imagen-x",
        retry_after=21,
    ),
    BedrockCase(
        id="bedrock",
        server="bedrock",
        chat_model="anthropic.claude-x",
        golden=Usage(prompt_tokens=9, completion_tokens=4),
        golden_cached=Usage(prompt_tokens=43, completion_tokens=4, cached_tokens=30, cache_write_tokens=4),
        image_prompt_tokens=3 + 5,
        embedding_model="amazon.titan-embed-text-v2:0",
        embedding_usage=Usage(prompt_tokens=5, completion_tokens=0),
        image_model="amazon.nova-canvas-v1:0",
    ),
]

every_adapter = pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])


# == The rig ========================================================================================


class Servers:
    """The loopback vendors of this module, each started on first use and shared by its cases."""

    def __init__(self) -> None:
        self._stack = ExitStack()
        self._running: dict[str, Any] = {}

    def get(self, case: VendorCase) -> Any:
        if case.server not in self._running:
            self._running[case.server] = self._stack.enter_context(case.start())
        return self._running[case.server]

    def close(self) -> None:
        self._stack.close()


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    running = Servers()
    try:
        yield running
    finally:
        running.close()


@pytest.fixture(autouse=True)
def aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """Dummy AWS credentials for boto3 to sign with, and nothing else of the developer's."""
    for name in (
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_BEARER_TOKEN_BEDROCK",
        "AWS_ENDPOINT_URL_BEDROCK_RUNTIME",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIALOOPBACKCONTRACT")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "loopback-secret-access-key")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))


@dataclass
class Rig:
    case: VendorCase
    provider: Provider
    server: Any
    #: How many requests the server had seen when the rig was set up.
    seen: int = field(default=0)

    def sent(self) -> list[Any]:
        """The bodies of the requests sent since the rig was set up."""
        return [request.json for request in self.server.requests[self.seen :]]

    def script(self, scenario: Scenario) -> None:
        self.server.script = self.case.script(scenario)

    async def collect(self, request: ChatRequest | None = None) -> list[ChatChunk]:
        stream = self.provider.stream(request or chat_request(stream=True), self.case.chat_model)
        return [chunk async for chunk in stream]

    async def collect_into(self, received: list[ChatChunk]) -> None:
        """Like ``collect``, keeping what arrived before a failure."""
        async for chunk in self.provider.stream(chat_request(stream=True), self.case.chat_model):
            received.append(chunk)


@asynccontextmanager
async def rig(
    case: VendorCase, servers: Servers, scenario: Scenario | None = None, *, read_timeout: float = 5.0
) -> AsyncIterator[Rig]:
    server = servers.get(case)
    server.script = case.script(scenario or Scenario())
    http = HttpClient(allow_loopback=True, connect_timeout=2.0, read_timeout=read_timeout)
    try:
        yield Rig(case, case.build(server, http, read_timeout), server, len(server.requests))
    finally:
        await http.close()


# == The contract ===================================================================================


@every_adapter
def test_the_factory_builds_the_adapter_that_is_a_provider(case: VendorCase, servers: Servers) -> None:
    server = servers.get(case)
    http = HttpClient(allow_loopback=True)
    key = getattr(case, "key", None)

    built = build_adapter(case.record(server), key, http)
    direct = case.build(server, http, 5.0)

    assert isinstance(built, Provider)
    assert type(built) is type(direct)
    assert built.name == case.id
    assert {Capability.CHAT, Capability.STREAM, Capability.TOOLS, Capability.VISION} <= built.capabilities
    assert built.capabilities == direct.capabilities
    assert (Capability.EMBEDDINGS in built.capabilities) == (case.embedding_model is not None)
    assert (Capability.IMAGES in built.capabilities) == (case.image_model is not None)
    if key:
        assert key not in repr(built)


@every_adapter
@async_test
async def test_chat(case: VendorCase, servers: Servers) -> None:
    async with rig(case, servers) as r:
        result = await r.provider.chat(chat_request(temperature=0.5), case.chat_model)

        completion = result.completion
        assert completion["object"] == "chat.completion"
        assert completion["model"] == "team/chat"
        assert isinstance(completion["id"], str) and completion["id"]
        [choice] = completion["choices"]
        assert choice["message"]["role"] == "assistant"
        assert choice["message"]["content"] == REPLY
        assert choice["finish_reason"] == "stop"
        assert result.usage == case.golden
        assert Usage.from_openai(completion["usage"]) == case.golden
        assert completion["usage"]["total_tokens"] == case.golden.total_tokens
        assert len(r.sent()) == 1


@every_adapter
@async_test
async def test_stream_order_and_exactly_one_termination(case: VendorCase, servers: Servers) -> None:
    async with rig(case, servers) as r:
        chunks = await r.collect()

        # The role first, then the text...
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        assert content_of(chunks) == REPLY
        # ...one finish reason, on the chunk before the last...
        finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
        assert [reason for reason in finishes if reason] == ["stop"]
        assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
        # ...then the usage, alone, last; nothing comes after it.
        assert chunks[-1]["choices"] == []
        assert Usage.from_openai(chunks[-1]["usage"]) == case.golden
        assert USAGE_SOURCE_MARKER not in chunks[-1]
        assert all("usage" not in chunk for chunk in chunks[:-1])
        assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
        assert {chunk["model"] for chunk in chunks} == {"team/chat"}
        assert len({chunk["id"] for chunk in chunks}) == 1


@every_adapter
@async_test
async def test_usage_golden_values_with_the_prompt_cache(case: VendorCase, servers: Servers) -> None:
    async with rig(case, servers, Scenario(cached=True)) as r:
        result = await r.provider.chat(chat_request(), case.chat_model)
        chunks = await r.collect()

        assert result.usage == case.golden_cached
        assert result.usage.source == "provider"
        assert Usage.from_openai(chunks[-1]["usage"]) == case.golden_cached
        assert chunks[-1]["usage"]["total_tokens"] == case.golden_cached.total_tokens


@every_adapter
@async_test
async def test_no_usage_from_the_vendor_is_estimated_and_marked(case: VendorCase, servers: Servers) -> None:
    async with rig(case, servers, Scenario(omit_usage=True)) as r:
        result = await r.provider.chat(chat_request(), case.chat_model)
        chunks = await r.collect()

        assert result.usage == ESTIMATED
        final = chunks[-1]
        assert final["choices"] == []
        assert final[USAGE_SOURCE_MARKER] == "estimated"
        counts = Usage.from_openai(final["usage"])
        assert (counts.prompt_tokens, counts.completion_tokens) == (
            ESTIMATED.prompt_tokens,
            ESTIMATED.completion_tokens,
        )
        assert sum(1 for chunk in chunks if "usage" in chunk) == 1


@dataclass(frozen=True)
class ExpectedError:
    kind: type[TollgateError]
    status: int
    code: str | None
    retryable: bool


def expected_error(case: VendorCase, failure: Failure) -> ExpectedError:
    return {
        "refused": ExpectedError(UpstreamRejectedError, 400, None, retryable=False),
        "credentials": ExpectedError(UpstreamError, 502, "upstream_auth_failed", retryable=False),
        "rate_limited": ExpectedError(RateLimitError, 429, "upstream_rate_limited", retryable=True),
        "server": ExpectedError(UpstreamError, 502, "upstream_error", retryable=True),
        "overloaded": ExpectedError(UpstreamError, 502, case.overloaded_code, retryable=True),
    }[failure]


@every_adapter
@pytest.mark.parametrize("failure", ["refused", "credentials", "rate_limited", "server", "overloaded"])
@async_test
async def test_vendor_errors_translate_the_same_way(
    case: VendorCase, failure: Failure, servers: Servers
) -> None:
    expected = expected_error(case, failure)
    async with rig(case, servers, Scenario(failure=failure)) as r:
        for call in (r.provider.chat(chat_request(), case.chat_model), r.collect()):
            with pytest.raises(TollgateError) as caught:
                await call

            error = caught.value
            assert type(error) is expected.kind
            assert error.status == expected.status
            if expected.code is not None:
                assert error.code == expected.code
            assert is_retryable(error) is expected.retryable
            if isinstance(error, RateLimitError):
                assert error.retry_after == case.retry_after
            key = getattr(case, "key", None)
            assert not key or key not in json.dumps(error.body())
        assert len(r.sent()) == 2  # one attempt each: retries are the router's, never the adapter's


@every_adapter
@async_test
async def test_a_stall_mid_stream_is_the_idle_timeout(case: VendorCase, servers: Servers) -> None:
    async with rig(case, servers, Scenario(stall=True), read_timeout=0.3) as r:
        started = time.perf_counter()
        received: list[ChatChunk] = []
        with pytest.raises(UpstreamTimeoutError) as caught:
            await r.collect_into(received)

        assert (caught.value.status, caught.value.code) == (504, "upstream_timeout")
        assert is_retryable(caught.value)
        assert content_of(received) == FIRST_WORD
        assert all("usage" not in chunk for chunk in received)
        assert time.perf_counter() - started < 2.5


@every_adapter
@async_test
async def test_a_connection_dropped_mid_stream_is_an_upstream_error(
    case: VendorCase, servers: Servers
) -> None:
    async with rig(case, servers, Scenario(drop=True)) as r:
        received: list[ChatChunk] = []
        with pytest.raises(UpstreamError) as caught:
            await r.collect_into(received)

        assert type(caught.value) is UpstreamError
        assert (caught.value.status, caught.value.code) == (502, "upstream_disconnected")
        assert is_retryable(caught.value)
        assert content_of(received) == FIRST_WORD
        assert all("usage" not in chunk for chunk in received)


@every_adapter
@async_test
async def test_tools_reach_the_vendor_and_its_calls_come_back_as_tool_calls(
    case: VendorCase, servers: Servers
) -> None:
    async with rig(case, servers, Scenario(tool_call=True)) as r:
        result = await r.provider.chat(chat_request(tools=[WEATHER_TOOL]), case.chat_model)
        chunks = await r.collect(chat_request(stream=True, tools=[WEATHER_TOOL]))

        for body in r.sent():
            assert case.sent_tools(body) == {"get_weather": {"city"}}
        [choice] = result.completion["choices"]
        assert choice["finish_reason"] == "tool_calls"
        assert not choice["message"].get("content")
        [call] = choice["message"]["tool_calls"]
        assert call["type"] == "function" and call["id"]
        assert call["function"]["name"] == "get_weather"
        assert json.loads(call["function"]["arguments"]) == CITY

        [streamed] = tool_calls_of(chunks)
        assert streamed["type"] == "function" and streamed["id"]
        assert (streamed["name"], json.loads(streamed["arguments"])) == ("get_weather", CITY)
        finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
        assert [reason for reason in finishes if reason] == ["tool_calls"]
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0


@every_adapter
@async_test
async def test_a_tool_result_goes_back_answering_its_call(case: VendorCase, servers: Servers) -> None:
    async with rig(case, servers, Scenario(tool_call=True)) as r:
        ask = chat_request(tools=[WEATHER_TOOL])
        called = await r.provider.chat(ask, case.chat_model)
        message = called.completion["choices"][0]["message"]
        [call] = message["tool_calls"]
        r.script(Scenario(reply="18C in Paris."))

        answer = await r.provider.chat(
            chat_request(
                tools=[WEATHER_TOOL],
                messages=[
                    *ask.model_dump(exclude_none=True)["messages"],
                    message,
                    {"role": "tool", "tool_call_id": call["id"], "content": "18C"},
                ],
            ),
            case.chat_model,
        )

        assert answer.completion["choices"][0]["message"]["content"] == "18C in Paris."
        assert answer.completion["choices"][0]["finish_reason"] == "stop"
        assert case.sent_tool_result(r.sent()[-1], call) == "18C"


@every_adapter
@async_test
async def test_an_image_in_a_message_reaches_the_vendor_natively(case: VendorCase, servers: Servers) -> None:
    async with rig(case, servers) as r:
        request = chat_request(messages=[image_message(f"data:image/png;base64,{PNG_BASE64}")])

        result = await r.provider.chat(request, case.chat_model)

        assert case.sent_image(r.sent()[-1]) == ("image/png", PNG_BASE64)
        assert result.completion["choices"][0]["message"]["content"] == REPLY
        assert result.usage.prompt_tokens == case.image_prompt_tokens


@every_adapter
@async_test
async def test_an_unusable_image_url_is_a_400_never_a_dropped_part(
    case: VendorCase, servers: Servers
) -> None:
    async with rig(case, servers) as r:
        request = chat_request(messages=[image_message("ftp://example.com/cat.png")])

        with pytest.raises(TollgateError) as caught:
            await r.provider.chat(request, case.chat_model)

        assert caught.value.status == 400
        assert isinstance(caught.value, InvalidRequestError | UpstreamRejectedError)
        assert "image_url" in f"{caught.value.param} {caught.value.message}"
        assert len(r.sent()) == (0 if case.checks_image_urls else 1)


@every_adapter
@async_test
async def test_image_generation_where_offered_and_a_clear_400_where_not(
    case: VendorCase, servers: Servers
) -> None:
    async with rig(case, servers) as r:
        request = ImageRequest(model="team/draw", prompt="a red fox", n=2)

        if case.image_model is None:
            with pytest.raises(InvalidRequestError) as caught:
                await r.provider.image(request, "any-model")
            assert (caught.value.status, caught.value.code) == (400, "unsupported_model")
            assert r.sent() == []
            return
        result = await r.provider.image(request, case.image_model)

        assert result.images == 2
        assert len(result.body["data"]) == 2
        for item in result.body["data"]:
            assert item.get("b64_json") or item.get("url")
        assert len(r.sent()) >= 1


@every_adapter
@async_test
async def test_embeddings_where_offered_and_a_clear_400_where_not(case: VendorCase, servers: Servers) -> None:
    async with rig(case, servers) as r:
        request = EmbeddingRequest(model="team/embed", input=["two words", "three more words"])

        if case.embedding_model is None:
            with pytest.raises(InvalidRequestError) as caught:
                await r.provider.embed(request, "any-model")
            assert (caught.value.status, caught.value.code) == (400, "unsupported_model")
            assert r.sent() == []
            return
        result = await r.provider.embed(request, case.embedding_model)

        assert result.body["object"] == "list"
        assert result.body["model"] == "team/embed"
        assert [item["index"] for item in result.body["data"]] == [0, 1]
        first, second = (item["embedding"] for item in result.body["data"])
        assert first and second and first != second
        assert all(isinstance(value, float) for value in first)
        assert result.usage == case.embedding_usage


def test_every_preset_and_family_is_in_the_contract() -> None:
    covered = {getattr(case, "preset", case.id) for case in CASES}

    assert covered == set(PRESETS) - {"fake"}
