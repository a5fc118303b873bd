"""The OpenAI-compatible family: OpenAI, DeepSeek, xAI, OpenRouter, Doubao (Ark), Poe, Ollama and
any other server that speaks OpenAI's chat-completions protocol. One adapter; presets differ only
in their defaults.

Translation is pure functions (``build_chat_body``, ``parse_completion``, ``parse_embeddings``,
``parse_images``, ``translate_upstream_error``, ``parse_retry_after``); ``OpenAICompatibleProvider``
adds the transport. Streamed chunks are decoded once with ``json.loads`` and passed on as dicts: no pydantic
per chunk, no re-shaping beyond the public model name and the usage chunk.

Vendor quirks handled here:

* keep-alive and ``: OPENROUTER PROCESSING`` comment lines (the SSE decoder drops comments);
* ``data:`` lines with no space after the colon;
* DeepSeek's ``reasoning_content`` deltas, passed through untouched;
* no usage chunk at all: the adapter estimates usage and marks the chunk it synthesizes;
* usage on every chunk (cumulative), or on the finish chunk together with its choices: the last
  usage wins, and it always comes last, alone, in a ``choices: []`` chunk.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Final

from tollgate.errors import (
    InvalidRequestError,
    RateLimitError,
    TollgateError,
    UpstreamError,
    UpstreamRejectedError,
)
from tollgate.providers.base import (
    USAGE_SOURCE_MARKER,
    Capability,
    ChatResult,
    EmbeddingResult,
    ImageResult,
    Usage,
)
from tollgate.sse import SSEDecoder
from tollgate.tokens import estimate_prompt_tokens, estimate_tokens

if TYPE_CHECKING:
    from pydantic import BaseModel

    from tollgate.providers.http import HttpClient, UpstreamResponse
    from tollgate.providers.presets import Preset
    from tollgate.schemas.openai import ChatChunk, ChatRequest, EmbeddingRequest, ImageRequest

__all__ = [
    "OpenAICompatibleProvider",
    "build_chat_body",
    "build_upstream_body",
    "capabilities_for",
    "estimate_usage",
    "parse_completion",
    "parse_embeddings",
    "parse_images",
    "parse_retry_after",
    "translate_upstream_error",
]

#: Longest upstream error message passed on to the caller.
MESSAGE_LIMIT: Final = 500
#: Most of an error body read from an upstream.
ERROR_BODY_LIMIT: Final = 64 * 1024
#: Longest ``Retry-After`` passed on, in seconds: beyond it a provider is effectively down.
RETRY_AFTER_CAP: Final = 600
#: How long to wait for the end of the HTTP body after ``[DONE]`` so the connection can be reused.
DRAIN_SECONDS: Final = 0.25

_REJECTED_STATUSES: Final = frozenset({400, 404, 409, 413, 422})
_REDACTED: Final = "[redacted]"
# Compact ASCII JSON; one prebuilt encoder (json.dumps with options builds one per call).
_encode_json = json.JSONEncoder(separators=(",", ":")).encode
_loads = json.loads


# -- Translation (pure) ----------------------------------------------------------------------


def build_chat_body(
    request: ChatRequest, upstream_model: str, preset: Preset, *, stream: bool | None = None
) -> dict[str, Any]:
    """The upstream request body: the client's body, extras kept, with the upstream model.

    A streamed request always asks for usage (``stream_options.include_usage``), whatever the
    client asked for; a preset whose upstream rejects ``stream_options`` gets none and its usage
    is estimated. ``stream`` overrides ``request.stream``.
    """
    body = request.model_dump(exclude_none=True)
    body["model"] = upstream_model
    if preset.type != "openrouter":  # OpenRouter passes these on to Anthropic models; others refuse them
        strip_anthropic_hints(body)
    if request.stream if stream is None else stream:
        body["stream"] = True
        if preset.stream_usage_option:
            options = body.get("stream_options") or {}
            options["include_usage"] = True
            body["stream_options"] = options
        else:
            body.pop("stream_options", None)
    else:
        body["stream"] = False
        body.pop("stream_options", None)
    return body


#: Fields an Anthropic client's request carries through Tollgate's OpenAI shape (see ``messages.py``),
#: meaningless to other vendors, and refused by strict OpenAI-compatible upstreams.
ANTHROPIC_BODY_HINTS = ("thinking", "top_k")
ANTHROPIC_MESSAGE_HINTS = ("thinking_blocks", "cache_control")


def strip_anthropic_hints(body: dict[str, Any]) -> None:
    """Removes Anthropic-only hints from an upstream body, in place."""
    for name in ANTHROPIC_BODY_HINTS:
        body.pop(name, None)
    for message in body.get("messages") or ():
        if not isinstance(message, dict):
            continue
        for name in ANTHROPIC_MESSAGE_HINTS:
            message.pop(name, None)
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict):
                    part.pop("cache_control", None)


def capabilities_for(preset: Preset) -> frozenset[Capability]:
    return preset.capabilities


def build_upstream_body(request: BaseModel, upstream_model: str) -> dict[str, Any]:
    """An embeddings or images request body: the client's, extras kept, with the upstream model."""
    body = request.model_dump(exclude_none=True)
    body["model"] = upstream_model
    return body


