"""The benchmark's mock upstream: a minimal OpenAI-compatible server, built for speed.

``tests.support.openai_upstream`` is the strict, scriptable fake the tests use (aiohttp's web
server). The benchmark shares a core between this mock and the load generator, so it needs the
cheapest server possible: a raw ``asyncio.Protocol`` on uvloop with httptools' parser, responses
pre-encoded once per behaviour, and timers instead of tasks for latency and chunk pacing. It
answers ``POST /v1/chat/completions`` (non-streamed JSON, or SSE with ``stream_options``
honoured, usage chunk last) and ``GET /v1/models``; it accepts any bearer key.

The model name is the behaviour, so one process serves every scenario::

    lat50             a completion after 50 ms
    lat0-gap5-n16     a stream: first chunk at once, then 16 content chunks 5 ms apart

    python -m bench.mock_upstream --port 8100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import httptools

_dumps = json.JSONEncoder(separators=(",", ":")).encode
_BEHAVIOUR = re.compile(r"(lat|gap|n)(\d+(?:\.\d+)?)")
_WORDS = ("Hello", "from", "the", "benchmark", "mock", "upstream", "speaking", "OpenAI's", "wire", "protocol")


@dataclass(frozen=True)
class Behaviour:
    latency: float = 0.0  # seconds before the first byte
    gap: float = 0.0  # seconds between stream events
    chunks: int = 8  # content chunks (words) in the reply

    @classmethod
    def parse(cls, model: str) -> Behaviour:
        values = {kind: float(number) for kind, number in _BEHAVIOUR.findall(model)}
        return cls(
            latency=values.get("lat", 0.0) / 1000,
            gap=values.get("gap", 0.0) / 1000,
            chunks=int(values.get("n", 8)),
        )

    def words(self) -> list[str]:
        return [
            (_WORDS[i % len(_WORDS)] if i == 0 else " " + _WORDS[i % len(_WORDS)]) for i in range(self.chunks)
        ]


def _head(status: str, content_type: str, length: int | None, keep_alive: bool) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Type: {content_type}"]
    lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class Responses:
    """Encoded responses per behaviour, built once."""

    def __init__(self) -> None:
        self.created = int(time.time())
        self._completions: dict[tuple[str, int], bytes] = {}
        self._streams: dict[tuple[str, int, bool], list[bytes]] = {}

    def usage(self, prompt_tokens: int, behaviour: Behaviour) -> dict[str, Any]:
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": behaviour.chunks,
            "total_tokens": prompt_tokens + behaviour.chunks,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        }

    def completion(self, model: str, prompt_tokens: int) -> bytes:
        key = (model, prompt_tokens)
        body = self._completions.get(key)
        if body is None:
            behaviour = Behaviour.parse(model)
            body = _dumps(
                {
                    "id": "chatcmpl-benchmock",
                    "object": "chat.completion",
                    "created": self.created,
                    "model": model,
                    "system_fingerprint": "fp_benchmock",
                    "choices": [
                        {
                            "index": 0,
                            "message": {
                                "role": "assistant",
                                "content": "".join(behaviour.words()),
                                "refusal": None,
                            },
                            "logprobs": None,
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": self.usage(prompt_tokens, behaviour),
                }
            ).encode()
            self._completions[key] = body
        return body

    def stream(self, model: str, prompt_tokens: int, include_usage: bool) -> list[bytes]:
        """The SSE events, each already a chunked-encoding chunk; the terminator is the last item."""
        key = (model, prompt_tokens, include_usage)
        events = self._streams.get(key)
        if events is None:
            behaviour = Behaviour.parse(model)
            base = {
                "id": "chatcmpl-benchmock",
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": model,
                "system_fingerprint": "fp_benchmock",
            }
            deltas: list[tuple[dict[str, Any], str | None]] = [({"role": "assistant", "content": ""}, None)]
            deltas += [({"content": word}, None) for word in behaviour.words()]
            deltas.append(({}, "stop"))
            payloads = []
            for delta, finish in deltas:
                payload = {
                    **base,
                    "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
                }
                if include_usage:
                    payload["usage"] = None
                payloads.append(payload)
            if include_usage:
                payloads.append({**base, "choices": [], "usage": self.usage(prompt_tokens, behaviour)})
            events = [_chunk(b"data: " + _dumps(payload).encode() + b"\n\n") for payload in payloads]
            events.append(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
            self._streams[key] = events
        return events


_NOT_FOUND = _dumps(
    {"error": {"message": "Not found.", "type": "invalid_request_error", "code": None}}
).encode()
_BAD_REQUEST = _dumps(
    {"error": {"message": "Invalid body.", "type": "invalid_request_error", "code": None}}
).encode()


class MockProtocol(asyncio.Protocol):
    def __init__(self, responses: Responses) -> None:
        self._responses = responses
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_event_loop()
        self._url = b""
        self._body: list[bytes] = []
        self._queue: deque[tuple[bytes, bytes, bool, bytes]] = deque()
        self._busy = False

    # -- asyncio --------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._write(
                _head("400 Bad Request", "application/json", len(_BAD_REQUEST), False) + _BAD_REQUEST, True
            )

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    # -- httptools callbacks ------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._body = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        method = self._parser.get_method()
        keep_alive = self._parser.should_keep_alive()
        self._queue.append((method, self._url, keep_alive, b"".join(self._body)))
        if not self._busy:
            self._next()

    # -- responses -----------------------------------------------------------------------------------

    def _next(self) -> None:
        if not self._queue or self._transport is None:
            self._busy = False
            return
        self._busy = True
        method, url, keep_alive, body = self._queue.popleft()
        path = url.split(b"?", 1)[0]
        if method == b"POST" and path == b"/v1/chat/completions":
            self._chat(body, keep_alive)
        elif method == b"GET" and path == b"/v1/models":
            data = _dumps(
                {
                    "object": "list",
                    "data": [{"id": "lat0", "object": "model", "created": 0, "owned_by": "bench"}],
                }
            )
            self._finish(
                _head("200 OK", "application/json", len(data), keep_alive) + data.encode(), keep_alive
            )
        else:
            self._finish(
                _head("404 Not Found", "application/json", len(_NOT_FOUND), keep_alive) + _NOT_FOUND,
                keep_alive,
            )

    def _chat(self, raw: bytes, keep_alive: bool) -> None:
        try:
            body = json.loads(raw)
            model = body["model"]
            messages = body["messages"]
            prompt_tokens = sum(len(str(m.get("content", "")).split()) + 5 for m in messages)
        except (ValueError, KeyError, TypeError, AttributeError):
            self._finish(
                _head("400 Bad Request", "application/json", len(_BAD_REQUEST), keep_alive) + _BAD_REQUEST,
                keep_alive,
            )
            return
        behaviour = Behaviour.parse(model)
        if body.get("stream") is True:
            options = body.get("stream_options")
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
            events = self._responses.stream(model, prompt_tokens, include_usage)
            head = _head("200 OK", "text/event-stream; charset=utf-8", None, keep_alive)
            if behaviour.gap <= 0:
                self._after(behaviour.latency, self._finish, head + b"".join(events), keep_alive)
            else:
                self._after(behaviour.latency, self._stream, head, events, 0, behaviour.gap, keep_alive)
            return
        data = self._responses.completion(model, prompt_tokens)
        response = _head("200 OK", "application/json", len(data), keep_alive) + data
        self._after(behaviour.latency, self._finish, response, keep_alive)

    def _after(self, delay: float, callback: Any, *args: Any) -> None:
        if delay > 0:
            self._loop.call_later(delay, callback, *args)
        else:
            callback(*args)

    def _stream(self, head: bytes, events: list[bytes], index: int, gap: float, keep_alive: bool) -> None:
        """Writes event ``index`` (with the head before the first), then schedules the next."""
        if self._transport is None or self._transport.is_closing():
            self._busy = False
            return
        if index == len(events) - 1:
            self._finish(head + events[index], keep_alive)
            return
        self._transport.write(head + events[index])
        self._loop.call_later(gap, self._stream, b"", events, index + 1, gap, keep_alive)

    def _finish(self, data: bytes, keep_alive: bool) -> None:
        self._write(data, not keep_alive)
        self._next()

    def _write(self, data: bytes, close: bool) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.write(data)
        if close:
            transport.close()


async def serve(port: int, host: str = "127.0.0.1") -> asyncio.AbstractServer:
    loop = asyncio.get_running_loop()
    responses = Responses()
    return await loop.create_server(
        lambda: MockProtocol(responses), host, port, backlog=4096, reuse_address=True
    )


async def _main(port: int) -> None:
    server = await serve(port)
    bound = server.sockets[0].getsockname()[1]
    print(f"mock upstream on http://127.0.0.1:{bound}/v1", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The benchmark's fast OpenAI-compatible mock upstream")
    parser.add_argument("--port", type=int, default=0)
    options = parser.parse_args(argv)
    import uvloop

    uvloop.run(_main(options.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
