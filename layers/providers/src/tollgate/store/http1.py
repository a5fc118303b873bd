"""A small keep-alive HTTP/1.1 client for one trusted origin: the ledger's DynamoDB endpoint.

The ledger's two writes per request are small JSON POSTs to one endpoint. Through aiohttp each
cost ~220 µs of client CPU (a request object, a response object, a payload registry, stream
readers, a task per request); this client costs about a third of that (``bench/botocore_cost.py``).
It does only what that exchange needs, and refuses the rest:

* ``POST`` with a ``Content-Length`` body; answers framed by ``Content-Length``, by chunked
  transfer coding, or by the end of the connection; interim ``1xx`` answers skipped;
* a pool of idle keep-alive connections (last in, first out), dropped after ``idle_seconds`` or
  when the server says ``Connection: close``; at most ``limit`` connections at once;
* TLS with certificate and host name verification (``ssl.create_default_context()``), never
  downgraded; no proxies, no redirects (a 3xx is an answer like any other), no compression;
* bounds: connect and read timeouts, a 64 KiB header block, ``max_body`` bytes of body;
* header names and values with CR, LF or NUL are refused before anything is sent.

**Requests must be idempotent** (every ledger write is: conditional, or carrying a
``ClientRequestToken``). A request sent on a reused connection that the server had closed, seen
as the connection ending before any byte of an answer, is sent once more on a new connection,
as urllib3 and aiohttp do for a stale keep-alive connection.

Errors: ``TimeoutError`` for a timeout, ``TransportError`` (an ``OSError``) for everything else.
A connection whose exchange did not complete (an error, a timeout, a cancellation) is closed,
never reused.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, cast
from urllib.parse import urlsplit

_HEAD_LIMIT: Final = 64 * 1024
_STATUS_LINE: Final = re.compile(rb"HTTP/1\.([01]) ([1-5][0-9][0-9])(?: [^\r\n]*)?")
_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CHUNK_SIZE: Final = re.compile(rb"([0-9A-Fa-f]{1,8})(?:;[^\r\n]*)?")
_UNSAFE: Final = re.compile(r"[\r\n\x00]")
# What a chunked answer's next line must be, when no chunk's data is being read.
_SIZE_LINE: Final = -1
_CHUNK_END: Final = -2  # the CRLF after a chunk's data
_TRAILERS: Final = -3  # after the last chunk


class TransportError(OSError):
    """The exchange failed: the connection was lost or refused, or the answer was malformed."""


class _StaleConnection(TransportError):
    """A reused connection ended before any byte of an answer: the server had closed it."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    #: Lowercase names; a repeated header's values joined with ", ".
    headers: dict[str, str]
    body: bytes


