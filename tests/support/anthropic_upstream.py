"""A fake Anthropic: a real HTTP server on 127.0.0.1 speaking the Messages API, strict like the real
one, and scriptable per test.

Async tests::

    async with AnthropicUpstream(api_key="sk-ant-up") as up:
        up.script = AnthropicScript(thinking="Let me see.", tool_uses=(ToolUse("get_weather", {"city": "Paris"}),))
        ...  # call up.base_url ("http://127.0.0.1:<port>": the API root, as Anthropic's SDKs take it)
        assert up.requests[0].json["max_tokens"] == 4096

Sync tests, or another process's client::

    with AnthropicUpstream.in_thread(api_key="sk-ant-up") as up:
        ...

It serves ``POST /v1/messages``, streamed or not, and is strict where the real API is: the
``x-api-key`` is checked (401 ``authentication_error``), ``anthropic-version`` is required, and so
are ``model``, ``max_tokens`` and ``messages``; roles are ``user`` and ``assistant`` only; unknown
top-level fields, empty text blocks, a ``tool_result`` that answers no ``tool_use`` of the turn
before it, a ``temperature`` above 1 and forced tool use with thinking are all 400s in Anthropic's
error shape ``{"type": "error", "error": {"type", "message"}}``.

A stream follows the real event sequence: ``message_start``, per content block
``content_block_start``, its deltas (``thinking_delta`` and ``signature_delta``, ``text_delta``,
``input_json_delta``) and ``content_block_stop``, with a ``ping`` after the first block starts, then
``message_delta`` (stop reason; usage, cumulative) and ``message_stop``.

Token counts are a pure function of the request and the script, and differ from Tollgate's own
estimator on purpose, so a test can tell provider usage from an estimate:

* ``input_tokens`` = the words of ``system`` + for each message, the words of its text and tool
  results + 5; cache reads and writes are scripted and reported apart, as Anthropic does;
* ``output_tokens`` = the words of the reply + those of the thinking + those of each tool input's JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from tests.support.loopback import LoopbackServer
from tests.support.openai_upstream import RecordedRequest

__all__ = ["AnthropicScript", "AnthropicUpstream", "RecordedRequest", "ToolUse", "input_tokens"]

MESSAGE_OVERHEAD = 5
_dumps = json.JSONEncoder(separators=(",", ":")).encode

_TOP_LEVEL = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "metadata",
        "stop_sequences",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "tools",
        "tool_choice",
        "thinking",
        "service_tier",
    }
)
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_STATUS_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low to access the Anthropic API."),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "model: claude-nope"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit."),
    500: ("api_error", "Internal server error"),
    529: ("overloaded_error", "Overloaded"),
}


@dataclass(frozen=True)
class ToolUse:
    """One ``tool_use`` block of the reply."""

    name: str
    input: Mapping[str, Any]
    id: str = "toolu_loopback_1"


@dataclass(frozen=True)
class AnthropicScript:
    """How the fake Anthropic behaves. Replace it whole: ``up.script = AnthropicScript(...)``."""

    reply: str = "Hello from the Anthropic loopback."
    #: A thinking block (streamed as ``thinking_delta`` words, then ``signature_delta``) first.
    thinking: str | None = None
    signature: str = "sig-loopback-0123"
    #: A ``redacted_thinking`` block with this data, after the thinking.
    redacted_thinking: str | None = None
    #: ``tool_use`` blocks after the text; the stop reason becomes ``tool_use``.
    tool_uses: tuple[ToolUse, ...] = ()
    #: Overrides the stop reason (``end_turn``, or ``tool_use`` with tool uses).
    stop_reason: str | None = None
    #: Prompt tokens read from / written to the prompt cache (reported apart from ``input_tokens``).
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    #: Seconds before the first byte (the status line).
    latency: float = 0.0
    #: Seconds between two stream events.
    chunk_delay: float = 0.0
    #: Fail with this status and Anthropic's error body (``fail_body`` overrides the body).
    fail_status: int | None = None
    fail_body: Mapping[str, Any] | None = None
    fail_headers: Mapping[str, str] = field(default_factory=dict)
    #: Close the connection abruptly after this many events.
    drop_after: int | None = None
    #: Go silent after this many events, for ``stall_seconds`` (or until the server closes).
    stall_after: int | None = None
    stall_seconds: float = 30.0
    #: Send an ``error`` event (``overloaded_error``) after this many events, then end the body.
    error_after: int | None = None
    #: No usage anywhere (the real API always sends it; a proxy in front of it may not).
    omit_usage: bool = False
    #: ``message_start`` reports ``input_tokens: 0``; the real counts come in ``message_delta``.
    zero_input_in_start: bool = False
    #: How many ``message_delta`` events carry the (cumulative) usage; the last has the stop reason.
    usage_steps: int = 1
    #: A ``ping`` event after the first ``content_block_start``, as the real API sends.
    ping: bool = True
    #: A ``ping`` between every two events.
    keepalive: bool = False
    #: End the body cleanly without ``message_stop``.
    omit_message_stop: bool = False
    #: Characters per ``input_json_delta``.
    json_piece: int = 7
    #: Serve these bytes as the stream body instead (a recorded transcript), in pieces of this size.
    transcript: bytes | None = None
    transcript_piece: int = 17


def _words(text: str) -> list[str]:
    words = text.split(" ")
    return [word if position == 0 else f" {word}" for position, word in enumerate(words)]


def _block_text(block: Any) -> str:
    if not isinstance(block, dict):
        return ""
    if block.get("type") == "text" and isinstance(block.get("text"), str):
        text: str = block["text"]
        return text
    if block.get("type") == "tool_result":
        return _content_text(block.get("content"))
    return ""


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(_block_text(block) for block in content)
    return ""


def input_tokens(body: Mapping[str, Any]) -> int:
    """The fake's input count: the words of ``system``, and words + 5 per message."""
    system = len(_content_text(body.get("system")).split())
    messages = body.get("messages") or []
    return system + sum(len(_content_text(m.get("content")).split()) + MESSAGE_OVERHEAD for m in messages)


