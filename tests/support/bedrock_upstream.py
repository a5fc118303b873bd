"""A fake Amazon Bedrock Runtime: a real HTTP server on 127.0.0.1 that the real boto3
``bedrock-runtime`` client is pointed at (``endpoint_url``), strict like the real one, and
scriptable per test.

Async tests::

    async with BedrockUpstream() as up:
        up.script = BedrockScript(chunk_delay=0.01, omit_usage=True)
        client = boto3.client("bedrock-runtime", endpoint_url=up.endpoint_url, region_name="us-east-1")
        ...
        assert up.requests[0].operation == "converse-stream"

Sync tests, or another process's client::

    with BedrockUpstream.in_thread() as up:
        ...

Benchmarks::

    python -m tests.support.bedrock_upstream --port 9200 --chunk-delay-ms 5

It serves the three routes Tollgate uses:

* ``POST /model/{modelId}/converse``: JSON;
* ``POST /model/{modelId}/converse-stream``: ``application/vnd.amazon.eventstream``, binary
  event-stream frames (prelude, headers, payload, CRC32s) written one by one;
* ``POST /model/{modelId}/invoke``: Titan Text Embeddings (``amazon.titan-embed*``), Cohere Embed
  (``cohere.embed*``) and Nova Canvas / Titan Image Generator (``amazon.nova-canvas*``,
  ``amazon.titan-image*``, answering with real PNGs).

Every request must be SigV4-signed (an ``Authorization: AWS4-HMAC-SHA256 Credential=...`` header;
the signature itself is not verified). Errors are AWS-style: a JSON ``{"message"}`` body and the
``x-amzn-ErrorType`` header, so botocore raises the right ``ClientError``.

Token counts are a pure function of the request and the script, and differ from Tollgate's own
estimator on purpose, so a test can tell provider usage from an estimate:

* ``inputTokens`` = the whitespace-separated words of every text block (system included), plus 5
  per message; cache reads and writes are reported apart, as Bedrock does;
* ``outputTokens`` = the words of the reply and of the reasoning, plus 10 for a tool call;
* Titan ``inputTextTokenCount`` and Cohere's ``x-amzn-bedrock-input-token-count`` = the words of the
  input texts.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import signal
import struct
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from tests.support.loopback import LoopbackServer

__all__ = [
    "AWS_ERRORS",
    "BedrockScript",
    "BedrockUpstream",
    "RecordedRequest",
    "ToolUse",
    "encode_frame",
    "event_frame",
    "exception_frame",
    "input_tokens",
    "tiny_png",
]

MESSAGE_OVERHEAD = 5
TOOL_USE_TOKENS = 10
EVENT_STREAM = "application/vnd.amazon.eventstream"
_dumps = json.JSONEncoder(separators=(",", ":")).encode

#: AWS error code -> (HTTP status, the message Bedrock sends). Statuses are those of Bedrock
#: Runtime's service model; the last three are AWS's generic authentication failures.
AWS_ERRORS: dict[str, tuple[int, str]] = {
    "ThrottlingException": (429, "Too many requests, please wait before trying again."),
    "ServiceQuotaExceededException": (400, "Your request exceeds the service quota for your account."),
    "ValidationException": (400, "Malformed input request, please reformat your input and try again."),
    "AccessDeniedException": (403, "You don't have access to the model with the specified model ID."),
    "ResourceNotFoundException": (404, "The requested resource could not be found."),
    "ModelTimeoutException": (408, "The model timed out while processing the request."),
    "ModelNotReadyException": (429, "The model is not ready to serve inference requests."),
    "ModelErrorException": (424, "The request failed while the model was processing it."),
    "InternalServerException": (500, "The server encountered an internal error."),
    "ServiceUnavailableException": (503, "The service is unavailable. Try again later."),
    "UnrecognizedClientException": (403, "The security token included in the request is invalid."),
    "ExpiredTokenException": (403, "The security token included in the request is expired."),
    "MissingAuthenticationTokenException": (403, "Missing Authentication Token"),
}


# -- The AWS event-stream encoding ---------------------------------------------------------------

_STRING_HEADER = 7  # the header value type of a UTF-8 string (2-byte length, then bytes)


def encode_frame(headers: Mapping[str, str], payload: bytes) -> bytes:
    """One event-stream message: the prelude (total length, headers length, its CRC32), the
    headers, the payload, then the CRC32 of all that precedes it. All integers are big-endian.
    """
    encoded_headers = b"".join(
        struct.pack(">B", len(name_bytes))
        + name_bytes
        + struct.pack(">BH", _STRING_HEADER, len(value_bytes))
        + value_bytes
        for name_bytes, value_bytes in ((name.encode(), value.encode()) for name, value in headers.items())
    )
    total = 12 + len(encoded_headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(encoded_headers))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + encoded_headers + payload
    return message + struct.pack(">I", zlib.crc32(message))


def event_frame(event_type: str, payload: Mapping[str, Any]) -> bytes:
    headers = {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"}
    return encode_frame(headers, _dumps(payload).encode())


def exception_frame(exception_type: str, payload: Mapping[str, Any]) -> bytes:
    headers = {
        ":exception-type": exception_type,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return encode_frame(headers, _dumps(payload).encode())


# -- A real PNG ----------------------------------------------------------------------------------


def tiny_png(width: int = 1, height: int = 1, rgb: tuple[int, int, int] = (255, 96, 0)) -> bytes:
    """A valid, uncompressed-colour PNG of one flat colour."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