class Origin:
    """Pooled connections to ``url``'s scheme, host and port. One per event loop."""

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float,
        read_timeout: float,
        limit: int = 64,
        max_idle: int = 16,
        idle_seconds: float = 20.0,
        max_body: int = 16 * 1024 * 1024,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the origin must be an http or https URL with a host")
        if parts.username is not None or parts.password is not None:
            raise ValueError("the origin must not carry credentials")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError("the origin must not carry a path, query or fragment")
        self._tls = parts.scheme == "https"
        self._host = parts.hostname  # lowercase, without IPv6 brackets
        default_port = 443 if self._tls else 80
        self._port = parts.port or default_port
        shown = f"[{self._host}]" if ":" in self._host else self._host
        #: The ``Host`` header: lowercase, without a default port (what SigV4 signs).
        self.host = shown if self._port == default_port else f"{shown}:{self._port}"
        self._ssl = (ssl_context or ssl.create_default_context()) if self._tls else None
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._slots = asyncio.Semaphore(limit)
        self._max_idle = max_idle
        self._idle_seconds = idle_seconds
        self._max_body = max_body
        self._idle: list[_Connection] = []
        self._closed = False

    async def post(self, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        """Sends one POST and reads its whole answer."""
        request = self._encode(path, headers, body)
        async with self._slots:
            connection = self._take_idle()
            if connection is not None:
                try:
                    return await self._exchange(connection, request)
                except _StaleConnection:
                    pass  # the server closed it while idle: once more, on a new connection
            return await self._exchange(await self._connect(), request)

    async def close(self) -> None:
        """Closes the idle connections; the origin takes no more requests."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _encode(self, path: str, headers: Mapping[str, str], body: bytes) -> bytes:
        if not path.startswith("/") or _UNSAFE.search(path) or " " in path:
            raise ValueError("the request path must be an absolute path without spaces or line breaks")
        lines = [f"POST {path} HTTP/1.1", f"Host: {self.host}", f"Content-Length: {len(body)}"]
        for name, value in headers.items():
            if not _TOKEN.fullmatch(name) or _UNSAFE.search(value):
                raise ValueError(f"the header {name!r} has a name or value HTTP cannot carry")
            if name.lower() in ("host", "content-length", "transfer-encoding", "connection"):
                raise ValueError(f"the header {name!r} is set by the client")
            lines.append(f"{name}: {value}")
        lines.append("\r\n")
        try:
            return "\r\n".join(lines).encode("ascii") + body
        except UnicodeEncodeError:
            raise ValueError("header values must be ASCII") from None

    def _take_idle(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if connection.reusable and now - connection.idle_since < self._idle_seconds:
                return connection
            connection.close()
        return None

    async def _connect(self) -> _Connection:
        if self._closed:
            raise TransportError("the origin is closed")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(self._max_body),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._tls else None,
                )
        except TimeoutError:
            raise
        except (OSError, ssl.SSLError) as error:
            raise TransportError(f"could not connect: {type(error).__name__}") from error
        return connection

    async def _exchange(self, connection: _Connection, request: bytes) -> Response:
        try:
            async with asyncio.timeout(self._read_timeout):
                response, keep_alive = await connection.exchange(request)
        except BaseException:
            connection.close()  # mid-exchange: its state is unknown
            raise
        if keep_alive and not self._closed and len(self._idle) < self._max_idle:
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:
            connection.close()
        return response


class _Connection(asyncio.Protocol):
    """One connection, one exchange at a time; parses the answer as its bytes arrive."""

    def __init__(self, max_body: int) -> None:
        self._max_body = max_body
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[Response, bool]] | None = None
        self._used = False  # an exchange completed on it before
        self._received = False  # a byte of the current answer arrived
        self._lost = False
        self.idle_since = 0.0
        # The answer being read.
        self._status = 0
        self._headers: dict[str, str] = {}
        self._keep_alive = True
        self._framing = ""  # "", "length", "chunked" or "close"
        self._remaining = 0
        self._body = bytearray()

    @property
    def reusable(self) -> bool:
        return not self._lost and self._transport is not None and not self._transport.is_closing()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's does not subclass asyncio's

    async def exchange(self, request: bytes) -> tuple[Response, bool]:
        assert self._transport is not None, "not connected"
        assert self._waiter is None, "one exchange at a time"
        if self._lost or self._transport.is_closing():
            raise _StaleConnection("the connection was closed")
        self._waiter = asyncio.get_running_loop().create_future()
        self._received = False
        self._buffer.clear()
        self._framing = ""
        self._transport.write(request)
        try:
            return await self._waiter
        finally:
            self._waiter = None
            self._used = True

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # -- asyncio.Protocol ---------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            self._lost = True  # bytes nobody asked for: the connection cannot be trusted
            self.close()
            return
        self._received = True
        self._buffer += data
        try:
            self._advance(waiter)
        except TransportError as error:
            waiter.set_exception(error)
            self.close()

    def eof_received(self) -> bool:
        waiter = self._waiter
        if waiter is not None and not waiter.done() and self._framing == "close":
            self._finish(waiter, keep_alive=False)
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._framing == "close" and exc is None:
            self._finish(waiter, keep_alive=False)
        elif not self._received and self._used:
            waiter.set_exception(_StaleConnection("the server closed the connection"))
        else:
            waiter.set_exception(TransportError("the connection was lost mid-answer"))

    # -- parsing ------------------------------------------------------------------------------------

    def _advance(self, waiter: asyncio.Future[tuple[Response, bool]]) -> None:
        while not waiter.done():
            if not self._framing and not self._read_head():
                return
            if self._framing == "length":
                if not self._read_length():
                    return
            elif self._framing == "chunked":
                if not self._read_chunks():
                    return
            else:  # "close": everything until the connection ends
                self._take(len(self._buffer))
                return
            self._finish(waiter, keep_alive=self._keep_alive)

    def _read_head(self) -> bool:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > _HEAD_LIMIT:
                raise TransportError("the answer's header block is too large")
            return False
        if end > _HEAD_LIMIT:
            raise TransportError("the answer's header block is too large")
        lines = bytes(self._buffer[:end]).split(b"\r\n")
        del self._buffer[: end + 4]
        match = _STATUS_LINE.fullmatch(lines[0])
        if match is None:
            raise TransportError("the answer's status line is malformed")
        status = int(match[2])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            text = name.decode("latin-1")
            if not colon or not _TOKEN.fullmatch(text):
                raise TransportError("the answer has a malformed header")
            key = text.lower()
            stripped = value.strip(b" \t").decode("latin-1")
            headers[key] = f"{headers[key]}, {stripped}" if key in headers else stripped
        if 100 <= status < 200:
            return bool(self._buffer) and self._read_head()  # interim: the real answer follows
        self._status, self._headers, self._body = status, headers, bytearray()
        connection = headers.get("connection", "").lower()
        self._keep_alive = match[1] == b"1" and "close" not in connection
        coding = headers.get("transfer-encoding", "").lower()
        if status in (204, 304):
            self._framing, self._remaining = "length", 0
        elif coding:
            if coding.rsplit(",", 1)[-1].strip() != "chunked":
                raise TransportError("the answer's transfer coding is not supported")
            self._framing, self._remaining = "chunked", _SIZE_LINE
        elif "content-length" in headers:
            length = headers["content-length"]
            if not length.isdigit() or len(length) > 12:
                raise TransportError("the answer's Content-Length is malformed")
            self._framing, self._remaining = "length", int(length)
            if self._remaining > self._max_body:
                raise TransportError("the answer is too large")
        else:
            self._framing, self._keep_alive = "close", False
        return True

    def _read_length(self) -> bool:
        self._take(min(self._remaining, len(self._buffer)))
        return self._remaining == 0

    def _read_chunks(self) -> bool:
        """Decodes chunked transfer coding; True once the last chunk and its trailers are read.
        ``_remaining`` is the bytes left of the current chunk, or what the next line must be."""
        while True:
            if self._remaining > 0:
                self._take(min(self._remaining, len(self._buffer)))
                if self._remaining:
                    return False
                self._remaining = _CHUNK_END
            if self._remaining == _CHUNK_END:
                if len(self._buffer) < 2:
                    return False
                if self._buffer[:2] != b"\r\n":
                    raise TransportError("a chunk of the answer is malformed")
                del self._buffer[:2]
                self._remaining = _SIZE_LINE
            end = self._buffer.find(b"\r\n")
            if end < 0:
                if len(self._buffer) > _HEAD_LIMIT:
                    raise TransportError("a chunk of the answer is malformed")
                return False
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 2]
            if self._remaining == _TRAILERS:  # skipped, up to the blank line that ends the answer
                if not line:
                    return True
                continue
            size = _CHUNK_SIZE.fullmatch(line)
            if size is None:
                raise TransportError("a chunk of the answer is malformed")
            self._remaining = int(size[1], 16) or _TRAILERS
            if self._remaining > 0 and len(self._body) + self._remaining > self._max_body:
                raise TransportError("the answer is too large")

    def _take(self, count: int) -> None:
        if len(self._body) + count > self._max_body:
            raise TransportError("the answer is too large")
        self._body += self._buffer[:count]
        del self._buffer[:count]
        if self._framing != "close":
            self._remaining -= count

    def _finish(self, waiter: asyncio.Future[tuple[Response, bool]], *, keep_alive: bool) -> None:
        if self._buffer:
            keep_alive = False  # bytes past the answer: never reuse
        waiter.set_result((Response(self._status, self._headers, bytes(self._body)), keep_alive))
