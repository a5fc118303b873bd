"""Tollgate's HTTP/1.1 client (``tollgate.http1``: the ledger's DynamoDB writes, and the calls to
providers) against real loopback servers that answer with raw bytes: framing, keep-alive and its
failures, bodies read as they arrive and flow control, bounds, refusals, timeouts, cancellation
and TLS verification; every test on both event loops."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import socket
import ssl
import struct
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop

from tollgate.http1 import Origin, TransportError

Handler = Callable[["RawServer", asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class RawServer:
    """A loopback server on its own thread and loop; connection ``n`` (from 0) is served by
    ``handler(server, reader, writer, n)``. Records every request it read."""

    def __init__(self, handler: Handler, *, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.connections = 0
        self.open = 0
        self.most_open = 0
        self.requests: list[tuple[str, bytes]] = []
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.port = 0

    async def read_request(self, reader: asyncio.StreamReader) -> bytes | None:
        """One request's body (after its head), or None when the client closed the connection."""
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("ascii")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        length = next(
            int(line.split(":", 1)[1])
            for line in head.split("\r\n")
            if line.lower().startswith("content-length:")
        )
        body = await reader.readexactly(length)
        self.requests.append((head, body))
        return body

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = self.connections
        self.connections += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            await self.handler(self, reader, writer, number)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open -= 1
            writer.close()

    def __enter__(self) -> RawServer:
        def run() -> None:
            loop = self._loop = asyncio.new_event_loop()
            server = loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls))
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            loop.run_forever()
            server.close()
            handlers = asyncio.all_tasks(loop)
            for task in handlers:
                task.cancel()
            if handlers:
                loop.run_until_complete(asyncio.wait(handlers))
            loop.run_until_complete(server.wait_closed())
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def origin(self, **options: Any) -> Origin:
        scheme = "https" if self.tls else "http"
        options.setdefault("connect_timeout", 2.0)
        options.setdefault("read_timeout", 2.0)
        return Origin(f"{scheme}://127.0.0.1:{self.port}", **options)


@contextlib.asynccontextmanager
async def opened(server: RawServer, **options: Any) -> AsyncIterator[Origin]:
    """``server.origin(**options)``, closed when the block ends."""
    origin = server.origin(**options)
    try:
        yield origin
    finally:
        await origin.close()


def answer(body: bytes = b'{"ok":true}', *, status: str = "200 OK", extra: str = "") -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


def serving(*answers: bytes, then_close: bool = False) -> Handler:
    """Answers each request of every connection with the next of ``answers`` (the last repeats)."""

    async def handler(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int
    ) -> None:
        index = 0
        while await server.read_request(reader) is not None:
            writer.write(answers[min(index, len(answers) - 1)])
            await writer.drain()
            index += 1
            if then_close:
                return

    return handler


@pytest.fixture
def serve() -> Iterator[Callable[..., RawServer]]:
    started: list[RawServer] = []

    def start(handler: Handler, **options: Any) -> RawServer:
        server = RawServer(handler, **options).__enter__()
        started.append(server)
        return server

    yield start
    for server in started:
        server.__exit__()


_RUNNERS: dict[str, Callable[[Any], Any]] = {"asyncio": asyncio.run, "uvloop": uvloop.run}
_runner: list[Callable[[Any], Any]] = [asyncio.run]


