"""A small keep-alive HTTP/1.1 client: the ledger's DynamoDB writes and the calls to providers.

Both are POSTs of a body Tollgate built, to origins it knows; aiohttp's general machinery (a
request object, a response object, a payload registry, stream readers, a task per request) cost
~200 µs of client CPU per call, this client about ninety (``bench/botocore_cost.py``). It does
only what those exchanges need, and refuses the rest:

* requests with a ``Content-Length`` body (or none); answers framed by ``Content-Length``, by
  chunked transfer coding, or by the end of the connection; interim ``1xx`` answers skipped;
* the body read as it arrives (``Body``: ``readany``, ``read``), with flow control: the socket is
  not read while more than ``_HIGH_WATER`` bytes wait for the reader;
* a pool of idle keep-alive connections per origin (last in, first out), dropped after
  ``idle_seconds`` or when the server says ``Connection: close``; at most ``limit`` exchanges at once;
* TLS with certificate and host name verification (``ssl.create_default_context()``), never
  downgraded; no proxies, no cookies, no redirects (a 3xx is an answer like any other), no
  compression (``Accept-Encoding: identity``; an encoded answer is refused);
* names resolved by the origin's ``Resolver`` (which may refuse an address: the outbound guard),
  and the connection made to the address it returned, with the name for TLS;
* bounds: connect and read timeouts (the read timeout is the longest wait for the next bytes, so
  a stream may last as long as it keeps sending), a 64 KiB header block, ``max_body`` bytes of body;
* header names and values with CR, LF or NUL, and paths with spaces, are refused before sending.

A request that is **idempotent** (``idempotent=True``: every ledger write is, being conditional or
carrying a ``ClientRequestToken``) and was sent on a reused connection that the server had closed,
seen as the connection ending before any byte of an answer, is sent once more on a new connection,
as urllib3 and aiohttp do for idempotent methods. Any other request fails instead.

Errors: ``TimeoutError`` for a timeout, ``TransportError`` (an ``OSError``) for everything else,
``ConnectError`` when no connection could be made (nothing was sent). A connection whose exchange
did not complete (an error, a timeout, a cancellation, a body left unread) is closed, never reused.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar, cast, overload
from urllib.parse import urlsplit

_HEAD_LIMIT: Final = 64 * 1024
_HIGH_WATER: Final = 256 * 1024  # buffered, unread body bytes that stop reading the socket
_LOW_WATER: Final = 64 * 1024
_STATUS_LINE: Final = re.compile(rb"HTTP/1\.([01]) ([1-5][0-9][0-9])(?: [^\r\n]*)?")
_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CHUNK_SIZE: Final = re.compile(rb"([0-9A-Fa-f]{1,8})(?:;[^\r\n]*)?")
_UNSAFE: Final = re.compile(r"[\r\n\x00]")
_T = TypeVar("_T")
_CLIENT_HEADERS: Final = frozenset({"host", "content-length", "transfer-encoding", "connection"})
# What a chunked answer's next line must be, when no chunk's data is being read.
_SIZE_LINE: Final = -1
_CHUNK_END: Final = -2  # the CRLF after a chunk's data
_TRAILERS: Final = -3  # after the last chunk


class TransportError(OSError):
    """The exchange failed: the connection was lost or refused, or the answer was malformed."""


class ConnectError(TransportError):
    """No connection could be made; nothing was sent."""


class _StaleConnection(TransportError):
    """A reused connection ended before any byte of an answer: the server had closed it."""


class Resolver(Protocol):
    async def resolve(self, host: str, port: int) -> list[str]:
        """The addresses to connect to for ``host``, in order; raises ``OSError`` to refuse."""
        ...


class SystemResolver:
    """The system's resolver, through the event loop."""

    async def resolve(self, host: str, port: int) -> list[str]:
        found = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
        return list(dict.fromkeys(str(entry[4][0]) for entry in found))


class Headers(Mapping[str, str]):
    """An answer's headers: case-insensitive; a repeated header's values joined with ", "."""

    __slots__ = ("_values",)

    def __init__(self, values: dict[str, str]) -> None:
        self._values = values  # lowercase names

    def __getitem__(self, name: str) -> str:
        return self._values[name.lower()]

    @overload
    def get(self, name: str, /) -> str | None: ...

    @overload
    def get(self, name: str, default: str, /) -> str: ...

    @overload
    def get(self, name: str, default: _T, /) -> str | _T: ...

    def get(self, name: str, default: object = None, /) -> object:
        return self._values.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Headers({self._values!r})"


@dataclass(frozen=True, slots=True)
class Response:
    """A whole answer (``Origin.post``)."""

    status: int
    headers: Headers
    body: bytes