# -- The script ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolUse:
    name: str = "get_weather"
    input: Mapping[str, Any] = field(default_factory=lambda: {"city": "Paris", "unit": "celsius"})
    tool_use_id: str = "tooluse_loopback01"


@dataclass(frozen=True)
class BedrockScript:
    """How the fake Bedrock behaves. Replace it whole: ``up.script = BedrockScript(...)``."""

    reply: str = "Hello from the loopback Bedrock."
    #: Reasoning text (``reasoningContent``) sent before the reply, with a signature.
    reasoning: str | None = None
    #: A tool call after the reply; the stop reason becomes ``tool_use`` unless one is given.
    tool_use: ToolUse | None = None
    stop_reason: str | None = None
    #: Seconds before the status line.
    latency: float = 0.0
    #: Seconds between two stream frames.
    chunk_delay: float = 0.0
    #: Fail every request with this AWS error code (see ``AWS_ERRORS``).
    fail: str | None = None
    fail_message: str | None = None
    #: Send this exception event (``modelStreamErrorException``...) after this many frames.
    exception_after: int | None = None
    exception: str = "modelStreamErrorException"
    exception_message: str = "The model stream failed."
    #: Close the connection abruptly after this many frames.
    drop_after: int | None = None
    #: End the HTTP body cleanly after this many frames.
    end_after: int | None = None
    #: Go silent after this many frames, for ``stall_seconds`` (or until the server closes).
    stall_after: int | None = None
    stall_seconds: float = 30.0
    #: No ``usage`` anywhere: no ``metadata`` event in a stream, no ``usage`` in a Converse answer.
    omit_usage: bool = False
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    #: The ``x-amzn-bedrock-input-token-count`` header on InvokeModel answers.
    token_count_headers: bool = True
    #: Titan-style ``"error"`` in an image answer (a content-filter refusal), with no images.
    image_error: str | None = None


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    #: ``converse``, ``converse-stream`` or ``invoke``.
    operation: str
    model_id: str
    headers: Mapping[str, str]  # case-insensitive
    json: Any
    #: The region of the SigV4 credential scope.
    region: str | None
    access_key_id: str | None
    #: The client's source port: equal ports on two requests mean a reused connection.
    client_port: int | None = None


def _words(text: str) -> list[str]:
    words = text.split(" ")
    return [word if position == 0 else f" {word}" for position, word in enumerate(words)]


def _block_text(blocks: Any) -> str:
    if not isinstance(blocks, list):
        return ""
    texts = []
    for block in blocks:
        if isinstance(block, dict):
            if isinstance(block.get("text"), str):
                texts.append(block["text"])
            result = block.get("toolResult")
            if isinstance(result, dict):
                texts.append(_block_text(result.get("content")))
    return " ".join(texts)


def input_tokens(body: Mapping[str, Any]) -> int:
    """The fake Bedrock's input count for a Converse body: words + 5 per message."""
    messages = body.get("messages") or []
    words = len(_block_text(body.get("system")).split())
    return words + sum(len(_block_text(m.get("content")).split()) + MESSAGE_OVERHEAD for m in messages)


def _credential(authorization: str) -> tuple[str, str] | None:
    """The access key id and region of a SigV4 ``Authorization`` header, if it is one."""
    if not authorization.startswith("AWS4-HMAC-SHA256 "):
        return None
    fields = dict(
        part.strip().split("=", 1) for part in authorization.removeprefix("AWS4-HMAC-SHA256 ").split(",")
    )
    scope = fields.get("Credential", "").split("/")
    if len(scope) != 5 or scope[3] != "bedrock" or scope[4] != "aws4_request" or not fields.get("Signature"):
        return None
    return scope[0], scope[2]