def output_tokens(script: AnthropicScript) -> int:
    thinking = len(script.thinking.split()) if script.thinking else 0
    tools = sum(len(_dumps(dict(tool.input)).split()) for tool in script.tool_uses)
    return len(script.reply.split()) + thinking + tools


def _error_body(type_: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": type_, "message": message}, "request_id": "req_loopback"}


class _Rejected(Exception):
    """A request the real API would refuse with a 400."""


def _validate(body: Any) -> None:
    """Raises ``_Rejected`` with Anthropic's message for what the real API refuses."""
    if not isinstance(body, dict):
        raise _Rejected("Request body must be a JSON object.")
    for name in body:
        if name not in _TOP_LEVEL:
            raise _Rejected(f"{name}: Extra inputs are not permitted")
    for name in ("model", "messages", "max_tokens"):
        if name not in body:
            raise _Rejected(f"{name}: Field required")
    if not isinstance(body["model"], str) or not body["model"]:
        raise _Rejected("model: Input should be a valid string")
    max_tokens = body["max_tokens"]
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise _Rejected("max_tokens: Input should be greater than or equal to 1")
    temperature = body.get("temperature")
    if temperature is not None and not (isinstance(temperature, int | float) and 0 <= temperature <= 1):
        raise _Rejected("temperature: Input should be less than or equal to 1")
    system = body.get("system")
    system_blocks = system if isinstance(system, list) else []
    bad_block = any(
        not isinstance(b, dict) or b.get("type") != "text" or not b.get("text") for b in system_blocks
    )
    if not (system is None or isinstance(system, str) or (system_blocks and not bad_block)):
        raise _Rejected("system: Input should be a valid string or a list of non-empty text blocks")
    tool_names = _validate_tools(body.get("tools"))
    _validate_tool_choice(body.get("tool_choice"), tool_names, body.get("thinking"))
    _validate_messages(body["messages"])


def _validate_tools(tools: Any) -> set[str]:
    if tools is None:
        return set()
    if not isinstance(tools, list):
        raise _Rejected("tools: Input should be a valid list")
    names = set()
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise _Rejected(f"tools.{index}.name: Field required")
        if not _TOOL_NAME.match(tool["name"]):
            raise _Rejected(f"tools.{index}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'")
        schema = tool.get("input_schema")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            raise _Rejected(f"tools.{index}.input_schema: Input should be an object schema")
        extra = set(tool) - {"name", "description", "input_schema", "cache_control", "type"}
        if extra:
            raise _Rejected(f"tools.{index}.{sorted(extra)[0]}: Extra inputs are not permitted")
        names.add(tool["name"])
    return names


def _validate_tool_choice(choice: Any, tool_names: set[str], thinking: Any) -> None:
    if choice is None:
        return
    if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
        raise _Rejected("tool_choice: Input tag does not match any of the expected tags")
    if choice["type"] == "tool" and choice.get("name") not in tool_names:
        raise _Rejected(f"tool_choice.name: Tool '{choice.get('name')}' not found in tools")
    thinking_on = isinstance(thinking, dict) and thinking.get("type") == "enabled"
    if thinking_on and choice["type"] in ("any", "tool"):
        raise _Rejected("Thinking may not be enabled when tool_choice forces tool use.")


def _validate_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise _Rejected("messages: Input should be a non-empty list")
    previous_tool_uses: set[str] = set()
    for position, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            role = message.get("role") if isinstance(message, dict) else None
            raise _Rejected(f'messages.{position}.role: Unexpected role "{role}"')
        content = message.get("content")
        last = position == len(messages) - 1
        tool_uses: set[str] = set()
        if isinstance(content, str):
            if not content and not (last and message["role"] == "assistant"):
                raise _Rejected(f"messages.{position}: all messages must have non-empty content")
        elif isinstance(content, list):
            if not content and not (last and message["role"] == "assistant"):
                raise _Rejected(f"messages.{position}: all messages must have non-empty content")
            for index, block in enumerate(content):
                _validate_block(
                    block, message["role"], f"messages.{position}.content.{index}", previous_tool_uses
                )
                if block.get("type") == "tool_use":
                    tool_uses.add(block["id"])
        else:
            raise _Rejected(f"messages.{position}.content: Input should be a valid string or list")
        previous_tool_uses = tool_uses


def _validate_block(block: Any, role: str, where: str, answerable: set[str]) -> None:
    if not isinstance(block, dict):
        raise _Rejected(f"{where}: Input should be an object")
    kind = block.get("type")
    if kind == "text":
        if not isinstance(block.get("text"), str) or not block["text"]:
            raise _Rejected("messages: text content blocks must be non-empty")
    elif kind == "image" or kind == "document":
        source = block.get("source")
        if not isinstance(source, dict) or source.get("type") not in ("base64", "url", "text"):
            raise _Rejected(f"{where}.source: Input tag does not match any of the expected tags")
        if source["type"] == "base64" and not (source.get("media_type") and source.get("data")):
            raise _Rejected(f"{where}.source: media_type and data are required")
    elif kind == "tool_use":
        if role != "assistant":
            raise _Rejected(f"{where}: tool_use blocks may only appear in assistant messages")
        if not isinstance(block.get("id"), str) or not isinstance(block.get("input"), dict):
            raise _Rejected(f"{where}: tool_use blocks need an id and an object input")
    elif kind == "tool_result":
        if role != "user":
            raise _Rejected(f"{where}: tool_result blocks may only appear in user messages")
        if block.get("tool_use_id") not in answerable:
            raise _Rejected(
                f"{where}: unexpected `tool_use_id` found in `tool_result` blocks: {block.get('tool_use_id')}. "
                "Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
            )
        content = block.get("content")
        if isinstance(content, list):
            for index, item in enumerate(content):
                _validate_block(item, "user", f"{where}.content.{index}", set())
    elif kind == "thinking":
        if role != "assistant" or not isinstance(block.get("signature"), str):
            raise _Rejected(f"{where}: thinking blocks need a signature and belong to assistant messages")
    elif kind == "redacted_thinking":
        if role != "assistant" or not isinstance(block.get("data"), str):
            raise _Rejected(f"{where}: redacted_thinking blocks need data and belong to assistant messages")
    else:
        raise _Rejected(
            f"{where}: Input tag '{kind}' found using 'type' does not match any of the expected tags"
        )


class AnthropicUpstream(LoopbackServer):
    """The fake Anthropic. ``api_key=None`` accepts any caller."""

    thread_name = "anthropic-upstream"

    def __init__(
        self,
        *,
        api_key: str | None = "sk-ant-upstream-test",
        script: AnthropicScript | None = None,
        port: int = 0,
        record: bool = True,
    ) -> None:
        super().__init__(port=port)
        self.api_key = api_key
        self.record = record
        self.requests: list[RecordedRequest] = []
        self.script = script or AnthropicScript()

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self._messages)

    # -- the handler -------------------------------------------------------------------------

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if self.record:
            peer = request.transport.get_extra_info("peername") if request.transport else None
            self.requests.append(
                RecordedRequest(
                    request.method,
                    request.path,
                    CIMultiDict(request.headers),
                    body,
                    peer[1] if peer else None,
                )
            )
        script = self.script
        if script.latency:
            await self._pause(script.latency)
        if self.api_key is not None and request.headers.get("x-api-key") != self.api_key:
            return self._error(401, "authentication_error", "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return self._error(400, "invalid_request_error", "anthropic-version: header is required")
        try:
            _validate(body)
        except _Rejected as rejected:
            return self._error(400, "invalid_request_error", str(rejected))
        if script.fail_status is not None:
            return self._scripted_failure(script)
        prompt = input_tokens(body)
        if body.get("stream") is True:
            return await self._stream(request, script, body["model"], prompt)
        return web.Response(
            body=_dumps(self._message(script, body["model"], prompt)), content_type="application/json"
        )

    @staticmethod
    def _error(
        status: int, type_: str, message: str, headers: Mapping[str, str] | None = None
    ) -> web.Response:
        return web.json_response(_error_body(type_, message), status=status, headers=headers)

    def _scripted_failure(self, script: AnthropicScript) -> web.Response:
        status = script.fail_status or 500
        if script.fail_body is not None:
            return web.json_response(dict(script.fail_body), status=status, headers=script.fail_headers)
        type_, message = _STATUS_ERRORS.get(status, ("api_error", "Upstream failure."))
        return self._error(status, type_, message, script.fail_headers)

    # -- answers -----------------------------------------------------------------------------

    @staticmethod
    def _blocks(script: AnthropicScript) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = []
        if script.thinking:
            blocks.append({"type": "thinking", "thinking": script.thinking, "signature": script.signature})
        if script.redacted_thinking:
            blocks.append({"type": "redacted_thinking", "data": script.redacted_thinking})
        if script.reply:
            blocks.append({"type": "text", "text": script.reply})
        for tool in script.tool_uses:
            blocks.append({"type": "tool_use", "id": tool.id, "name": tool.name, "input": dict(tool.input)})
        return blocks

    @staticmethod
    def _stop_reason(script: AnthropicScript) -> str:
        return script.stop_reason or ("tool_use" if script.tool_uses else "end_turn")

    def _usage(self, script: AnthropicScript, prompt: int) -> dict[str, Any]:
        return {
            "input_tokens": prompt,
            "cache_creation_input_tokens": script.cache_write_tokens,
            "cache_read_input_tokens": script.cache_read_tokens,
            "output_tokens": output_tokens(script),
            "service_tier": "standard",
        }

    def _message(self, script: AnthropicScript, model: str, prompt: int) -> dict[str, Any]:
        message: dict[str, Any] = {
            "id": "msg_loopback",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": self._blocks(script),
            "stop_reason": self._stop_reason(script),
            "stop_sequence": None,
        }
        if not script.omit_usage:
            message["usage"] = self._usage(script, prompt)
        return message

    def _events(self, script: AnthropicScript, model: str, prompt: int) -> list[tuple[str, dict[str, Any]]]:
        """The stream's events, in the real API's order."""
        usage = self._usage(script, prompt)
        start = {**self._message(script, model, prompt), "content": [], "stop_reason": None}
        if not script.omit_usage:
            start["usage"] = {**usage, "output_tokens": 1}
            if script.zero_input_in_start:
                start["usage"].update(
                    input_tokens=0, cache_creation_input_tokens=0, cache_read_input_tokens=0
                )
        events: list[tuple[str, dict[str, Any]]] = [
            ("message_start", {"type": "message_start", "message": start})
        ]
        for index, block in enumerate(self._blocks(script)):
            block_events = self._block_events(script, index, block)
            if index == 0 and script.ping:  # the real API pings right after the first block opens
                block_events.insert(1, ("ping", {"type": "ping"}))
            events += block_events
        steps = max(1, script.usage_steps)
        total = usage["output_tokens"]
        for step in range(1, steps + 1):
            last = step == steps
            delta: dict[str, Any] = {
                "type": "message_delta",
                "delta": {"stop_reason": self._stop_reason(script) if last else None, "stop_sequence": None},
            }
            if not script.omit_usage:
                delta["usage"] = {"output_tokens": total * step // steps}
                if script.zero_input_in_start and last:
                    delta["usage"].update(
                        input_tokens=usage["input_tokens"],
                        cache_creation_input_tokens=usage["cache_creation_input_tokens"],
                        cache_read_input_tokens=usage["cache_read_input_tokens"],
                    )
            events.append(("message_delta", delta))
        if not script.omit_message_stop:
            events.append(("message_stop", {"type": "message_stop"}))
        return events

    @staticmethod
    def _block_events(
        script: AnthropicScript, index: int, block: dict[str, Any]
    ) -> list[tuple[str, dict[str, Any]]]:
        kind = block["type"]
        if kind == "thinking":
            opening: dict[str, Any] = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [{"type": "thinking_delta", "thinking": word} for word in _words(block["thinking"])]
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        elif kind == "text":
            opening, deltas = (
                {"type": "text", "text": ""},
                [{"type": "text_delta", "text": word} for word in _words(block["text"])],
            )
        elif kind == "tool_use":
            opening = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            text = _dumps(block["input"])
            size = max(1, script.json_piece)
            deltas = [
                {"type": "input_json_delta", "partial_json": ""}
            ]  # the real API opens with an empty one
            deltas += [
                {"type": "input_json_delta", "partial_json": text[i : i + size]}
                for i in range(0, len(text), size)
            ]
        else:  # redacted_thinking arrives whole
            opening, deltas = block, []
        events = [
            ("content_block_start", {"type": "content_block_start", "index": index, "content_block": opening})
        ]
        events += [
            ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
            for d in deltas
        ]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
        return events

    async def _stream(
        self, request: web.Request, script: AnthropicScript, model: str, prompt: int
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        try:
            if script.transcript is not None:
                await self._replay(response, script)
                return response
            ping = b'event: ping\ndata: {"type":"ping"}\n\n'
            for sent, (name, payload) in enumerate(self._events(script, model, prompt)):
                if script.drop_after is not None and sent >= script.drop_after:
                    assert request.transport is not None
                    request.transport.close()  # flushes what was written, then closes mid-body
                    return response
                if script.error_after is not None and sent >= script.error_after:
                    error = _error_body("overloaded_error", "Overloaded")
                    await response.write(f"event: error\ndata: {_dumps(error)}\n\n".encode())
                    break
                if script.stall_after is not None and sent >= script.stall_after:
                    await self._pause(script.stall_seconds)
                if script.chunk_delay and sent:
                    await self._pause(script.chunk_delay)
                if script.keepalive and sent:
                    await response.write(ping)
                await response.write(f"event: {name}\ndata: {_dumps(payload)}\n\n".encode())
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away
        return response

    async def _replay(self, response: web.StreamResponse, script: AnthropicScript) -> None:
        """Writes a recorded transcript in small pieces, so events split across reads."""
        assert script.transcript is not None
        data, size = script.transcript, max(1, script.transcript_piece)
        for offset in range(0, len(data), size):
            await response.write(data[offset : offset + size])
            if script.chunk_delay:
                await self._pause(script.chunk_delay)
        await response.write_eof()