class Body:
    """An answer's body as it arrives. Reads wait at most the read timeout for the next bytes."""

    def __init__(self, connection: _Connection, read_timeout: float, max_body: int) -> None:
        #: The connection while the body is still arriving; None once its exchange ended (the
        #: connection may then serve another exchange, and this body must not touch it).
        self._connection: _Connection | None = connection
        self._read_timeout = read_timeout
        self._max_body = max_body
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._received = 0
        self._eof = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    def is_eof(self) -> bool:
        """Whether the whole body has arrived and been read."""
        return self._eof and not self._chunks

    async def readany(self) -> bytes:
        """The bytes that have arrived (waiting for some if none has); ``b""`` at the end."""
        await self._wait()
        if not self._chunks:
            return b""
        data = b"".join(self._chunks) if len(self._chunks) > 1 else self._chunks[0]
        self._chunks.clear()
        self._consumed(len(data))
        return data

    async def read(self, limit: int = -1) -> bytes:
        """Up to ``limit`` bytes (all that is left when negative); ``b""`` at the end."""
        if limit < 0:
            parts = []
            while chunk := await self.readany():
                parts.append(chunk)
            return b"".join(parts)
        await self._wait()
        if not self._chunks or limit == 0:
            return b""
        data = self._chunks.popleft()
        if len(data) > limit:
            data, rest = data[:limit], data[limit:]
            self._chunks.appendleft(rest)
        self._consumed(len(data))
        return data

    async def _wait(self) -> None:
        while not self._chunks and not self._eof:
            if self._error is not None:
                raise self._error
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            # A plain timer on the waiter: cheaper per chunk than an ``asyncio.timeout`` scope.
            timer = loop.call_later(self._read_timeout, _expire, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None

    def _consumed(self, count: int) -> None:
        self._buffered -= count
        if self._buffered <= _LOW_WATER and self._connection is not None:
            self._connection.resume_reading()

    # -- fed by the connection --------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        self._received += len(data)
        if self._received > self._max_body:
            raise TransportError("the answer is too large")
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > _HIGH_WATER and self._connection is not None:
            self._connection.pause_reading()
        self._wake()

    def _end(self) -> None:
        self._eof = True
        self._wake()

    def _fail(self, error: BaseException) -> None:
        self._error = error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class StreamedResponse:
    """An answer whose body is read as it arrives. ``release()`` when done with it: a body still
    arriving closes the connection; a whole one has already given it back to the pool."""

    __slots__ = ("content", "headers", "status")

    def __init__(self, status: int, headers: Headers, content: Body) -> None:
        self.status = status
        self.headers = headers
        self.content = content

    async def read(self) -> bytes:
        """The whole (rest of the) body."""
        return await self.content.read()

    def release(self) -> None:
        connection = self.content._connection
        if connection is not None:
            connection.close()

    close = release


class Origin:
    """Pooled connections to one scheme, host and port. One per event loop."""

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
        resolver: Resolver | None = None,
        user_agent: str | None = None,
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
        self._resolver = resolver
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._slots = asyncio.Semaphore(limit)
        self._max_idle = max_idle
        self._idle_seconds = idle_seconds
        self._max_body = max_body
        self._idle: list[_Connection] = []
        self._closed = False
        self._user_agent = user_agent
        self._fixed = f"Host: {self.host}\r\n"

    async def post(self, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        """Sends one idempotent POST and reads its whole answer."""
        response = await self.open("POST", path, headers, body, idempotent=True)
        try:
            data = await response.read()
        finally:
            response.release()
        return Response(response.status, response.headers, data)

    async def open(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes | None,
        *,
        idempotent: bool = False,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
    ) -> StreamedResponse:
        """Sends one request; its answer once the head has arrived (read the body, then
        ``release()`` it)."""
        request = self._encode(method, path, headers, body)
        reading = self._read_timeout if read_timeout is None else read_timeout
        connecting = self._connect_timeout if connect_timeout is None else connect_timeout
        for attempt in (1, 2):
            if self._slots.locked():
                async with asyncio.timeout(connecting):
                    await self._slots.acquire()
            else:
                await self._slots.acquire()  # a free slot: taken at once, nothing to time
            slot = _Slot(self._slots)
            try:
                connection = self._take_idle() if attempt == 1 else None
                if connection is None:
                    async with asyncio.timeout(connecting):
                        connection = await self._connect()
                return await self._exchange(connection, request, reading, slot)
            except _StaleConnection:
                slot.release()
                if not idempotent or attempt == 2:
                    raise
            except BaseException:
                slot.release()
                raise
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    async def close(self) -> None:
        """Closes the idle connections; the origin takes no more requests."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _encode(self, method: str, path: str, headers: Mapping[str, str], body: bytes | None) -> bytes:
        if not _TOKEN.fullmatch(method):
            raise ValueError("the request method is not a token")
        if not path.startswith("/") or _UNSAFE.search(path) or " " in path:
            raise ValueError("the request path must be an absolute path without spaces or line breaks")
        lines = [f"{method} {path} HTTP/1.1\r\n{self._fixed}"]
        if body is not None:
            lines.append(f"Content-Length: {len(body)}\r\n")
        agent, encoding = self._user_agent, "identity"
        for name, value in headers.items():
            if not _TOKEN.fullmatch(name) or _UNSAFE.search(value):
                raise ValueError(f"the header {name!r} has a name or value HTTP cannot carry")
            lower = name.lower()
            if lower in _CLIENT_HEADERS:
                raise ValueError(f"the header {name!r} is set by the client")
            if lower == "user-agent":
                agent = None  # the caller's own
            elif lower == "accept-encoding":
                if value.strip().lower() != "identity":
                    raise ValueError(
                        f"the header {name!r} must be identity: the client reads no encoded answers"
                    )
                encoding = ""  # the caller's own, the same
            lines.append(f"{name}: {value}\r\n")
        if agent:
            lines.append(f"User-Agent: {agent}\r\n")
        if encoding:
            lines.append(f"Accept-Encoding: {encoding}\r\n")
        lines.append("\r\n")
        try:
            head = "".join(lines).encode("ascii")
        except UnicodeEncodeError:
            raise ValueError("header values must be ASCII") from None
        return head + body if body else head

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
            raise ConnectError("the origin is closed")
        loop = asyncio.get_running_loop()
        if self._resolver is None:
            addresses = [self._host]  # resolved by the loop
        else:
            try:
                addresses = await self._resolver.resolve(self._host, self._port)
            except OSError as error:
                raise ConnectError(f"could not resolve the host: {error}") from error
            if not addresses:
                raise ConnectError("could not resolve the host")
        last: BaseException | None = None
        for address in addresses:
            try:
                _, connection = await loop.create_connection(
                    lambda: _Connection(self._max_body, self._done),
                    address,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._tls else None,
                )
            except (OSError, ssl.SSLError) as error:
                last = error
                continue
            return connection
        raise ConnectError(f"could not connect: {type(last).__name__}") from last

    async def _exchange(
        self, connection: _Connection, request: bytes, read_timeout: float, slot: _Slot
    ) -> StreamedResponse:
        timer = None
        try:
            head = connection.begin(request, read_timeout, slot)
            # A plain timer on the head's future, as ``Body`` does per read: cheaper than a scope.
            timer = asyncio.get_running_loop().call_later(read_timeout, _expire, head)
            status, headers, body = await head
        except BaseException:
            connection.close()  # mid-exchange: its state is unknown
            raise
        finally:
            if timer is not None:
                timer.cancel()
        return StreamedResponse(status, headers, body)

    def _done(self, connection: _Connection, keep_alive: bool) -> None:
        """An exchange ended (its answer whole, or its connection closed): the connection goes
        back to the pool if it may be reused."""
        if keep_alive and not self._closed and connection.reusable and len(self._idle) < self._max_idle:
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:
            connection.close()


class _Slot:
    """One exchange's hold on its origin's limit, given back exactly once."""

    __slots__ = ("_semaphore",)

    def __init__(self, semaphore: asyncio.Semaphore) -> None:
        self._semaphore: asyncio.Semaphore | None = semaphore

    def release(self) -> None:
        if self._semaphore is not None:
            self._semaphore.release()
            self._semaphore = None


class _Connection(asyncio.Protocol):
    """One connection, one exchange at a time; parses the answer as its bytes arrive."""

    def __init__(self, max_body: int, done: Callable[[_Connection, bool], None]) -> None:
        self._max_body = max_body
        self._done = done
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._head: asyncio.Future[tuple[int, Headers, Body]] | None = None
        self._body: Body | None = None
        self._slot: _Slot | None = None
        self._read_timeout = 0.0
        self._active = False  # an exchange is under way (begun, not yet ended)
        self._used = False  # an exchange completed on it before
        self._received = False  # a byte of the current answer arrived
        self._lost = False
        self._paused = False
        self.idle_since = 0.0
        # The answer being read.
        self._status = 0
        self._headers = Headers({})
        self._keep_alive = True
        self._framing = ""  # "", "length", "chunked" or "close"
        self._remaining = 0

    @property
    def reusable(self) -> bool:
        return not self._lost and self._transport is not None and not self._transport.is_closing()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's does not subclass asyncio's

    def begin(
        self, request: bytes, read_timeout: float, slot: _Slot
    ) -> asyncio.Future[tuple[int, Headers, Body]]:
        """Sends ``request``: its answer's status, headers and body, once the head has arrived.
        The exchange holds ``slot`` until it ends."""
        assert self._transport is not None, "not connected"
        assert not self._active, "one exchange at a time"
        if self._lost or self._transport.is_closing():
            raise _StaleConnection("the connection was closed")
        self._head = asyncio.get_running_loop().create_future()
        self._body = None
        self._slot = slot
        self._read_timeout = read_timeout
        self._active = True
        self._received = False
        self._buffer.clear()
        self._framing = ""
        self._transport.write(request)
        return self._head

    def close(self) -> None:
        self._lost = True
        if self._transport is not None:
            self._transport.close()
        if self._body is not None and self._active:
            self._body._fail(TransportError("the answer was abandoned"))
        self._end_exchange(keep_alive=False)

    def pause_reading(self) -> None:
        if not self._paused and self._transport is not None and not self._transport.is_closing():
            self._paused = True
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._paused and self._transport is not None and not self._transport.is_closing():
            self._paused = False
            self._transport.resume_reading()

    # -- asyncio.Protocol ---------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if not self._active:
            self.close()  # bytes nobody asked for: the connection cannot be trusted
            return
        self._received = True
        self._buffer += data
        try:
            self._advance()
        except TransportError as error:
            self._fail(error)

    def eof_received(self) -> bool:
        if self._active and self._framing == "close" and self._body is not None:
            self._body._end()
            self._end_exchange(keep_alive=False)
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if not self._active:
            return
        head = self._head
        if head is not None and not head.done():
            if not self._received and self._used:
                self._fail(_StaleConnection("the server closed the connection"))
            else:
                self._fail(TransportError("the connection was lost before the answer"))
        elif self._framing == "close" and exc is None and self._body is not None:
            self._body._end()
            self._end_exchange(keep_alive=False)
        else:
            self._fail(TransportError("the connection was lost mid-answer"))

    # -- parsing ------------------------------------------------------------------------------------

    def _fail(self, error: TransportError) -> None:
        head = self._head
        if head is not None and not head.done():
            head.set_exception(error)
        elif self._body is not None:
            self._body._fail(error)
        self._lost = True
        if self._transport is not None:
            self._transport.close()
        self._end_exchange(keep_alive=False)

    def _advance(self) -> None:
        while self._active:
            if not self._framing:
                if not self._read_head():
                    return
                self._body = Body(self, self._read_timeout, self._max_body)
                assert self._head is not None
                self._head.set_result((self._status, self._headers, self._body))
            body = self._body
            assert body is not None
            if self._framing == "length":
                if not self._read_length(body):
                    return
            elif self._framing == "chunked":
                if not self._read_chunks(body):
                    return
            else:  # "close": everything until the connection ends
                self._take(body, len(self._buffer))
                return
            body._end()
            self._end_exchange(keep_alive=self._keep_alive and not self._buffer)

    def _end_exchange(self, *, keep_alive: bool) -> None:
        if not self._active:
            return
        self._active = False
        self._used = True
        if self._body is not None:
            self._body._connection = None  # whole or failed: it lets go of the connection
        self.resume_reading()
        if self._slot is not None:
            self._slot.release()
            self._slot = None
        self._done(self, keep_alive)

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
        self._status, self._headers = status, Headers(headers)
        connection = headers.get("connection", "").lower()
        self._keep_alive = match[1] == b"1" and "close" not in connection
        if headers.get("content-encoding", "identity").lower() not in ("identity", ""):
            raise TransportError("the answer's content coding is not supported")
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

    def _read_length(self, body: Body) -> bool:
        self._take(body, min(self._remaining, len(self._buffer)))
        return self._remaining == 0

    def _read_chunks(self, body: Body) -> bool:
        """Decodes chunked transfer coding; True once the last chunk and its trailers are read.
        ``_remaining`` is the bytes left of the current chunk, or what the next line must be."""
        while True:
            if self._remaining > 0:
                self._take(body, min(self._remaining, len(self._buffer)))
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
            if body._received + self._remaining > self._max_body:
                raise TransportError("the answer is too large")  # said before its bytes arrive

    def _take(self, body: Body, count: int) -> None:
        if count:
            data = bytes(self._buffer[:count])
            del self._buffer[:count]
            if self._framing != "close":
                self._remaining -= count
            body._feed(data)