class BedrockUpstream(LoopbackServer):
    """The fake Bedrock. ``access_key_id=None`` accepts any SigV4-signed caller."""

    thread_name = "bedrock-upstream"
    client_max_size = 32 * 1024 * 1024

    def __init__(
        self,
        *,
        access_key_id: str | None = None,
        script: BedrockScript | None = None,
        port: int = 0,
        record: bool = True,
    ) -> None:
        super().__init__(port=port)
        self.access_key_id = access_key_id
        self.record = record
        self.script = script or BedrockScript()
        self.requests: list[RecordedRequest] = []
        #: Streams whose client went away before the last frame was written.
        self.abandoned_streams = 0

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/model/{model_id}/converse", self._converse)
        app.router.add_post("/model/{model_id}/converse-stream", self._converse_stream)
        app.router.add_post("/model/{model_id}/invoke", self._invoke)

    # -- admission -----------------------------------------------------------------------------

    async def _admit(self, request: web.Request, operation: str) -> tuple[dict[str, Any], str] | web.Response:
        """Records the request, then refuses it as Bedrock would (or as scripted), or returns its
        JSON body and model id.
        """
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        model_id = request.match_info["model_id"]
        credential = _credential(request.headers.get("Authorization", ""))
        if self.record:
            peer = request.transport.get_extra_info("peername") if request.transport else None
            self.requests.append(
                RecordedRequest(
                    request.method,
                    request.path,
                    operation,
                    model_id,
                    CIMultiDict(request.headers),
                    body,
                    credential[1] if credential else None,
                    credential[0] if credential else None,
                    peer[1] if peer else None,
                )
            )
        script = self.script
        if script.latency:
            await self._pause(script.latency)
        if credential is None or "X-Amz-Date" not in request.headers:
            return self.error("MissingAuthenticationTokenException")
        if self.access_key_id is not None and credential[0] != self.access_key_id:
            return self.error("UnrecognizedClientException")
        if script.fail is not None:
            return self.error(script.fail, script.fail_message)
        if not isinstance(body, dict):
            return self.error(
                "ValidationException", "Malformed input request: the body is not a JSON object."
            )
        return body, model_id

    @staticmethod
    def error(code: str, message: str | None = None) -> web.Response:
        """An AWS-style error: the status of ``code``, ``x-amzn-ErrorType`` and ``{"message"}``."""
        status, default = AWS_ERRORS.get(code, (500, "An error occurred."))
        headers = {
            "x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/com.amazon.bedrock/",
            "x-amzn-RequestId": str(uuid.uuid4()),
        }
        return web.json_response({"message": message or default}, status=status, headers=headers)

    # -- Converse ------------------------------------------------------------------------------

    def _check_converse(self, body: dict[str, Any]) -> web.Response | None:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return self.error("ValidationException", "The messages field is required.")
        previous = None
        for message in messages:
            role = message.get("role") if isinstance(message, dict) else None
            if role not in ("user", "assistant") or not message.get("content"):
                return self.error("ValidationException", "Each message needs a role and content.")
            if role == previous:
                return self.error(
                    "ValidationException",
                    "A conversation must alternate between user and assistant roles.",
                )
            previous = role
        if messages[0]["role"] != "user":
            return self.error("ValidationException", "A conversation must start with a user message.")
        return None

    def _usage(self, body: Mapping[str, Any]) -> dict[str, int]:
        script = self.script
        output = len(script.reply.split()) + (len(script.reasoning.split()) if script.reasoning else 0)
        output += TOOL_USE_TOKENS if script.tool_use else 0
        prompt = input_tokens(body)
        usage = {"inputTokens": prompt, "outputTokens": output}
        usage["totalTokens"] = prompt + output + script.cache_read_tokens + script.cache_write_tokens
        if script.cache_read_tokens or script.cache_write_tokens:
            usage["cacheReadInputTokens"] = script.cache_read_tokens
            usage["cacheWriteInputTokens"] = script.cache_write_tokens
        return usage

    def _stop_reason(self) -> str:
        script = self.script
        return script.stop_reason or ("tool_use" if script.tool_use else "end_turn")

    async def _converse(self, request: web.Request) -> web.Response:
        admitted = await self._admit(request, "converse")
        if isinstance(admitted, web.Response):
            return admitted
        body, _ = admitted
        if (refused := self._check_converse(body)) is not None:
            return refused
        script = self.script
        content: list[dict[str, Any]] = []
        if script.reasoning:
            content.append(
                {"reasoningContent": {"reasoningText": {"text": script.reasoning, "signature": "c2ln"}}}
            )
        if script.reply:
            content.append({"text": script.reply})
        if script.tool_use:
            tool = script.tool_use
            content.append(
                {"toolUse": {"toolUseId": tool.tool_use_id, "name": tool.name, "input": dict(tool.input)}}
            )
        answer: dict[str, Any] = {
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": self._stop_reason(),
            "metrics": {"latencyMs": 42},
        }
        if not script.omit_usage:
            answer["usage"] = self._usage(body)
        return web.Response(
            body=_dumps(answer).encode(),
            content_type="application/json",
            headers={"x-amzn-RequestId": "req-loopback-0001"},
        )

    def stream_frames(self, body: Mapping[str, Any]) -> list[bytes]:
        """The frames of one ConverseStream answer, in order, as Bedrock sends them."""
        script = self.script
        padding = {"p": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123"}  # as Bedrock pads events
        frames = [event_frame("messageStart", {"role": "assistant", **padding})]
        index = 0
        if script.reasoning:
            for word in _words(script.reasoning):
                delta = {"reasoningContent": {"text": word}}
                frames.append(
                    event_frame("contentBlockDelta", {"contentBlockIndex": index, "delta": delta, **padding})
                )
            delta = {"reasoningContent": {"signature": "c2ln"}}
            frames.append(event_frame("contentBlockDelta", {"contentBlockIndex": index, "delta": delta}))
            frames.append(event_frame("contentBlockStop", {"contentBlockIndex": index}))
            index += 1
        if script.reply:
            for word in _words(script.reply):
                frames.append(
                    event_frame(
                        "contentBlockDelta", {"contentBlockIndex": index, "delta": {"text": word}, **padding}
                    )
                )
            frames.append(event_frame("contentBlockStop", {"contentBlockIndex": index}))
            index += 1
        if script.tool_use:
            tool = script.tool_use
            start = {"toolUse": {"toolUseId": tool.tool_use_id, "name": tool.name}}
            frames.append(event_frame("contentBlockStart", {"contentBlockIndex": index, "start": start}))
            arguments = _dumps(dict(tool.input))
            half = len(arguments) // 2
            for part in (arguments[:half], arguments[half:]):
                delta = {"toolUse": {"input": part}}
                frames.append(event_frame("contentBlockDelta", {"contentBlockIndex": index, "delta": delta}))
            frames.append(event_frame("contentBlockStop", {"contentBlockIndex": index}))
        frames.append(event_frame("messageStop", {"stopReason": self._stop_reason(), **padding}))
        if not script.omit_usage:
            frames.append(event_frame("metadata", {"usage": self._usage(body), "metrics": {"latencyMs": 42}}))
        return frames

    async def _converse_stream(self, request: web.Request) -> web.StreamResponse:
        admitted = await self._admit(request, "converse-stream")
        if isinstance(admitted, web.Response):
            return admitted
        body, _ = admitted
        if (refused := self._check_converse(body)) is not None:
            return refused
        script = self.script
        frames = self.stream_frames(body)
        response = web.StreamResponse(
            headers={"Content-Type": EVENT_STREAM, "x-amzn-RequestId": "req-loopback-0002"}
        )
        await response.prepare(request)
        try:
            for sent, frame in enumerate(frames):
                if script.drop_after is not None and sent >= script.drop_after:
                    assert request.transport is not None
                    request.transport.close()  # flushes what was written, then closes mid-body
                    return response
                if script.end_after is not None and sent >= script.end_after:
                    break
                if script.exception_after is not None and sent >= script.exception_after:
                    payload: dict[str, Any] = {"message": script.exception_message}
                    if script.exception == "modelStreamErrorException":
                        payload |= {"originalStatusCode": 500, "originalMessage": "model failure"}
                    await response.write(exception_frame(script.exception, payload))
                    break
                if script.stall_after is not None and sent >= script.stall_after:
                    await self._pause(script.stall_seconds)
                if script.chunk_delay and sent:
                    await self._pause(script.chunk_delay)
                await response.write(frame)
            await response.write_eof()
        except ConnectionError:
            self.abandoned_streams += 1  # the client went away
        return response

    # -- InvokeModel ---------------------------------------------------------------------------

    async def _invoke(self, request: web.Request) -> web.Response:
        admitted = await self._admit(request, "invoke")
        if isinstance(admitted, web.Response):
            return admitted
        body, model_id = admitted
        family = model_id.split("/")[-1]
        family = family if family.startswith(("amazon.", "cohere.")) else family.partition(".")[2]
        if family.startswith("amazon.titan-embed"):
            return self._titan_embedding(body)
        if family.startswith("cohere.embed"):
            return self._cohere_embeddings(body)
        if family.startswith(("amazon.nova-canvas", "amazon.titan-image")):
            return self._images(body)
        return self.error("ValidationException", "The provided model identifier is invalid.")

    @staticmethod
    def vector(text: str, dimensions: int) -> list[float]:
        seed = zlib.crc32(text.encode())
        return [((seed >> (i % 32)) & 0xFF) / 255 for i in range(dimensions)]

    def _json(self, answer: Mapping[str, Any], tokens: int | None = None) -> web.Response:
        headers = {"x-amzn-RequestId": str(uuid.uuid4())}
        if tokens is not None and self.script.token_count_headers:
            headers["X-Amzn-Bedrock-Input-Token-Count"] = str(tokens)
        return web.Response(body=_dumps(answer).encode(), content_type="application/json", headers=headers)

    def _titan_embedding(self, body: dict[str, Any]) -> web.Response:
        text = body.get("inputText")
        if not isinstance(text, str) or not text:
            return self.error(
                "ValidationException", "Malformed input request: #: required key [inputText] not found"
            )
        dimensions = body.get("dimensions", 1024)
        if dimensions not in (256, 512, 1024):
            return self.error(
                "ValidationException", f"Malformed input request: dimensions {dimensions} is not valid"
            )
        tokens = len(text.split())
        answer = {"embedding": self.vector(text, dimensions), "inputTextTokenCount": tokens}
        return self._json(answer, tokens)

    def _cohere_embeddings(self, body: dict[str, Any]) -> web.Response:
        texts = body.get("texts")
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            return self.error(
                "ValidationException", "Malformed input request: #: required key [texts] not found"
            )
        if len(texts) > 96:
            return self.error("ValidationException", "Malformed input request: texts: expected maxItems: 96")
        if body.get("input_type") not in ("search_document", "search_query", "classification", "clustering"):
            return self.error("ValidationException", "Malformed input request: input_type is not valid")
        vectors = [self.vector(text, 8) for text in texts]
        types = body.get("embedding_types")
        embeddings: Any = {"float": vectors} if types else vectors
        answer = {
            "id": str(uuid.uuid4()),
            "embeddings": embeddings,
            "response_type": "embeddings_by_type" if types else "embeddings_floats",
            "texts": texts,
        }
        return self._json(answer, sum(len(text.split()) for text in texts))

    def _images(self, body: dict[str, Any]) -> web.Response:
        params = body.get("textToImageParams")
        config = body.get("imageGenerationConfig") or {}
        if body.get("taskType") != "TEXT_IMAGE" or not isinstance(params, dict) or not params.get("text"):
            return self.error(
                "ValidationException", "Malformed input request: textToImageParams.text is required"
            )
        count = config.get("numberOfImages", 1)
        width, height = config.get("width", 1024), config.get("height", 1024)
        if not isinstance(count, int) or not 1 <= count <= 5:
            return self.error("ValidationException", "numberOfImages must be between 1 and 5")
        if not all(isinstance(side, int) and 320 <= side <= 4096 for side in (width, height)):
            return self.error("ValidationException", "width and height must be between 320 and 4096")
        if self.script.image_error:
            return self._json({"images": [], "error": self.script.image_error})
        # A real PNG of the asked size would be large; a tiny one per image keeps tests fast.
        images = [base64.b64encode(tiny_png(2, 2, (i * 40 % 256, 96, 0))).decode() for i in range(count)]
        return self._json({"images": images, "error": None})


# -- CLI: a mock Bedrock for benchmarks ----------------------------------------------------------


async def _serve(args: argparse.Namespace) -> None:
    script = BedrockScript(
        latency=args.latency_ms / 1000,
        chunk_delay=args.chunk_delay_ms / 1000,
        **({"reply": args.reply} if args.reply else {}),
    )
    upstream = BedrockUpstream(script=script, port=args.port, record=False)
    await upstream.start()
    print(f"Bedrock Runtime mock on {upstream.endpoint_url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await upstream.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A fake Amazon Bedrock Runtime on 127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 lets the OS pick")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before the first byte")
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0, help="delay between stream frames")
    parser.add_argument("--reply", default=None, help="the reply text")
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
