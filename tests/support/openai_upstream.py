"""A fake OpenAI-compatible vendor: a real HTTP server on 127.0.0.1 speaking the chat-completions
wire protocol, strict like the real one, and scriptable per test.

Async tests::

    async with OpenAIUpstream(api_key="sk-up") as up:
        up.script = UpstreamScript(keepalive=True, omit_usage=True)
        ...  # call up.base_url ("http://127.0.0.1:<port>/v1")
        assert up.requests[0].json["stream_options"] == {"include_usage": True}

Sync tests, or another process's client::

    with OpenAIUpstream.in_thread(api_key="sk-up") as up:
        ...

Benchmarks (the mock upstream)::

    python -m tests.support.openai_upstream --port 9100 --latency-ms 20

It serves ``POST /v1/chat/completions`` (streamed or not), ``POST /v1/embeddings``,
``POST /v1/images/generations`` and ``GET /v1/models``.

It is strict where OpenAI is: roles are checked, content parts must be ``text``, ``image_url``
(an ``http(s)`` or ``data:image/`` URL), ``input_audio`` or ``file``, and a ``tool`` message must
answer a ``tool_calls`` id of the assistant message before it (and every such id be answered), as
OpenAI's 400s say. Scripted ``tool_calls`` are made only when the request offers tools, does not
say ``tool_choice: "none"`` and does not already end with tool results, as a model would.

``UpstreamScript.transcript`` replays a recorded stream body byte for byte (in small pieces, so
events split across reads): see tests/providers/transcripts/openai.

Token counts are a pure function of the request and the script, and differ from Tollgate's own
estimator on purpose, so a test can tell provider usage from an estimate:

* ``prompt_tokens`` = for each message, its number of whitespace-separated words + 5, + 85 per
  image part (OpenAI's price of a low-detail image);
* ``completion_tokens`` = the number of words of the reply (+ those of ``reasoning``), + 10 per
  tool call;
* ``cached_tokens`` (in ``prompt_tokens_details``) = ``UpstreamScript.cached_tokens``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import signal
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from tests.support.loopback import LoopbackServer

__all__ = ["OpenAIUpstream", "RecordedRequest", "UpstreamScript", "prompt_tokens"]

MESSAGE_OVERHEAD = 5
IMAGE_TOKENS = 85
TOOL_CALL_TOKENS = 10
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_PART_TYPES = frozenset({"text", "image_url", "input_audio", "file"})
_dumps = json.JSONEncoder(separators=(",", ":")).encode


@dataclass(frozen=True)
class UpstreamScript:
    """How the fake vendor behaves. Replace it whole: ``up.script = UpstreamScript(...)``."""

    reply: str = "Hello from the loopback upstream."
    #: DeepSeek-style ``reasoning_content`` deltas sent before the content.
    reasoning: str | None = None
    finish_reason: str = "stop"
    #: Seconds before the first byte (the status line).
    latency: float = 0.0
    #: Seconds between two stream events.
    chunk_delay: float = 0.0
    #: Fail with this status and OpenAI's error body (``fail_body`` overrides the body).
    fail_status: int | None = None
    fail_body: Mapping[str, Any] | None = None
    fail_headers: Mapping[str, str] = field(default_factory=dict)
    #: Close the connection abruptly after this many ``data:`` events.
    drop_after: int | None = None
    #: Go silent after this many ``data:`` events, for ``stall_seconds`` (or until the server closes).
    stall_after: int | None = None
    stall_seconds: float = 30.0
    #: ``: OPENROUTER PROCESSING`` first, then ``: keep-alive`` comment lines between events.
    keepalive: bool = False
    #: Never send usage, whatever ``stream_options`` asked for.
    omit_usage: bool = False
    #: Cumulative usage on every streamed chunk instead of a separate usage chunk.
    usage_on_every_chunk: bool = False
    #: Usage on the finish chunk (together with its choices) instead of a separate usage chunk.
    usage_on_finish_chunk: bool = False
    #: ``data:{...}`` with no space after the colon.
    no_space: bool = False
    #: ``\\r\\n`` line endings.
    crlf: bool = False
    #: End the stream (cleanly) without ``data: [DONE]``.
    omit_done: bool = False
    #: End the stream cleanly (a complete HTTP body) after this many ``data:`` events.
    end_after: int | None = None
    #: Send an OpenAI error object as a ``data:`` event after this many events, then end.
    error_after: int | None = None
    #: Seconds between the last event and the end of the HTTP body (the zero-length chunk).
    linger: float = 0.0
    #: Function calls the model makes, as (name, arguments); the finish reason becomes ``tool_calls``.
    tool_calls: tuple[tuple[str, Mapping[str, Any]], ...] = ()
    #: Prompt tokens reported as read from the prompt cache.
    cached_tokens: int = 0
    #: Serve these bytes as the stream body instead (a recorded transcript), in pieces of this size.
    transcript: bytes | None = None
    transcript_piece: int = 17
    #: After the last event (or the transcript), go silent for ``stall_seconds`` before ending the body.
    stall_at_end: bool = False


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: Mapping[str, str]  # case-insensitive
    json: Any
    #: The client's source port: equal ports on two requests mean a reused connection.
    client_port: int | None = None


def _message_text(message: Any) -> str:
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def _image_parts(message: Any) -> int:
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, list):
        return 0
    return sum(1 for part in content if isinstance(part, dict) and part.get("type") == "image_url")


def prompt_tokens(messages: list[Any]) -> int:
    """The fake vendor's prompt count: words + 5 per message, + 85 per image."""
    return sum(
        len(_message_text(message).split()) + MESSAGE_OVERHEAD + IMAGE_TOKENS * _image_parts(message)
        for message in messages
    )