def estimate_usage(request: ChatRequest, completion_text: str) -> Usage:
    """Usage when the provider gave none: about four characters per token, labelled ``estimated``."""
    return Usage(
        prompt_tokens=estimate_prompt_tokens(request),
        completion_tokens=estimate_tokens(completion_text),
        source="estimated",
    )


def parse_completion(
    body: Any, public_model: str, request: ChatRequest, *, secrets: tuple[str, ...] = ()
) -> ChatResult:
    """A provider's ``chat.completion`` as Tollgate's result, under the public model name.

    Usage comes from the body; when it is missing it is estimated from the request and the output
    text, and written into the completion so the client still sees a ``usage`` object. An
    ``{"error": ...}`` body (some providers send one with a 200) is an ``UpstreamError``.
    """
    if not isinstance(body, dict) or not isinstance(body.get("choices"), list):
        if isinstance(body, dict) and "error" in body:
            raise _reported_error(body["error"], "The provider reported an error", secrets)
        raise UpstreamError("The provider's answer is not a chat completion.")
    usage_body = body.get("usage")
    if isinstance(usage_body, dict) and ("prompt_tokens" in usage_body or "completion_tokens" in usage_body):
        usage = Usage.from_openai(usage_body)
    else:
        usage = estimate_usage(request, _completion_text(body["choices"]))
        body["usage"] = usage.to_openai()
    body["model"] = public_model
    return ChatResult(completion=body, usage=usage)


def parse_embeddings(body: Any, public_model: str, request: EmbeddingRequest) -> EmbeddingResult:
    """A provider's embeddings ``list`` under the public model name, with its usage (estimated
    from the input when the provider gives none).
    """
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        if isinstance(body, dict) and "error" in body:
            raise _reported_error(body["error"], "The provider reported an error")
        raise UpstreamError("The provider's answer is not a list of embeddings.")
    usage_body = body.get("usage")
    if isinstance(usage_body, dict) and "prompt_tokens" in usage_body:
        usage = Usage.from_openai(usage_body)
    else:
        usage = Usage(prompt_tokens=_embedding_input_tokens(request), completion_tokens=0, source="estimated")
        body["usage"] = {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.prompt_tokens}
    body["model"] = public_model
    return EmbeddingResult(body=body, usage=usage)


def parse_images(body: Any) -> ImageResult:
    """A provider's images response; token usage only when the provider reports it (gpt-image)."""
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        if isinstance(body, dict) and "error" in body:
            raise _reported_error(body["error"], "The provider reported an error")
        raise UpstreamError("The provider's answer is not an images response.")
    usage_body = body.get("usage")
    usage = None
    if isinstance(usage_body, dict):
        # Images count tokens as input/output, not prompt/completion.
        usage = Usage(
            prompt_tokens=_tokens(usage_body.get("input_tokens", usage_body.get("prompt_tokens"))),
            completion_tokens=_tokens(usage_body.get("output_tokens", usage_body.get("completion_tokens"))),
        )
    return ImageResult(body=body, images=len(body["data"]), usage=usage)


def _embedding_input_tokens(request: EmbeddingRequest) -> int:
    """Token ids count as themselves; text is estimated."""
    items = [request.input] if isinstance(request.input, str) else request.input
    total = 0
    for item in items:
        if isinstance(item, str):
            total += estimate_tokens(item)
        elif isinstance(item, list):
            total += len(item)
        else:
            total += 1  # one token id
    return total


