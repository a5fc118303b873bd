"""Server-sent events: the one encoder and the one incremental decoder.

Encoding is what Tollgate streams to its clients; decoding is how it reads a provider's stream.
Both sit on the hot path, so they work on bytes, build each event once and keep no per-byte
state machine::

    >>> encode_event({"a": 1})
    b'data: {"a":1}\\n\\n'
    >>> decoder = SSEDecoder()
    >>> decoder.feed(b"data: hel")
    []
    >>> decoder.feed(b"lo\\n\\n")
    [SSEEvent(data='hello', event='message', id=None, retry=None)]

The decoder follows the WHATWG event-stream rules: ``\\n``, ``\\r\\n`` and ``\\r`` end lines,
lines starting with ``:`` are comments (keep-alives), one space after the colon is optional, and
multi-line ``data`` is joined with ``\\n``. A chunk may end anywhere, even inside a UTF-8
character or between ``\\r`` and ``\\n``.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from tollgate.errors import TollgateError

__all__ = ["DONE", "SSEDecoder", "SSEEvent", "encode_error", "encode_event"]

#: The terminator OpenAI-compatible streams end with.
DONE = b"data: [DONE]\n\n"

# json.dumps builds a new encoder per call when given options; one prebuilt encoder avoids that.
# ASCII output (non-ASCII as \u escapes) is as fast, and cannot fail on a lone surrogate that an
# upstream's JSON may legally carry.
_encode_json = json.JSONEncoder(separators=(",", ":")).encode

_BOM = b"\xef\xbb\xbf"
_new_event = tuple.__new__


def encode_event(data: dict[str, Any] | str) -> bytes:
    """One ``data:`` event. A dict is sent as compact JSON; a string as is, one line per line."""
    if isinstance(data, str):
        if "\n" in data or "\r" in data:
            lines = data.replace("\r\n", "\n").replace("\r", "\n").split("\n")
            return ("".join(f"data: {line}\n" for line in lines) + "\n").encode("utf-8", "replace")
        return f"data: {data}\n\n".encode("utf-8", "replace")
    return f"data: {_encode_json(data)}\n\n".encode()


def encode_error(err: TollgateError) -> bytes:
    """The SSE event that reports an error after the first streamed byte (OpenAI's error object)."""
    return encode_event(err.body())


class SSEEvent(NamedTuple):
    """One dispatched event. ``event`` defaults to ``message`` as in the browser's EventSource;
    ``id`` is the last event id and ``retry`` the last reconnection delay the stream set."""

    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None


class SSEDecoder:
    """Incremental event-stream decoder: feed it bytes as they arrive, get complete events back.

    One decoder per stream; it is not shared between streams or tasks.
    """

    __slots__ = ("_data", "_event", "_last_id", "_pending", "_retry", "_skip_lf", "_start")

    def __init__(self) -> None:
        self._pending = b""  # an unterminated line carried to the next chunk
        self._skip_lf = False  # the last chunk ended with "\r": a leading "\n" belongs to it
        self._start = True  # a byte-order mark is only stripped at the very start
        self._data: list[str] = []
        self._event: str | None = None
        self._last_id: str | None = None
        self._retry: int | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """The events completed by ``chunk``, in order (often none, often one)."""
        if self._pending:
            chunk = self._pending + chunk
            self._pending = b""
        if self._start:
            if len(chunk) < 3 and _BOM.startswith(chunk):
                self._pending = chunk
                return []
            self._start = False
            if chunk.startswith(_BOM):
                chunk = chunk[3:]
        if self._skip_lf and chunk:
            self._skip_lf = False
            if chunk[0] == 0x0A:
                chunk = chunk[1:]
        if b"\r" in chunk:
            # A trailing "\r" ends its line now; a "\n" opening the next chunk must not add one.
            self._skip_lf = chunk.endswith(b"\r")
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = chunk.split(b"\n")
        # The last piece is unterminated (b"" when the chunk ended on a line end). Splitting
        # bytes on "\n" never cuts a UTF-8 character, so complete lines decode safely.
        self._pending = lines.pop()
        events: list[SSEEvent] = []
        data = self._data
        for line in lines:
            if not line:
                if data:
                    events.append(self._dispatch())
                    data = self._data
                else:
                    self._event = None
            elif line.startswith(b"data:"):  # the hot path, inlined
                value = line[6:] if line[5:6] == b" " else line[5:]
                data.append(value.decode("utf-8", "replace"))
            elif line[0] != 0x3A:  # lines opening with ":" are comments, such as keep-alives
                self._field(line)
        return events

    def close(self) -> list[SSEEvent]:
        """Ends the stream: an event whose data lines all arrived but whose blank line did not is
        still dispatched (some servers close right after the last line); an unterminated line is not.
        """
        self._pending = b""
        self._skip_lf = False
        if self._data:
            return [self._dispatch()]
        return []

    def _field(self, line: bytes) -> None:
        name, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value.decode("utf-8", "replace"))
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id":
            if b"\x00" not in value:
                self._last_id = value.decode("utf-8", "replace")
        elif name == b"retry" and value.isdigit():
            self._retry = int(value)
        # Other field names are ignored, as the standard says.

    def _dispatch(self) -> SSEEvent:
        data = self._data
        text = data[0] if len(data) == 1 else "\n".join(data)
        # tuple.__new__ skips NamedTuple's Python-level __new__: half the cost, once per event.
        event = _new_event(SSEEvent, (text, self._event or "message", self._last_id, self._retry))
        self._data = []
        self._event = None
        return event
