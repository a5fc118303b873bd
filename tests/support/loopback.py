"""The lifecycle every loopback vendor shares: an aiohttp server on 127.0.0.1, started in the test's
event loop (``async with``) or on its own loop in a daemon thread (``in_thread``, for sync tests
and other processes' clients), and an event that ends every scripted pause when it closes.

A vendor subclasses it and adds its routes::

    class EchoUpstream(LoopbackServer):
        thread_name = "echo-upstream"

        def add_routes(self, app: web.Application) -> None:
            app.router.add_post("/echo", self._echo)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from types import TracebackType
from typing import Any, ClassVar, Self

from aiohttp import web

__all__ = ["LoopbackServer"]


class LoopbackServer:
    """A real HTTP server on 127.0.0.1 (``port=0`` lets the OS pick one)."""

    #: The name of the thread ``in_thread`` runs the server in.
    thread_name: ClassVar[str] = "loopback-upstream"
    #: The largest request body accepted (aiohttp's default is 1 MiB).
    client_max_size: ClassVar[int] = 1024 * 1024

    def __init__(self, *, port: int = 0) -> None:
        self.port = port
        self._runner: web.AppRunner | None = None
        self._closing: asyncio.Event | None = None

    def add_routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def start(self) -> Self:
        self._closing = asyncio.Event()
        app = web.Application(client_max_size=self.client_max_size)
        self.add_routes(app)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        if self._closing is not None:
            self._closing.set()  # ends stalls and latencies at once
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @classmethod
    @contextmanager
    def in_thread(cls, **options: Any) -> Iterator[Self]:
        """The server, built with ``options``, on its own event loop in a daemon thread."""
        upstream = cls(**options)
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name=cls.thread_name, daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(upstream.start(), loop).result(timeout=10)
            yield upstream
        finally:
            with suppress(Exception):
                asyncio.run_coroutine_threadsafe(upstream.close(), loop).result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()

    async def _pause(self, seconds: float) -> None:
        """Waits ``seconds``, or less if the server closes meanwhile."""
        assert self._closing is not None
        with suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)
