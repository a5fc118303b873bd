"""``EventStream``: a departed client closes the event generator at a ``yield`` (where ChatCall
hands the provider's stream to its drain), never by cancelling what the generator awaits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tollgate.api.streaming import EventStream


class Events:
    """An event generator that records how it ended."""

    def __init__(self, count: int, *, pause: float = 0.0) -> None:
        self.count = count
        self.pause = pause
        self.ended: str | None = None

    async def __call__(self) -> AsyncIterator[bytes]:
        try:
            for index in range(self.count):
                await asyncio.sleep(self.pause)  # the provider's next chunk
                yield f"data: {index}\n\n".encode()
            self.ended = "finished"
        except GeneratorExit:
            self.ended = "closed at a yield"
            raise
        except asyncio.CancelledError:
            self.ended = "cancelled while waiting"
            raise


def run(
    events: Events, *, leave_after: int | None = None, fail_after: int | None = None
) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    gone = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if fail_after is not None and len(sent) > fail_after:
            raise ConnectionResetError("the peer went away")
        sent.append(message)
        if leave_after is not None and len(sent) > leave_after:
            gone.set()

    async def main() -> None:
        await EventStream(events(), headers={"Cache-Control": "no-cache"})({"type": "http"}, receive, send)

    asyncio.run(main())
    return sent


def bodies(sent: list[dict[str, Any]]) -> list[bytes]:
    return [message["body"] for message in sent if message["type"] == "http.response.body"]


def test_a_whole_stream_is_sent_and_ended() -> None:
    events = Events(3)
    sent = run(events)

    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    assert (b"content-type", b"text/event-stream; charset=utf-8") in sent[0]["headers"]
    assert bodies(sent) == [b"data: 0\n\n", b"data: 1\n\n", b"data: 2\n\n", b""]
    assert sent[-1]["more_body"] is False
    assert events.ended == "finished"


@pytest.mark.parametrize("pause", [0.0, 0.01])
def test_a_departed_client_closes_the_generator_at_a_yield(pause: float) -> None:
    events = Events(50, pause=pause)
    sent = run(events, leave_after=2)

    assert events.ended == "closed at a yield"  # not cancelled inside the provider's stream
    assert len(bodies(sent)) < 50 and sent[-1].get("more_body") is True  # never "ended" to nobody


def test_a_broken_transport_is_a_disconnect() -> None:
    events = Events(10)
    sent = run(events, fail_after=2)

    assert events.ended == "closed at a yield"
    assert len(bodies(sent)) == 2


def test_a_cancelled_request_still_cancels() -> None:
    """Server shutdown or a timeout cancels the request task: that is not swallowed."""
    events = Events(100, pause=1.0)

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        pass

    async def main() -> None:
        task = asyncio.create_task(EventStream(events())({"type": "http"}, receive, send))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert events.ended == "cancelled while waiting"