@pytest.fixture(autouse=True, params=sorted(_RUNNERS))
def event_loop_kind(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test on both loops: the gateway runs on asyncio's, the stream function on uvloop's."""
    _runner[0] = _RUNNERS[request.param]
    yield
    _runner[0] = asyncio.run


def run(scenario: Callable[[], Awaitable[Any]]) -> Any:
    return _runner[0](scenario())


async def post_all(origin: Origin, count: int, body: bytes = b"{}") -> list[Any]:
    try:
        return [await origin.post("/", {"Content-Type": "application/json"}, body) for _ in range(count)]
    finally:
        await origin.close()


# -- framing and keep-alive ------------------------------------------------------------------------


def test_requests_share_one_kept_alive_connection(serve) -> None:  # type: ignore[no-untyped-def]
    server = serve(serving(answer(b'{"n":1}', extra="X-Amzn-RequestId: abc\r\n")))
    origin = server.origin()

    responses = run(lambda: post_all(origin, 3, b'{"a":1}'))

    assert [(r.status, r.body, r.headers["x-amzn-requestid"]) for r in responses] == [
        (200, b'{"n":1}', "abc")
    ] * 3
    assert server.connections == 1
    head, body = server.requests[0]
    assert head.startswith("POST / HTTP/1.1\r\n") and body == b'{"a":1}'
    assert f"Host: 127.0.0.1:{server.port}\r\n" in head and "Content-Length: 7\r\n" in head


def test_a_chunked_answer_split_across_packets_is_decoded(serve) -> None:  # type: ignore[no-untyped-def]
    async def handler(server, reader, writer, number):  # type: ignore[no-untyped-def]
        while await server.read_request(reader) is not None:
            for piece in [
                b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\n{"a":',
                b"\r\n",
                b"3\r\n12}\r",
                b"\n0\r\nX-Trailer: t\r\n\r\n",
            ]:
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.01)

    server = serve(handler)

    responses = run(lambda: post_all(server.origin(), 2))

    assert [r.body for r in responses] == [b'{"a":12}'] * 2
    assert server.connections == 1


def test_an_answer_framed_by_the_connection_ending_is_read_whole(serve) -> None:  # type: ignore[no-untyped-def]
    server = serve(serving(b"HTTP/1.1 200 OK\r\n\r\nuntil the end", then_close=True))

    responses = run(lambda: post_all(server.origin(), 2))

    assert [r.body for r in responses] == [b"until the end"] * 2
    assert server.connections == 2  # such a connection is never reused


def test_an_interim_answer_is_skipped(serve) -> None:  # type: ignore[no-untyped-def]
    server = serve(serving(b"HTTP/1.1 100 Continue\r\n\r\n" + answer(b"real")))

    (response,) = run(lambda: post_all(server.origin(), 1))

    assert (response.status, response.body) == (200, b"real")


def test_connection_close_from_the_server_is_honoured(serve) -> None:  # type: ignore[no-untyped-def]
    server = serve(serving(answer(extra="Connection: close\r\n")))

    run(lambda: post_all(server.origin(), 2))

    assert server.connections == 2


def test_bytes_past_the_answer_retire_the_connection(serve) -> None:  # type: ignore[no-untyped-def]
    server = serve(serving(answer(b"one") + answer(b"unasked")))

    responses = run(lambda: post_all(server.origin(), 2))

    assert [r.body for r in responses] == [b"one", b"one"]
    assert server.connections == 2


def test_bytes_arriving_between_exchanges_retire_the_connection(serve) -> None:  # type: ignore[no-untyped-def]
    """Else they would be read as the answer to the next request."""

    async def handler(server, reader, writer, number):  # type: ignore[no-untyped-def]
        while await server.read_request(reader) is not None:
            writer.write(answer(b"asked"))
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(answer(b"unasked"))

    server = serve(handler)

    async def scenario() -> list[Any]:
        async with opened(server) as origin:
            first = await origin.post("/", {}, b"1")
            await asyncio.sleep(0.15)
            return [first, await origin.post("/", {}, b"2")]

    assert [r.body for r in run(scenario)] == [b"asked", b"asked"]
    assert server.connections == 2


def test_error_statuses_are_answers(serve) -> None:  # type: ignore[no-untyped-def]
    server = serve(serving(answer(b'{"__type":"x#ThrottlingException"}', status="400 Bad Request")))

    (response,) = run(lambda: post_all(server.origin(), 1))

    assert (response.status, response.body) == (400, b'{"__type":"x#ThrottlingException"}')


# -- failures ---------------------------------------------------------------------------------------


def test_a_connection_the_server_closed_while_idle_is_replaced_once(serve) -> None:  # type: ignore[no-untyped-def]
    server = serve(serving(answer(b"fresh"), then_close=True))

    async def scenario() -> list[Any]:
        async with opened(server) as origin:
            first = await origin.post("/", {}, b"1")
            await asyncio.sleep(0.05)  # the server has closed the kept connection meanwhile
            return [first, await origin.post("/", {}, b"2")]

    responses = run(scenario)

    assert [r.body for r in responses] == [b"fresh", b"fresh"]
    assert [body for _, body in server.requests] == [b"1", b"2"]  # the second sent once, on a new one


def test_a_request_dropped_on_a_reused_connection_is_sent_once_more_on_a_new_one(serve) -> None:  # type: ignore[no-untyped-def]
    """The race a pool cannot see coming: the server closes a kept connection as the request
    leaves. It is sent again once, on a new connection; dropped there too, it is an error."""

    async def handler(server, reader, writer, number):  # type: ignore[no-untyped-def]
        served = 0
        while (body := await server.read_request(reader)) is not None:
            if body == b"drop always" or (served and body == b"drop once"):
                return  # closes without answering
            writer.write(answer(b"answer to " + body))
            await writer.drain()
            served += 1

    server = serve(handler)

    async def scenario(second: bytes) -> Any:
        async with opened(server) as origin:
            await origin.post("/", {}, b"first")
            return await origin.post("/", {}, second)

    assert run(lambda: scenario(b"drop once")).body == b"answer to drop once"
    assert [body for _, body in server.requests] == [b"first", b"drop once", b"drop once"]
    server.requests.clear()
    with pytest.raises(TransportError):
        run(lambda: scenario(b"drop always"))
    assert [body for _, body in server.requests] == [b"first", b"drop always", b"drop always"]


def test_a_connection_lost_mid_answer_fails_and_is_not_retried(serve) -> None:  # type: ignore[no-untyped-def]
    server = serve(serving(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\npartial", then_close=True))

    with pytest.raises(TransportError, match="lost mid-answer"):
        run(lambda: post_all(server.origin(), 1))
    assert len(server.requests) == 1


def test_an_answer_framed_by_the_connection_ending_is_refused_when_it_is_reset(serve) -> None:  # type: ignore[no-untyped-def]
    """A reset is not an end: the body may be cut short."""

    async def handler(server, reader, writer, number):  # type: ignore[no-untyped-def]
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n\r\ncut sho")
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
        writer.transport.abort()  # with a zero linger: a reset

    server = serve(handler)

    with pytest.raises(TransportError, match="lost mid-answer"):
        run(lambda: post_all(server.origin(), 1))


def test_a_new_connection_closed_before_answering_fails_and_is_not_retried(serve) -> None:  # type: ignore[no-untyped-def]
    async def handler(server, reader, writer, number):  # type: ignore[no-untyped-def]
        await server.read_request(reader)

    server = serve(handler)

    with pytest.raises(TransportError):
        run(lambda: post_all(server.origin(), 1))
    assert len(server.requests) == 1


def test_a_refused_connection_is_a_transport_error() -> None:
    origin = Origin("http://127.0.0.1:9", connect_timeout=2, read_timeout=2)

    with pytest.raises(TransportError, match="could not connect"):
        run(lambda: post_all(origin, 1))


def test_a_silent_server_times_out_and_its_connection_is_dropped(serve) -> None:  # type: ignore[no-untyped-def]
    async def handler(server, reader, writer, number):  # type: ignore[no-untyped-def]
        while await server.read_request(reader) is not None:
            if number == 0:
                await asyncio.sleep(5)  # never answers in time
            writer.write(answer(b"second connection"))

    server = serve(handler)

    async def scenario() -> Any:
        async with opened(server, read_timeout=0.2) as origin:
            with pytest.raises(TimeoutError):
                await origin.post("/", {}, b"1")
            return await origin.post("/", {}, b"2")

    assert run(scenario).body == b"second connection"


def test_a_cancelled_exchange_closes_its_connection(serve) -> None:  # type: ignore[no-untyped-def]
    """Its answer may still come: the connection is closed at once, so that answer can never be
    read as the next request's."""
    hung_up: list[int] = []

    async def handler(server, reader, writer, number):  # type: ignore[no-untyped-def]
        while (body := await server.read_request(reader)) is not None:
            if body == b"slow":
                try:
                    if await asyncio.wait_for(reader.read(1), 1.0) == b"":
                        hung_up.append(number)
                        return
                except TimeoutError:
                    pass
            writer.write(answer(b"answer to " + body))
            await writer.drain()

    server = serve(handler)

    async def scenario() -> Any:
        async with opened(server) as origin:
            await origin.post("/", {}, b"warm")
            slow = asyncio.create_task(origin.post("/", {}, b"slow"))
            await asyncio.sleep(0.1)
            slow.cancel()
            with pytest.raises(asyncio.CancelledError):
                await slow
            return await origin.post("/", {}, b"next")

    assert run(scenario).body == b"answer to next"
    assert hung_up == [0] and server.connections == 2


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"HTTP/2 200 OK\r\n\r\n", "status line"),
        (b"ICY 200 OK\r\nContent-Length: 0\r\n\r\n", "status line"),
        (b"HTTP/1.1 200 OK\r\nBad Header\r\nContent-Length: 0\r\n\r\n", "malformed header"),
        (b"HTTP/1.1 200 OK\r\n folded: x\r\nContent-Length: 0\r\n\r\n", "malformed header"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\nx", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "transfer coding"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX\r\n", "chunk"),
    ],
)
def test_malformed_answers_are_refused(serve, raw: bytes, problem: str) -> None:  # type: ignore[no-untyped-def]
    server = serve(serving(raw))

    with pytest.raises(TransportError, match=problem):
        run(lambda: post_all(server.origin(), 1))


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 101\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"40\r\n"
        + b"x" * 64
        + b"\r\n"
        + b"40\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 101,
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"x" * 70_000 + b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Endless: " + b"x" * 70_000,
    ],
    ids=["length", "chunked", "until-close", "header-block", "endless-header"],
)
def test_answers_over_the_bounds_are_refused(serve, raw: bytes) -> None:  # type: ignore[no-untyped-def]
    server = serve(serving(raw, then_close=True))

    with pytest.raises(TransportError, match="too large"):
        run(lambda: post_all(server.origin(max_body=100), 1))


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Amz-Target": "a\r\nX-Injected: 1"},
        {"X-Amz-Target": "a\nb"},
        {"X-Amz-Target": "a\x00"},
        {"Bad Name": "x"},
        {"Host": "elsewhere"},
        {"Content-Length": "1"},
        {"Accept-Encoding": "gzip"},
        {"X-Amz-Target": "caf\u00e9"},
    ],
)
def test_headers_http_cannot_carry_are_refused_before_sending(serve, headers: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    server = serve(serving(answer()))

    async def scenario() -> None:
        async with opened(server) as origin:
            await origin.post("/", headers, b"{}")

    with pytest.raises(ValueError, match="header"):
        run(scenario)
    assert server.connections == 0


def test_no_more_than_limit_connections_are_open_at_once(serve) -> None:  # type: ignore[no-untyped-def]
    async def handler(server, reader, writer, number):  # type: ignore[no-untyped-def]
        while await server.read_request(reader) is not None:
            await asyncio.sleep(0.05)
            writer.write(answer())

    server = serve(handler)

    async def scenario() -> None:
        async with opened(server, limit=2) as origin:
            await asyncio.gather(*(origin.post("/", {}, b"{}") for _ in range(6)))

    run(scenario)
    assert len(server.requests) == 6 and server.most_open == 2


def test_waiting_for_a_free_connection_gives_up_at_the_connect_timeout(serve) -> None:  # type: ignore[no-untyped-def]
    async def handler(server, reader, writer, number):  # type: ignore[no-untyped-def]
        while await server.read_request(reader) is not None:
            await asyncio.sleep(1.0)  # holds the only connection
            writer.write(answer())

    server = serve(handler)

    async def scenario() -> float:
        async with opened(server, limit=1, connect_timeout=0.2) as origin:
            holder = asyncio.ensure_future(origin.post("/", {}, b"first"))
            await asyncio.sleep(0.05)
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await origin.post("/", {}, b"second")
            waited = time.monotonic() - started
            assert (await holder).status == 200  # the first exchange was not disturbed
            return waited

    assert 0.15 < run(scenario) < 0.9
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    "url",
    ["ftp://h", "http://", "http://user:pw@h", "https://h/path", "https://h/?q=1", "https://h/#f"],
)
def test_origins_are_only_scheme_host_and_port(url: str) -> None:
    with pytest.raises(ValueError, match="origin"):
        Origin(url, connect_timeout=1, read_timeout=1)


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://dynamodb.us-east-1.amazonaws.com", "dynamodb.us-east-1.amazonaws.com"),
        ("https://DynamoDB.example.com:443/", "dynamodb.example.com"),
        ("http://localhost:80", "localhost"),
        ("http://127.0.0.1:8000", "127.0.0.1:8000"),
        ("http://[::1]:8000", "[::1]:8000"),
    ],
)
def test_the_host_header_omits_a_default_port(url: str, host: str) -> None:
    assert Origin(url, connect_timeout=1, read_timeout=1).host == host