def _message_problem(messages: list[Any]) -> tuple[str, str] | None:
    """OpenAI's 400 message and param for a conversation it refuses, or None."""
    unanswered: list[str] = []
    for position, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        where = f"messages.[{position}]"
        if role not in _ROLES:
            return (
                f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', "
                "'function', 'tool', and 'developer'.",
                f"{where}.role",
            )
        if role == "tool":
            if message.get("tool_call_id") not in unanswered:
                return (
                    "Invalid parameter: messages with role 'tool' must be a response to a preceeding "
                    "message with 'tool_calls'.",
                    f"{where}.role",
                )
            unanswered.remove(message["tool_call_id"])
            continue
        if unanswered:
            return (
                "An assistant message with 'tool_calls' must be followed by tool messages responding "
                f"to each 'tool_call_id'. The following tool_call_ids did not have response messages: "
                f"{', '.join(unanswered)}",
                "messages",
            )
        if role == "assistant":
            unanswered = [
                call["id"]
                for call in message.get("tool_calls") or ()
                if isinstance(call, dict) and isinstance(call.get("id"), str)
            ]
        content = message.get("content")
        for index, part in enumerate(content if isinstance(content, list) else ()):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in _PART_TYPES:
                return (
                    f"Invalid value: '{kind}'. Supported values are: 'text', 'image_url', "
                    "'input_audio', and 'file'.",
                    f"messages[{position}].content[{index}].type",
                )
            url = (part.get("image_url") or {}).get("url") if kind == "image_url" else None
            if kind == "image_url" and not (
                isinstance(url, str) and url.startswith(("http://", "https://", "data:image/"))
            ):
                return (
                    f"Invalid 'messages[{position}].content[{index}].image_url.url'. Expected a valid "
                    "URL, but got a value with an invalid format.",
                    f"messages[{position}].content[{index}].image_url.url",
                )
    if unanswered:
        return (
            "An assistant message with 'tool_calls' must be followed by tool messages responding to "
            f"each 'tool_call_id'. The following tool_call_ids did not have response messages: "
            f"{', '.join(unanswered)}",
            "messages",
        )
    return None