def _tokens(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def parse_retry_after(value: str | None, *, now: float | None = None) -> int | None:
    """``Retry-After`` (delay seconds or an HTTP date) as whole seconds, capped; None if unusable.

    >>> parse_retry_after("20")
    20
    >>> parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0)
    10
    """
    if not value:
        return None
    value = value.strip()
    seconds = _number(value)
    if seconds is None:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:
            return None
        seconds = moment.timestamp() - (time.time() if now is None else now)
    return _whole_seconds(seconds)


def _number(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if number == number and number not in (float("inf"), float("-inf")) else None


def _whole_seconds(seconds: float) -> int:
    """Rounded up, at least 0 and at most ``RETRY_AFTER_CAP``."""
    return max(0, min(RETRY_AFTER_CAP, math.ceil(seconds)))


def translate_upstream_error(
    status: int,
    body: bytes,
    headers: Mapping[str, str],
    *,
    provider: str,
    secrets: tuple[str, ...] = (),
) -> TollgateError:
    """A provider's non-2xx answer as Tollgate's error.

    The provider's own message is passed on only when the request itself was refused (its 4xx,
    with its status), and only if it is a string; ``secrets`` are redacted from it. A refusal of
    Tollgate's credentials is a gateway failure (502), never the caller's key.
    """
    if 300 <= status < 400:
        return UpstreamError(
            f"The provider '{provider}' answered with a redirect (HTTP {status}); Tollgate does not follow "
            "redirects. Check the provider's base URL.",
            code="upstream_redirect",
        )
    if status in (401, 403):
        return UpstreamError(
            f"The provider rejected Tollgate's credentials for '{provider}'.", code="upstream_auth_failed"
        )
    message, code = _error_fields(body)
    if status == 429:
        if code == "insufficient_quota":
            return UpstreamError(
                f"The provider account for '{provider}' has run out of quota.", code="upstream_quota_exceeded"
            )
        retry_after = parse_retry_after(_header(headers, "Retry-After"))
        if retry_after is None:  # OpenAI also sends the delay in milliseconds
            milliseconds = _number(_header(headers, "retry-after-ms") or "")
            retry_after = None if milliseconds is None else _whole_seconds(milliseconds / 1000)
        return RateLimitError(
            f"The provider '{provider}' is rate limiting requests; retry later.",
            retry_after=retry_after,
            code="upstream_rate_limited",
        )
    if status in _REJECTED_STATUSES:
        if message is None:
            message = f"The provider '{provider}' rejected the request (HTTP {status})."
        return UpstreamRejectedError(redact(message, secrets), status=status, code=code)
    return UpstreamError(f"The provider '{provider}' failed (HTTP {status}).")


def _error_fields(body: bytes) -> tuple[str | None, str | None]:
    """The message and code of an upstream error body, each only if it is a usable string."""
    try:
        parsed = _loads(body)
    except (ValueError, UnicodeDecodeError):
        return None, None
    if not isinstance(parsed, dict):
        return None, None
    error = parsed.get("error", parsed)
    if isinstance(error, str):  # Ollama: {"error": "model 'x' not found"}
        return truncate_message(error), None
    if not isinstance(error, dict):
        return None, None
    message = error.get("message")
    code = error.get("code")
    return (
        truncate_message(message) if isinstance(message, str) and message else None,
        code if isinstance(code, str) and 0 < len(code) <= 64 and code.isprintable() else None,
    )


def _reported_error(error: Any, prefix: str, secrets: tuple[str, ...] = ()) -> UpstreamError:
    """An ``{"error": ...}`` payload a provider sent with a 200 or inside a stream."""
    message = error.get("message") if isinstance(error, dict) else error
    if isinstance(message, str) and message:
        return UpstreamError(f"{prefix}: {redact(truncate_message(message), secrets)}")
    return UpstreamError(f"{prefix}.")


def truncate_message(text: str) -> str:
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"


def redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, _REDACTED)
    return text


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    return value if value is not None else headers.get(name.lower())


def _completion_text(choices: list[Any]) -> str:
    """All generated text of a completion's choices (content, reasoning, tool arguments)."""
    texts: list[str] = []
    for choice in choices:
        if isinstance(choice, dict) and isinstance(message := choice.get("message"), dict):
            _collect_text(message, texts)
    return "".join(texts)


def _collect_text(message: dict[str, Any], texts: list[str]) -> None:
    """Appends the generated text of one message or delta to ``texts``."""
    content = message.get("content")
    if isinstance(content, str):
        texts.append(content)
    _collect_other_text(message, texts)


def _collect_other_text(message: dict[str, Any], texts: list[str]) -> None:
    """Appends reasoning and tool-call arguments, the generated text beside ``content``."""
    reasoning = message.get("reasoning_content")
    if isinstance(reasoning, str):
        texts.append(reasoning)
    tool_calls = message.get("tool_calls")
    if isinstance(tool_calls, list):
        for call in tool_calls:
            function = call.get("function") if isinstance(call, dict) else None
            arguments = function.get("arguments") if isinstance(function, dict) else None
            if isinstance(arguments, str):
                texts.append(arguments)


def _scan_choices(choices: list[Any], texts: list[str]) -> bool:
    """Collects a chunk's delta text (for an estimate, should usage never come); whether one of
    its choices finished. Runs once per chunk: a delta holding only ``content`` takes a short path.
    """
    finished = False
    for choice in choices:
        if type(choice) is dict:
            delta = choice.get("delta")
            if delta and type(delta) is dict:
                content = delta.get("content")
                if content and type(content) is str:
                    texts.append(content)
                if content is None or len(delta) > 1:
                    _collect_other_text(delta, texts)
            if choice.get("finish_reason"):
                finished = True
    return finished


# -- Transport -------------------------------------------------------------------------------


class OpenAICompatibleProvider:
    """One configured OpenAI-compatible provider. Holds no per-request state."""

    def __init__(
        self,
        name: str,
        preset: Preset,
        base_url: str,
        api_key: str | None,
        http: HttpClient,
        extra_headers: Mapping[str, str] | None = None,
        *,
        read_timeout: float | None = None,
    ) -> None:
        self._name = name
        self._preset = preset
        self._http = http
        base = base_url.rstrip("/")
        self._chat_url = f"{base}/chat/completions"
        self._embeddings_url = f"{base}/embeddings"
        self._images_url = f"{base}/images/generations"
        self._capabilities = capabilities_for(preset)
        self._secrets: tuple[str, ...] = (api_key,) if api_key else ()
        self._read_timeout = read_timeout
        common = {"Content-Type": "application/json"}
        if api_key:
            common["Authorization"] = f"Bearer {api_key}"
        # Streams ask for no compression: a compressing proxy would hold chunks back to fill blocks.
        self._headers = {**common, "Accept": "application/json", **(extra_headers or {})}
        self._stream_headers = {
            **common,
            "Accept": "text/event-stream",
            "Accept-Encoding": "identity",
            **(extra_headers or {}),
        }

    @property
    def name(self) -> str:
        return self._name

    @property
    def capabilities(self) -> frozenset[Capability]:
        return self._capabilities

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAICompatibleProvider(name={self._name!r}, type={self._preset.type!r})"

    async def chat(self, request: ChatRequest, upstream_model: str) -> ChatResult:
        body = build_chat_body(request, upstream_model, self._preset, stream=False)
        answer = await self._post_json(self._chat_url, body)
        return parse_completion(answer, request.model, request, secrets=self._secrets)

    async def embed(self, request: EmbeddingRequest, upstream_model: str) -> EmbeddingResult:
        self._require(Capability.EMBEDDINGS, "embeddings")
        answer = await self._post_json(self._embeddings_url, build_upstream_body(request, upstream_model))
        return parse_embeddings(answer, request.model, request)

    async def image(self, request: ImageRequest, upstream_model: str) -> ImageResult:
        self._require(Capability.IMAGES, "image generation")
        answer = await self._post_json(self._images_url, build_upstream_body(request, upstream_model))
        return parse_images(answer)

    def _require(self, capability: Capability, what: str) -> None:
        """Refuses, before any call, an endpoint the preset's vendor does not serve (DeepSeek has no
        images, say): a clear 400, as the other adapters give, rather than the vendor's 404."""
        if capability not in self._capabilities:
            raise InvalidRequestError(
                f"The provider '{self._name}' ({self._preset.label}) offers no {what}.",
                param="model",
                code="unsupported_model",
            )

    async def _post_json(self, url: str, body: dict[str, Any]) -> Any:
        """POSTs ``body``; the decoded JSON answer of a 2xx, else the translated error."""
        async with self._http.post(
            url,
            _encode_json(body).encode(),
            headers=self._headers,
            provider=self._name,
            read_timeout=self._read_timeout,
        ) as response:
            if not 200 <= response.status < 300:
                raise await self._error(response)
            raw = await response.read()
        try:
            return _loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise UpstreamError(f"The provider '{self._name}' sent a malformed response.") from None

    async def stream(self, request: ChatRequest, upstream_model: str) -> AsyncIterator[ChatChunk]:
        body = build_chat_body(request, upstream_model, self._preset, stream=True)
        public_model = request.model
        async with self._http.post(
            self._chat_url,
            _encode_json(body).encode(),
            headers=self._stream_headers,
            provider=self._name,
            read_timeout=self._read_timeout,
        ) as response:
            if not 200 <= response.status < 300:
                raise await self._error(response)
            if not response.headers.get("Content-Type", "").startswith("text/event-stream"):
                raise await self._not_a_stream(response)
            content = response.content
            decoder = SSEDecoder()
            done = finished = False
            usage: dict[str, Any] | None = None
            usage_chunk: ChatChunk | None = None  # the last chunk that carried usage
            last: ChatChunk | None = None
            texts: list[str] = []
            while not done:
                raw = await content.readany()
                for event in decoder.feed(raw) if raw else decoder.close():
                    data = event.data
                    if not data:
                        continue
                    if data == "[DONE]":
                        done = True
                        break
                    chunk = self._decode_chunk(data, event.event)
                    chunk_usage = chunk.pop("usage", None)
                    if chunk_usage and isinstance(chunk_usage, dict):
                        usage, usage_chunk = chunk_usage, chunk
                    choices = chunk.get("choices")
                    if choices and isinstance(choices, list):
                        if _scan_choices(choices, texts):
                            finished = True
                        last = chunk
                        chunk["model"] = public_model
                        yield chunk
                    elif chunk_usage is None:
                        # No choices and no usage, such as Azure's prompt-filter preamble: pass it on.
                        chunk["model"] = public_model
                        yield chunk
                    # A chunk with usage and no choices is held back: usage always comes last.
                if not raw:
                    break
            if done:
                await drain_response(response)
        if not done and not finished:
            raise UpstreamError(
                f"The provider '{self._name}' stream ended early.", code="upstream_disconnected"
            )
        yield _usage_chunk(usage, usage_chunk, last, public_model, request, texts)

    def _decode_chunk(self, data: str, event: str) -> ChatChunk:
        try:
            chunk = _loads(data)
        except ValueError:
            raise UpstreamError(f"The provider '{self._name}' sent a malformed stream event.") from None
        if not isinstance(chunk, dict):
            raise UpstreamError(f"The provider '{self._name}' sent a malformed stream event.")
        if "error" in chunk or event == "error":
            raise _reported_error(
                chunk.get("error", chunk), f"The provider '{self._name}' failed mid-stream", self._secrets
            )
        return chunk

    async def _error(self, response: UpstreamResponse) -> TollgateError:
        body = await read_capped(response, ERROR_BODY_LIMIT)
        return translate_upstream_error(
            response.status, body, response.headers, provider=self._name, secrets=self._secrets
        )

    async def _not_a_stream(self, response: UpstreamResponse) -> TollgateError:
        body = await read_capped(response, ERROR_BODY_LIMIT)
        try:
            parsed = _loads(body)
        except (ValueError, UnicodeDecodeError):
            parsed = None
        if isinstance(parsed, dict) and "error" in parsed:
            prefix = f"The provider '{self._name}' reported an error"
            return _reported_error(parsed["error"], prefix, self._secrets)
        return UpstreamError(f"The provider '{self._name}' did not answer with an event stream.")


def _usage_chunk(
    usage: dict[str, Any] | None,
    usage_chunk: ChatChunk | None,
    last: ChatChunk | None,
    public_model: str,
    request: ChatRequest,
    texts: list[str],
) -> ChatChunk:
    """The stream's final ``choices: []`` chunk with its usage (the provider's, or estimated)."""
    if usage is not None and usage_chunk is not None:
        if not usage_chunk.get("choices"):
            # The provider's own usage chunk: sent on whole, extras (such as cost) included.
            usage_chunk["usage"] = usage
            usage_chunk["model"] = public_model
            return usage_chunk
        final = _chunk_frame(usage_chunk, public_model)
        final["usage"] = usage
        return final
    final = _chunk_frame(last, public_model)
    final["usage"] = estimate_usage(request, "".join(texts)).to_openai()
    final[USAGE_SOURCE_MARKER] = "estimated"
    return final


def _chunk_frame(source: ChatChunk | None, public_model: str) -> ChatChunk:
    """An empty ``chat.completion.chunk`` in the same completion as ``source``."""
    source = source or {}
    frame: ChatChunk = {
        "id": source.get("id") or f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion.chunk",
        "created": source.get("created") or int(time.time()),
        "model": public_model,
        "choices": [],
    }
    if "system_fingerprint" in source:
        frame["system_fingerprint"] = source["system_fingerprint"]
    return frame


async def read_capped(response: UpstreamResponse, limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    while size < limit:
        part = await response.content.read(limit - size)
        if not part:
            break
        parts.append(part)
        size += len(part)
    return b"".join(parts)


async def drain_response(response: UpstreamResponse) -> None:
    """Reads what follows ``[DONE]`` (usually just the end of the chunked body) so the connection
    goes back to the pool; gives up quickly on a provider that keeps it open.
    """
    content = response.content
    if content.is_eof():
        return
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            while await content.readany():
                pass
    except (TimeoutError, OSError):  # http1.TransportError is an OSError
        response.close()