# -- TLS ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (and its key), as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tollgate test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return folder / "cert.pem", folder / "key.pem"


@pytest.fixture
def tls_server(serve, certificate: tuple[Path, Path]) -> RawServer:  # type: ignore[no-untyped-def]
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return serve(serving(answer(b"over tls")), tls=context)  # type: ignore[no-any-return]


def test_an_untrusted_certificate_is_refused(tls_server: RawServer) -> None:
    with pytest.raises(TransportError, match="SSLCertVerificationError"):
        run(lambda: post_all(tls_server.origin(), 1))
    assert tls_server.requests == []


def test_a_trusted_certificate_carries_requests(
    tls_server: RawServer, certificate: tuple[Path, Path]
) -> None:
    trusted = ssl.create_default_context(cafile=str(certificate[0]))

    responses = run(lambda: post_all(tls_server.origin(ssl_context=trusted), 2))

    assert [r.body for r in responses] == [b"over tls"] * 2
    assert tls_server.connections == 1


# -- answers read as they arrive (the provider path) ---------------------------------------------


def test_a_body_is_read_as_it_arrives(serve) -> None:  # type: ignore[no-untyped-def]
    async def handler(server, reader, writer, number):  # type: ignore[no-untyped-def]
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
        await writer.drain()

    server = serve(handler)

    async def scenario() -> list[Any]:
        async with opened(server) as origin:
            response = await origin.open("POST", "/", {}, b"{}")
            first = await asyncio.wait_for(response.content.readany(), 0.15)  # before the second exists
            rest = [await response.content.readany(), await response.content.readany()]
            response.release()
            return [first, *rest, response.content.is_eof()]

    assert run(scenario) == [b"first", b"second", b"", True]