def _calls_wanted(script: UpstreamScript, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The tool calls the model makes for ``body``: the scripted ones, when tools are offered and
    allowed, and the conversation does not already end with their results."""
    messages = body["messages"]
    answered = bool(messages) and isinstance(messages[-1], dict) and messages[-1].get("role") == "tool"
    if not (script.tool_calls and body.get("tools") and body.get("tool_choice") != "none" and not answered):
        return []
    return [
        {
            "id": f"call_loopback_{number}",
            "type": "function",
            "function": {"name": name, "arguments": _dumps(dict(arguments))},
        }
        for number, (name, arguments) in enumerate(script.tool_calls)
    ]


def _words(text: str) -> list[str]:
    words = text.split(" ")
    return [word if position == 0 else f" {word}" for position, word in enumerate(words)]


def _openai_error(message: str, type_: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


_STATUS_ERRORS: dict[int, tuple[str, str, str | None]] = {
    400: ("Invalid request.", "invalid_request_error", None),
    401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
    403: ("You are not allowed to use this model.", "invalid_request_error", "unsupported_country"),
    404: (
        "The model does not exist or you do not have access to it.",
        "invalid_request_error",
        "model_not_found",
    ),
    429: ("Rate limit reached for requests.", "requests", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request.", "server_error", None),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
}


class OpenAIUpstream(LoopbackServer):
    """The fake vendor. ``api_key=None`` accepts any caller (like Ollama)."""

    thread_name = "openai-upstream"

    def __init__(
        self,
        *,
        api_key: str | None = "sk-upstream-test",
        script: UpstreamScript | None = None,
        port: int = 0,
        record: bool = True,
    ) -> None:
        super().__init__(port=port)
        self.api_key = api_key
        self.record = record
        self.requests: list[RecordedRequest] = []
        self._script = script or UpstreamScript()
        # Frames of the plain stream per (model, include_usage), built once: the benchmark's hot path.
        self._cache: dict[tuple[str, bool], tuple[list[bytes], dict[str, Any]]] = {}
        self._created = int(time.time())

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def script(self) -> UpstreamScript:
        return self._script

    @script.setter
    def script(self, script: UpstreamScript) -> None:
        self._script = script
        self._cache = {}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/v1/images/generations", self._images)
        app.router.add_get("/v1/models", self._models)

    # -- handlers ----------------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        if (denied := self._check_auth(request)) is not None:
            return denied
        model = {"id": "gpt-loopback", "object": "model", "created": self._created, "owned_by": "loopback"}
        return web.json_response({"object": "list", "data": [model]})

    async def _admit(self, request: web.Request, required: str) -> tuple[dict[str, Any], str] | web.Response:
        """Records the request, then refuses it as OpenAI would (or as scripted), or returns its
        body and model.
        """
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
        script = self._script
        if script.latency:
            await self._pause(script.latency)
        if (denied := self._check_auth(request)) is not None:
            return denied
        if not isinstance(body, dict):
            return self._error(400, "We could not parse the JSON body of your request.", None)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return self._error(400, "you must provide a model parameter", None)
        if body.get(required) in (None, "", []):
            return self._error(
                400, f"Missing required parameter: '{required}'.", "missing_required_parameter", required
            )
        if script.fail_status is not None:
            return self._scripted_failure(script)
        return body, model

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        admitted = await self._admit(request, "messages")
        if isinstance(admitted, web.Response):
            return admitted
        body, model = admitted
        messages = body["messages"]
        if not isinstance(messages, list):
            return self._error(400, "'messages' must be an array.", None, "messages")
        if (problem := _message_problem(messages)) is not None:
            return self._error(400, problem[0], None, problem[1])
        script = self._script
        calls = _calls_wanted(script, body)
        usage = self._usage(script, prompt_tokens(messages), len(calls))
        if body.get("stream") is True:
            options = body.get("stream_options")
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
            return await self._stream(request, script, model, include_usage, usage, calls)
        return self._completion(script, model, usage, calls)

    async def _embeddings(self, request: web.Request) -> web.Response:
        """One deterministic vector per input (``dimensions`` long, 8 by default); one prompt token
        per word of text, or per token id.
        """
        admitted = await self._admit(request, "input")
        if isinstance(admitted, web.Response):
            return admitted
        body, model = admitted
        inputs = body["input"]
        items = [inputs] if isinstance(inputs, str) or not isinstance(inputs, list) else inputs
        if items and isinstance(items[0], int):
            items = [items]  # one list of token ids is one input
        dimensions = body.get("dimensions") if isinstance(body.get("dimensions"), int) else 8
        data, tokens = [], 0
        for index, item in enumerate(items):
            text = item if isinstance(item, str) else " ".join(str(token) for token in item)
            tokens += len(text.split()) if isinstance(item, str) else len(item)
            seed = zlib.crc32(text.encode())
            vector = [((seed >> (i % 32)) & 0xFF) / 255 for i in range(dimensions)]
            data.append({"object": "embedding", "index": index, "embedding": vector})
        answer: dict[str, Any] = {"object": "list", "data": data, "model": model}
        if not self._script.omit_usage:
            answer["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
        return web.json_response(answer)

    async def _images(self, request: web.Request) -> web.Response:
        """``n`` images as URLs (or tiny base64 payloads); token usage for ``gpt-image`` models only."""
        admitted = await self._admit(request, "prompt")
        if isinstance(admitted, web.Response):
            return admitted
        body, model = admitted
        count = body.get("n") if isinstance(body.get("n"), int) else 1
        if body.get("response_format") == "b64_json":
            data = [{"b64_json": base64.b64encode(b"loopback-image-%d" % i).decode()} for i in range(count)]
        else:
            data = [{"url": f"https://images.loopback.test/{i}.png"} for i in range(count)]
        answer: dict[str, Any] = {"created": self._created, "data": data}
        if model.startswith("gpt-image") and not self._script.omit_usage:
            prompt = len(str(body["prompt"]).split())
            answer["usage"] = {
                "input_tokens": prompt,
                "output_tokens": 1000 * count,
                "total_tokens": prompt + 1000 * count,
                "input_tokens_details": {"text_tokens": prompt, "image_tokens": 0},
            }
        return web.json_response(answer)

    def _check_auth(self, request: web.Request) -> web.Response | None:
        if self.api_key is None:
            return None
        if request.headers.get("Authorization") == f"Bearer {self.api_key}":
            return None
        given = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if not given:
            message = "You didn't provide an API key."
        else:
            # Like OpenAI, the real thing echoes a masked key back.
            message = f"Incorrect API key provided: {given[:3]}****{given[-4:]}."
        return self._error(401, message, "invalid_api_key", type_="invalid_request_error")

    @staticmethod
    def _error(
        status: int,
        message: str,
        code: str | None,
        param: str | None = None,
        *,
        type_: str = "invalid_request_error",
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        return web.json_response(_openai_error(message, type_, code, param), status=status, headers=headers)

    def _scripted_failure(self, script: UpstreamScript) -> web.Response:
        status = script.fail_status or 500
        if script.fail_body is not None:
            return web.json_response(dict(script.fail_body), status=status, headers=script.fail_headers)
        if 300 <= status < 400:
            headers = {"Location": "http://127.0.0.1:1/elsewhere", **script.fail_headers}
            return web.Response(status=status, headers=headers)
        message, type_, code = _STATUS_ERRORS.get(status, ("Upstream failure.", "server_error", None))
        return self._error(status, message, code, type_=type_, headers=script.fail_headers)

    @staticmethod
    def _usage(script: UpstreamScript, prompt: int, calls: int = 0) -> dict[str, Any]:
        reasoning = len(script.reasoning.split()) if script.reasoning else 0
        completion = len(script.reply.split()) + reasoning + TOOL_CALL_TOKENS * calls
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": min(script.cached_tokens, prompt)},
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        }

    @staticmethod
    def _finish_reason(script: UpstreamScript, calls: list[dict[str, Any]]) -> str:
        return "tool_calls" if calls else script.finish_reason

    def _completion(
        self, script: UpstreamScript, model: str, usage: dict[str, Any], calls: list[dict[str, Any]]
    ) -> web.Response:
        content = script.reply if script.reply or not calls else None
        message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
        if script.reasoning:
            message["reasoning_content"] = script.reasoning
        if calls:
            message["tool_calls"] = calls
        completion: dict[str, Any] = {
            "id": "chatcmpl-loopback",
            "object": "chat.completion",
            "created": self._created,
            "model": model,
            "system_fingerprint": "fp_loopback",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": self._finish_reason(script, calls),
                }
            ],
        }
        if not script.omit_usage:
            completion["usage"] = usage
        return web.Response(body=_dumps(completion).encode(), content_type="application/json")

    def _chunk_payloads(
        self, script: UpstreamScript, model: str, include_usage: bool, calls: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The stream's chunks (role, reasoning, content, tool calls, finish) and their common fields."""
        base = {
            "id": "chatcmpl-loopback",
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": model,
            "system_fingerprint": "fp_loopback",
        }
        deltas: list[tuple[dict[str, Any], str | None]] = [
            ({"role": "assistant", "content": "", "refusal": None}, None)
        ]
        if script.reasoning:
            deltas += [({"reasoning_content": word}, None) for word in _words(script.reasoning)]
        if script.reply or not calls:
            deltas += [({"content": word}, None) for word in _words(script.reply)]
        for index, call in enumerate(calls):
            # As OpenAI streams them: the id and name first, then the arguments in pieces.
            opening = {**call, "index": index, "function": {**call["function"], "arguments": ""}}
            deltas.append(({"tool_calls": [opening]}, None))
            arguments = call["function"]["arguments"]
            deltas += [
                ({"tool_calls": [{"index": index, "function": {"arguments": arguments[i : i + 8]}}]}, None)
                for i in range(0, len(arguments), 8)
            ]
        deltas.append(({}, self._finish_reason(script, calls)))
        payloads = []
        for delta, finish in deltas:
            payload = {
                **base,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            if include_usage:
                payload["usage"] = None  # as OpenAI does on every chunk but the last
            payloads.append(payload)
        return payloads, base

    def _frame(self, script: UpstreamScript, payload: dict[str, Any] | str) -> bytes:
        data = payload if isinstance(payload, str) else _dumps(payload)
        end = "\r\n" if script.crlf else "\n"
        return f"data:{data}{end}{end}".encode() if script.no_space else f"data: {data}{end}{end}".encode()

    def _events(
        self,
        script: UpstreamScript,
        model: str,
        include_usage: bool,
        usage: dict[str, Any],
        calls: list[dict[str, Any]],
    ) -> list[bytes]:
        plain = not (
            script.omit_usage or script.usage_on_every_chunk or script.usage_on_finish_chunk or calls
        )
        key = (model, include_usage)
        if plain and key in self._cache:
            frames, base = self._cache[key]
            events = list(frames)
        else:
            payloads, base = self._chunk_payloads(script, model, include_usage, calls)
            if script.usage_on_every_chunk:
                generated = 0
                for payload in payloads:
                    delta = payload["choices"][0]["delta"]
                    generated += 1 if delta.get("content") or delta.get("reasoning_content") else 0
                    payload["usage"] = {
                        **usage,
                        "completion_tokens": generated,
                        "total_tokens": usage["prompt_tokens"] + generated,
                    }
            elif script.usage_on_finish_chunk and not script.omit_usage:
                payloads[-1]["usage"] = usage
            events = [self._frame(script, payload) for payload in payloads]
            if plain:
                self._cache[key] = (list(events), base)
        separate_usage = not (
            script.omit_usage or script.usage_on_every_chunk or script.usage_on_finish_chunk
        )
        if separate_usage and include_usage:
            events.append(self._frame(script, {**base, "choices": [], "usage": usage}))
        if not script.omit_done:
            events.append(self._frame(script, "[DONE]"))
        return events

    async def _stream(
        self,
        request: web.Request,
        script: UpstreamScript,
        model: str,
        include_usage: bool,
        usage: dict[str, Any],
        calls: list[dict[str, Any]],
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        if script.transcript is not None:
            await self._replay(response, script)
            return response
        events = self._events(script, model, include_usage, usage, calls)
        keepalive = b": keep-alive\r\n\r\n" if script.crlf else b": keep-alive\n\n"
        try:
            if script.keepalive:
                await response.write(b": OPENROUTER PROCESSING\n\n")
            for sent, event in enumerate(events):
                if script.drop_after is not None and sent >= script.drop_after:
                    assert request.transport is not None
                    request.transport.close()  # flushes what was written, then closes mid-body
                    return response
                if script.end_after is not None and sent >= script.end_after:
                    break
                if script.error_after is not None and sent >= script.error_after:
                    error = _openai_error(
                        "The server had an error while processing your request.", "server_error", None
                    )
                    await response.write(self._frame(script, error))
                    break
                if script.stall_after is not None and sent >= script.stall_after:
                    await self._pause(script.stall_seconds)
                if script.chunk_delay and sent:
                    await self._pause(script.chunk_delay)
                if script.keepalive and sent:
                    await response.write(keepalive)
                await response.write(event)
            if script.stall_at_end:
                await self._pause(script.stall_seconds)
            if script.linger:
                await self._pause(script.linger)
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away (as it does after its idle timeout)
        return response

    async def _replay(self, response: web.StreamResponse, script: UpstreamScript) -> None:
        """Writes a recorded transcript in small pieces, so events split across reads."""
        assert script.transcript is not None
        data, size = script.transcript, max(1, script.transcript_piece)
        try:
            for offset in range(0, len(data), size):
                await response.write(data[offset : offset + size])
                if script.chunk_delay:
                    await self._pause(script.chunk_delay)
            if script.stall_at_end:
                await self._pause(script.stall_seconds)
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away (as it does after its idle timeout)


# -- CLI: the benchmark's mock upstream --------------------------------------------------------


async def _serve(args: argparse.Namespace) -> None:
    script = UpstreamScript(
        latency=args.latency_ms / 1000,
        chunk_delay=args.chunk_delay_ms / 1000,
        **({"reply": args.reply} if args.reply else {}),
    )
    upstream = OpenAIUpstream(api_key=args.api_key, script=script, port=args.port, record=False)
    await upstream.start()
    print(f"OpenAI-compatible mock upstream on {upstream.base_url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await upstream.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A fake OpenAI-compatible upstream on 127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 lets the OS pick")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before the first byte")
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0, help="delay between stream events")
    parser.add_argument("--reply", default=None, help="the reply text")
    parser.add_argument("--api-key", default=None, help="require this bearer key (default: accept any)")
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
