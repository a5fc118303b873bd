"""The harness's own HTTP/1.1 clients, all built on httptools' parser and raw sockets, so the
client's cost is tiny and identical for every target:

* ``SyncClient``: one blocking keep-alive connection, for c=1 (latency, time to first byte and the
  arrival time of each SSE event);
* ``AsyncClient`` and ``stream_concurrently``: many streams at once on uvloop (c=50 gaps);
* ``open_loop``: a constant-arrival-rate (open model) generator, the fallback when k6 is absent
  and the smoke run's generator.

An SSE event is timed when its terminating blank line arrives.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httptools

perf = time.perf_counter


def request_bytes(port: int, path: str, body: dict[str, Any] | None, headers: dict[str, str]) -> bytes:
    payload = json.dumps(body, separators=(",", ":")).encode() if body is not None else b""
    method = "POST" if body is not None else "GET"
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


@dataclass
class Result:
    status: int = 0
    started: float = 0.0
    first_byte: float | None = None
    finished: float = 0.0
    events: list[float] = field(default_factory=list)
    size: int = 0
    error: str | None = None

    @property
    def latency(self) -> float:
        return self.finished - self.started

    @property
    def ttfb(self) -> float | None:
        return None if self.first_byte is None else self.first_byte - self.started

    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.events, self.events[1:], strict=False)]


class _Response:
    """httptools callbacks for one response."""

    __slots__ = ("done", "keep_alive", "parser", "result", "tail")

    def __init__(self, result: Result) -> None:
        self.result = result
        self.done = False
        self.keep_alive = True
        self.tail = b""
        self.parser = httptools.HttpResponseParser(self)

    def on_headers_complete(self) -> None:
        self.result.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        now = perf()
        result = self.result
        if result.first_byte is None:
            result.first_byte = now
        result.size += len(body)
        # Count event terminators ("\n\n"), also one split across two reads.
        joined = self.tail + body
        count = joined.count(b"\n\n")
        if count:
            result.events.extend([now] * count)
        self.tail = joined[-1:] if not joined.endswith(b"\n\n") else b""

    def on_message_complete(self) -> None:
        self.result.finished = perf()
        self.done = True


class SyncClient:
    """One blocking keep-alive connection (reconnects when the server closes it)."""

    def __init__(self, port: int, timeout: float = 30.0) -> None:
        self.port = port
        self.timeout = timeout
        self._sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        return sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def send(self, data: bytes) -> Result:
        for attempt in (0, 1):
            sock = self._sock or self._connect()
            result = Result()
            response = _Response(result)
            try:
                result.started = perf()
                sock.sendall(data)
                while not response.done:
                    chunk = sock.recv(262_144)
                    if not chunk:
                        raise ConnectionError("closed by the server")
                    response.parser.feed_data(chunk)
            except (OSError, httptools.HttpParserError) as error:
                self.close()
                if attempt == 0 and result.first_byte is None:
                    continue  # a stale keep-alive connection: retry once on a new one
                result.error = f"{type(error).__name__}: {error}"
                result.finished = perf()
                return result
            if not response.keep_alive:
                self.close()
            return result
        raise AssertionError("unreachable")


class _AsyncConnection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.response: _Response | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:
            return
        try:
            response.parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(f"parse error: {error}")
            return
        if response.done and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail("connection closed")

    def _fail(self, message: str) -> None:
        if self.response is not None and not self.response.done:
            self.response.result.error = message
            self.response.result.finished = perf()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def send(self, data: bytes, started: float | None = None) -> Result:
        assert self.transport is not None
        result = Result()
        self.response = _Response(result)
        self.waiter = asyncio.get_running_loop().create_future()
        result.started = started if started is not None else perf()
        self.transport.write(data)
        await self.waiter
        if not self.response.keep_alive:
            self.transport.close()
            self.closed = True
        return result


async def _open(port: int) -> _AsyncConnection:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(_AsyncConnection, "127.0.0.1", port)
    return protocol


async def stream_concurrently(port: int, data: bytes, *, concurrency: int, duration: float) -> list[Result]:
    """``concurrency`` workers, each sending ``data`` again and again on its own connection for
    ``duration`` seconds (closed loop); every finished response's result."""
    results: list[Result] = []
    deadline = perf() + duration

    async def worker() -> None:
        connection = await _open(port)
        while perf() < deadline:
            if connection.closed:
                connection = await _open(port)
            results.append(await connection.send(data))
        if connection.transport is not None:
            connection.transport.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


@dataclass
class OpenLoopReport:
    rate: float
    duration: float
    sent: int
    dropped: int
    results: list[Result]

    def latencies(self) -> list[float]:
        return [r.latency for r in self.results if r.error is None and r.status == 200]

    def errors(self) -> int:
        return sum(1 for r in self.results if r.error is not None or r.status != 200)


async def open_loop(
    port: int, data: bytes, *, rate: float, duration: float, max_connections: int = 1024, warmup: float = 0.0
) -> OpenLoopReport:
    """Sends ``data`` at a constant rate (an open model): request *i* is due at ``i / rate``.
    Each uses an idle connection, or opens one; past ``max_connections`` in flight it is dropped.
    Latency counts from the send, as k6's does; results of the first ``warmup`` seconds are
    discarded."""
    loop = asyncio.get_running_loop()
    idle: list[_AsyncConnection] = []
    in_flight = 0
    results: list[Result] = []
    dropped = 0
    tasks: set[asyncio.Task[None]] = set()
    total = int(rate * (duration + warmup))
    start = perf() + 0.05

    async def one(due: float, keep: bool) -> None:
        nonlocal in_flight
        in_flight += 1
        try:
            connection = idle.pop() if idle else await _open(port)
            result = await connection.send(data)
            if keep:
                results.append(result)
            if not connection.closed and result.error is None:
                idle.append(connection)
        except OSError as error:
            if keep:
                results.append(Result(started=due, finished=perf(), error=str(error)))
        finally:
            in_flight -= 1

    for index in range(total):
        due = start + index / rate
        delay = due - perf()
        if delay > 0:
            await asyncio.sleep(delay)
        keep = index >= rate * warmup
        if in_flight >= max_connections:
            dropped += int(keep)
            continue
        task = loop.create_task(one(due, keep))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=30)
    for connection in idle:
        if connection.transport is not None:
            connection.transport.close()
    return OpenLoopReport(rate=rate, duration=duration, sent=total, dropped=dropped, results=results)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), nearest-rank on sorted data; NaN for no data."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]