def test_a_reader_that_falls_behind_stops_the_socket_being_read(serve) -> None:  # type: ignore[no-untyped-def]
    """Flow control: unread bytes stay bounded, whatever the server sends; nothing is lost."""
    size = 8 * 1024 * 1024

    async def handler(server, reader, writer, number):  # type: ignore[no-untyped-def]
        await server.read_request(reader)
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode())
        for _ in range(size // 65536):
            writer.write(b"x" * 65536)
            await writer.drain()

    server = serve(handler)

    async def scenario() -> tuple[int, int]:
        async with opened(server, max_body=size) as origin:
            response = await origin.open("POST", "/", {}, b"{}")
            await asyncio.sleep(0.5)  # not reading
            buffered = response.content._buffered
            received = len(await response.read())
            response.release()
            return buffered, received

    buffered, received = run(scenario)
    assert received == size
    assert buffered < 2 * 1024 * 1024  # about the high-water mark plus one read, not 8 MiB


def test_a_stalled_body_times_out_and_its_connection_is_dropped(serve) -> None:  # type: ignore[no-untyped-def]
    async def handler(server, reader, writer, number):  # type: ignore[no-untyped-def]
        while await server.read_request(reader) is not None:
            if number == 0:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
                await writer.drain()
                await asyncio.sleep(5)
            writer.write(answer(b"fresh"))

    server = serve(handler)

    async def scenario_read() -> bytes:
        async with opened(server, read_timeout=0.2) as origin:
            response = await origin.open("POST", "/", {}, b"{}")
            assert await response.content.readany() == b"half"
            with pytest.raises(TimeoutError):
                await response.content.readany()
            response.release()
            second = await origin.open("POST", "/", {}, b"{}")
            body = await second.read()
            second.release()
            return body

    assert run(scenario_read) == b"fresh"
    assert server.connections == 2


def test_an_unfinished_body_released_closes_its_connection_and_a_whole_one_keeps_it(serve) -> None:  # type: ignore[no-untyped-def]
    async def handler(server, reader, writer, number):  # type: ignore[no-untyped-def]
        while (body := await server.read_request(reader)) is not None:
            if body == b"long":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nstart")
            else:
                writer.write(answer(b"short"))
            await writer.drain()

    server = serve(handler)

    async def scenario() -> None:
        async with opened(server) as origin:
            whole = await origin.open("POST", "/", {}, b"short")
            await asyncio.sleep(0.05)
            whole.release()  # unread, but whole: the connection went back to the pool
            again = await origin.open("POST", "/", {}, b"long")
            again.release()  # 95 bytes short: the connection cannot be reused
            last = await origin.open("POST", "/", {}, b"short")
            assert await last.read() == b"short"
            last.release()

    run(scenario)
    assert server.connections == 2


def test_a_non_idempotent_request_dropped_on_a_reused_connection_is_not_sent_again(serve) -> None:  # type: ignore[no-untyped-def]
    async def handler(server, reader, writer, number):  # type: ignore[no-untyped-def]
        served = 0
        while await server.read_request(reader) is not None:
            if served:
                return  # closes without answering
            writer.write(answer())
            await writer.drain()
            served += 1

    server = serve(handler)

    async def scenario() -> None:
        async with opened(server) as origin:
            (await origin.open("POST", "/", {}, b"first")).release()
            await asyncio.sleep(0.01)
            with pytest.raises(TransportError):
                await origin.open("POST", "/", {}, b"a chat completion")

    run(scenario)
    assert [body for _, body in server.requests] == [b"first", b"a chat completion"]


def test_an_encoded_answer_is_refused(serve) -> None:  # type: ignore[no-untyped-def]
    server = serve(serving(answer(b"\x1f\x8b...", extra="Content-Encoding: gzip\r\n")))

    with pytest.raises(TransportError, match="content coding"):
        run(lambda: post_all(server.origin(), 1))
    head, _ = server.requests[0]
    assert "Accept-Encoding: identity\r\n" in head


def test_failed_exchanges_give_their_slots_back(serve) -> None:  # type: ignore[no-untyped-def]
    async def handler(server, reader, writer, number):  # type: ignore[no-untyped-def]
        while (body := await server.read_request(reader)) is not None:
            writer.write(b"HTTP/9 nonsense\r\n\r\n" if body == b"bad" else answer(b"good"))
            await writer.drain()

    server = serve(handler)

    async def scenario() -> bytes:
        async with opened(server, limit=1, connect_timeout=1.0) as origin:
            for _ in range(3):
                with pytest.raises(TransportError):
                    await origin.post("/", {}, b"bad")
            abandoned = await origin.open("POST", "/", {}, b"good")
            abandoned.release()
            return (await origin.post("/", {}, b"good")).body  # would wait forever for a leaked slot

    assert run(scenario) == b"good"


def test_the_user_agent_is_the_origins_unless_the_caller_sets_one(serve) -> None:  # type: ignore[no-untyped-def]
    server = serve(serving(answer()))

    async def scenario() -> None:
        async with opened(server, user_agent="tollgate") as origin:
            await origin.post("/", {}, b"1")
            await origin.post("/", {"User-Agent": "custom/1"}, b"2")

    run(scenario)
    (first, _), (second, _) = server.requests
    assert "User-Agent: tollgate\r\n" in first
    assert "User-Agent: custom/1\r\n" in second and "tollgate" not in second


def test_accept_encoding_is_identity_and_sent_once(serve) -> None:  # type: ignore[no-untyped-def]
    server = serve(serving(answer()))

    async def scenario() -> None:
        async with opened(server) as origin:
            await origin.post("/", {}, b"1")
            await origin.post("/", {"Accept-Encoding": "identity"}, b"2")

    run(scenario)
    for head, _ in server.requests:
        assert head.lower().count("accept-encoding: identity\r\n") == 1
