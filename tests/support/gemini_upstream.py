"""A fake Google Gemini API: a real HTTP server on 127.0.0.1 speaking the Generative Language API
(``v1beta``), strict like the real one, and scriptable per test.

Async tests::

    async with GeminiUpstream(api_key="AIza-test") as up:
        up.script = GeminiScript(thoughts="Let me think.", chunk_delay=0.01)
        ...  # call up.base_url ("http://127.0.0.1:<port>", the API root, like the real one)
        assert up.requests[0].path == "/v1beta/models/gemini-x:streamGenerateContent"

Sync tests, or another process's client::

    with GeminiUpstream.in_thread(api_key="AIza-test") as up:
        ...

It serves ``POST /v1beta/models/{model}:{method}`` for ``generateContent``,
``streamGenerateContent`` (``?alt=sse`` as events, otherwise one JSON array), ``embedContent``,
``batchEmbedContents`` and Imagen's ``predict``. Which methods a model has comes from its name,
as with the real models: ``*embedding*`` embeds, ``imagen*`` predicts, everything else generates
(``*-image`` models can answer with images). A model outside ``models`` is a 404.

Like the real API it wants the key in ``x-goog-api-key`` (a wrong key is a 400
``API_KEY_INVALID``, none a 403), refuses unknown fields (``additionalProperties`` in a schema,
snake_case names...), empty text parts, roles other than ``user``/``model`` and a tool-result
turn that does not answer every function call of the turn before it.

Token counts are a pure function of the request and the script, and differ from Tollgate's own
estimator on purpose, so a test can tell provider usage from an estimate:

* ``promptTokenCount`` = for each content (and the system instruction): 3 + its words, + 258 per
  image or file part, + 10 per function call or response part;
* ``candidatesTokenCount`` = (the reply's words + 8 per function call) x ``candidateCount``;
* ``thoughtsTokenCount`` = the thoughts' words x ``candidateCount``;
* ``cachedContentTokenCount`` = ``GeminiScript.cached_tokens`` (at most the prompt).

Every stream event carries ``usageMetadata`` with the counts so far; only the last is complete.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from tests.support.loopback import LoopbackServer

__all__ = ["DEFAULT_MODELS", "GeminiScript", "GeminiUpstream", "RecordedRequest", "png"]

DEFAULT_MODELS = frozenset(
    {
        "gemini-x",
        "gemini-2.5-flash",
        "gemini-x-image",
        "gemini-embedding-001",
        "imagen-x",
        "imagen-4.0-generate-001",
    }
)
CONTENT_OVERHEAD = 3
MEDIA_TOKENS = 258
FUNCTION_PART_TOKENS = 10
FUNCTION_CALL_TOKENS = 8
IMAGE_TOKENS = 1290
DEFAULT_DIMENSIONS = 8
_dumps = json.JSONEncoder(separators=(",", ":")).encode

_REQUEST_FIELDS = {
    "generateContent": {
        "contents",
        "systemInstruction",
        "tools",
        "toolConfig",
        "generationConfig",
        "safetySettings",
        "cachedContent",
        "model",
    },
    "embedContent": {"model", "content", "taskType", "title", "outputDimensionality"},
    "batchEmbedContents": {"requests"},
    "predict": {"instances", "parameters"},
}
_GENERATION_FIELDS = {
    "stopSequences",
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
    "responseModalities",
    "candidateCount",
    "maxOutputTokens",
    "temperature",
    "topP",
    "topK",
    "seed",
    "presencePenalty",
    "frequencyPenalty",
    "responseLogprobs",
    "logprobs",
    "thinkingConfig",
    "imageConfig",
    "mediaResolution",
    "speechConfig",
}
_PART_DATA = {"text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode"}
_PART_FIELDS = _PART_DATA | {"thought", "thoughtSignature", "videoMetadata"}
_SCHEMA_FIELDS = {
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "items",
    "properties",
    "required",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "pattern",
    "minimum",
    "maximum",
    "minProperties",
    "maxProperties",
    "anyOf",
    "propertyOrdering",
    "default",
    "example",
}
_SCHEMA_TYPES = {"string", "number", "integer", "boolean", "array", "object", "null"}
_IMAGEN_PARAMETERS = {
    "sampleCount",
    "aspectRatio",
    "personGeneration",
    "includeRaiReason",
    "outputOptions",
    "sampleImageSize",
    "negativePrompt",
    "enhancePrompt",
    "addWatermark",
    "safetySetting",
}
_ASPECT_RATIOS = {"1:1", "3:4", "4:3", "9:16", "16:9"}
_IMAGE_ASPECT_RATIOS = _ASPECT_RATIOS | {"2:3", "3:2", "4:5", "5:4", "21:9"}
_FUNCTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,127}")

_STATUS_ERRORS: dict[int, tuple[str, str]] = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    403: ("PERMISSION_DENIED", "The caller does not have permission"),
    404: ("NOT_FOUND", "Requested entity was not found."),
    429: (
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota, please check your plan and billing details.",
    ),
    500: ("INTERNAL", "An internal error has occurred. Please retry or report it."),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
}
#: The ``retryDelay`` a scripted 429 carries in its ``RetryInfo`` detail, as the real API does.
RETRY_DELAY = "21s"


@dataclass(frozen=True)
class GeminiScript:
    """How the fake API behaves. Replace it whole: ``up.script = GeminiScript(...)``."""

    reply: str = "Hello from the Gemini loopback."
    #: Thought-summary text (``thought: true`` parts) sent before the reply.
    thoughts: str | None = None
    #: Function calls the model makes, as (name, args), when the request offers tools, allows
    #: calling them and does not already end with their results.
    function_calls: tuple[tuple[str, Mapping[str, Any]], ...] = ()
    #: A ``thoughtSignature`` put on the first function call part.
    thought_signature: str | None = None
    #: Give each function call an ``id`` (newer models do).
    function_call_ids: bool = False
    finish_reason: str = "STOP"
    cached_tokens: int = 0
    #: Block the prompt: no candidates, ``promptFeedback.blockReason`` set to this.
    block_reason: str | None = None
    #: Imagen filters every image (with ``raiFilteredReason`` when asked for).
    filter_images: bool = False
    #: Never send ``usageMetadata``.
    omit_usage: bool = False
    #: Seconds before the first byte (the status line).
    latency: float = 0.0
    #: Seconds between two stream events.
    chunk_delay: float = 0.0
    #: Fail with this status and Gemini's error body (``fail_body`` overrides the body).
    fail_status: int | None = None
    fail_body: Mapping[str, Any] | None = None
    fail_headers: Mapping[str, str] = field(default_factory=dict)
    #: Close the connection abruptly after this many events.
    drop_after: int | None = None
    #: Go silent after this many events, for ``stall_seconds`` (or until the server closes).
    stall_after: int | None = None
    stall_seconds: float = 30.0
    #: End the stream cleanly (a complete HTTP body) after this many events, before any finishReason.
    end_after: int | None = None
    #: Send an error object as an event after this many events, then end.
    error_after: int | None = None


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]  # case-insensitive
    json: Any
    #: The client's source port: equal ports on two requests mean a reused connection.
    client_port: int | None = None


class _Rejected(Exception):
    """A request the real API would refuse: becomes Gemini's error body."""

    def __init__(self, status: int, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details


def _unknown(name: str, where: str) -> _Rejected:
    at = f" at '{where}'" if where else ""
    return _Rejected(400, f'Invalid JSON payload received. Unknown name "{name}"{at}: Cannot find field.')


def _check_fields(value: Any, allowed: set[str], where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Rejected(400, f"Invalid value at '{where}': expected an object.")
    for name in value:
        if name not in allowed:
            raise _unknown(name, where)
    return value


def _words(text: str) -> int:
    return len(text.split())


def png(width: int, height: int, seed: str) -> bytes:
    """A valid ``width`` x ``height`` RGB PNG of one colour derived from ``seed``."""
    red, green, blue = zlib.crc32(seed.encode()).to_bytes(4, "big")[:3]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = (b"\x00" + bytes([red, green, blue]) * width) * height
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _ratio_png(ratio: str | None, seed: str) -> str:
    width, _, height = (ratio or "1:1").partition(":")
    return base64.b64encode(png(int(width), int(height), seed)).decode()


def _error_body(status: int, message: str, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    code = _STATUS_ERRORS.get(status, ("UNKNOWN", ""))[0]
    error: dict[str, Any] = {"code": status, "message": message, "status": code}
    if details:
        error["details"] = details
    return {"error": error}


class GeminiUpstream(LoopbackServer):
    """The fake API. ``api_key=None`` accepts any caller."""

    thread_name = "gemini-upstream"
    client_max_size = 32 * 1024 * 1024

    def __init__(
        self,
        *,
        api_key: str | None = "AIza-upstream-test",
        script: GeminiScript | None = None,
        models: frozenset[str] = DEFAULT_MODELS,
        port: int = 0,
    ) -> None:
        super().__init__(port=port)
        self.api_key = api_key
        self.models = models
        self.script = script or GeminiScript()
        self.requests: list[RecordedRequest] = []
        self._served = 0

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The API root, as Tollgate's ``base_url`` for a Gemini provider (``/v1beta`` is added)."""
        return f"http://127.0.0.1:{self.port}"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1beta/models/{target}", self._handle)

    # -- dispatch ----------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.requests.append(
            RecordedRequest(
                request.method,
                request.path,
                dict(request.query),
                CIMultiDict(request.headers),
                body,
                peer[1] if peer else None,
            )
        )
        script = self.script
        if script.latency:
            await self._pause(script.latency)
        try:
            self._check_key(request)
            model, method = self._route(request.match_info["target"])
            if not isinstance(body, dict):
                raise _Rejected(400, "Invalid JSON payload received. Unexpected token.")
            if script.fail_status is not None:
                return self._scripted_failure(script)
            _check_fields(body, _REQUEST_FIELDS[_family(method)], "")
            if method in ("generateContent", "streamGenerateContent"):
                config = self._check_generate(body)
                if method == "generateContent":
                    return web.json_response(self._generate(body, config, model))
                if request.query.get("alt") == "sse":
                    return await self._stream(request, body, config, model)
                return web.json_response([event for event, _ in self._events(body, config, model)])
            if method == "embedContent":
                return web.json_response({"embedding": self._embed(body, model, "")})
            if method == "batchEmbedContents":
                return web.json_response(self._batch_embed(body, model))
            return web.json_response(self._predict(body))
        except _Rejected as rejected:
            return web.json_response(
                _error_body(rejected.status, rejected.message, rejected.details), status=rejected.status
            )

    def _check_key(self, request: web.Request) -> None:
        if self.api_key is None:
            return
        given = request.headers.get("x-goog-api-key") or request.query.get("key")
        if given == self.api_key:
            return
        if not given:
            raise _Rejected(
                403,
                "Method doesn't allow unregistered callers (callers without established identity). "
                "Please use API Key or other form of API consumer identity to call this API.",
            )
        raise _Rejected(
            400,
            "API key not valid. Please pass a valid API key.",
            [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"},
                }
            ],
        )

    def _route(self, target: str) -> tuple[str, str]:
        model, colon, method = target.rpartition(":")
        if not colon or _family(method) not in _REQUEST_FIELDS:
            raise _Rejected(404, "Requested entity was not found.")
        if model not in self.models or method not in _methods(model):
            raise _Rejected(
                404,
                f"models/{model} is not found for API version v1beta, or is not supported for {method}. "
                "Call ListModels to see the list of available models and their supported methods.",
            )
        return model, method

    def _scripted_failure(self, script: GeminiScript) -> web.Response:
        status = script.fail_status or 500
        if script.fail_body is not None:
            return web.json_response(dict(script.fail_body), status=status, headers=script.fail_headers)
        if 300 <= status < 400:
            headers = {"Location": "http://127.0.0.1:1/elsewhere", **script.fail_headers}
            return web.Response(status=status, headers=headers)
        details = None
        if status == 429:
            details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": RETRY_DELAY}]
        message = _STATUS_ERRORS.get(status, ("UNKNOWN", "Upstream failure."))[1]
        return web.json_response(
            _error_body(status, message, details), status=status, headers=script.fail_headers
        )

    # -- generateContent ---------------------------------------------------------------------

    def _check_generate(self, body: dict[str, Any]) -> dict[str, Any]:
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            raise _Rejected(400, "* GenerateContentRequest.contents: contents is not specified\n")
        calls_before = 0
        for index, content in enumerate(contents):
            where = f"contents[{index}]"
            _check_fields(content, {"role", "parts"}, where)
            role = content.get("role", "user")
            if role not in ("user", "model"):
                raise _Rejected(400, "Please use a valid role: user, model.")
            parts = content.get("parts")
            if not isinstance(parts, list) or not parts:
                raise _Rejected(
                    400, f"* GenerateContentRequest.{where}.parts: contents.parts must not be empty.\n"
                )
            for number, part in enumerate(parts):
                self._check_part(part, f"{where}.parts[{number}]")
            responses = sum(1 for part in parts if "functionResponse" in part)
            if responses and responses != calls_before:
                raise _Rejected(
                    400,
                    "Please ensure that the number of function response parts is equal to the number of "
                    "function call parts of the function call turn.",
                )
            calls_before = sum(1 for part in parts if "functionCall" in part) if role == "model" else 0
        system = body.get("systemInstruction")
        if system is not None:
            _check_fields(system, {"role", "parts"}, "system_instruction")
            for number, part in enumerate(system.get("parts") or ()):
                _check_fields(part, {"text"}, f"system_instruction.parts[{number}]")
        for index, tool in enumerate(body.get("tools") or ()):
            _check_fields(tool, {"functionDeclarations", "googleSearch", "codeExecution"}, f"tools[{index}]")
            for number, declaration in enumerate(tool.get("functionDeclarations") or ()):
                where = f"tools[{index}].function_declarations[{number}]"
                _check_fields(
                    declaration, {"name", "description", "parameters", "behavior", "response"}, where
                )
                if not _FUNCTION_NAME.fullmatch(str(declaration.get("name", ""))):
                    raise _Rejected(400, f"* GenerateContentRequest.{where}.name: Invalid function name.\n")
                if "parameters" in declaration:
                    self._check_schema(declaration["parameters"], f"{where}.parameters")
        tool_config = body.get("toolConfig")
        if tool_config is not None:
            _check_fields(tool_config, {"functionCallingConfig"}, "tool_config")
            calling = _check_fields(
                tool_config.get("functionCallingConfig", {}),
                {"mode", "allowedFunctionNames"},
                "tool_config.function_calling_config",
            )
            if calling.get("mode", "AUTO") not in ("AUTO", "ANY", "NONE", "VALIDATED"):
                raise _Rejected(400, "Invalid value at 'tool_config.function_calling_config.mode'.")
            if "allowedFunctionNames" in calling and calling.get("mode") != "ANY":
                raise _Rejected(400, "allowed_function_names may only be set when mode is ANY.")
        config = _check_fields(body.get("generationConfig", {}), _GENERATION_FIELDS, "generation_config")
        if "responseSchema" in config:
            if config.get("responseMimeType") != "application/json":
                raise _Rejected(400, "response_schema needs response_mime_type application/json.")
            self._check_schema(config["responseSchema"], "generation_config.response_schema")
        count = config.get("candidateCount", 1)
        if not isinstance(count, int) or not 1 <= count <= 8:
            raise _Rejected(400, "candidate_count must be between 1 and 8.")
        if len(config.get("stopSequences") or ()) > 5:
            raise _Rejected(400, "stop_sequences may hold at most 5 sequences.")
        thinking = config.get("thinkingConfig")
        if thinking is not None:
            _check_fields(thinking, {"thinkingBudget", "includeThoughts", "thinkingLevel"}, "thinking_config")
        return config

    def _check_part(self, part: Any, where: str) -> None:
        _check_fields(part, _PART_FIELDS, where)
        data = _PART_DATA.intersection(part)
        if len(data) != 1:
            raise _Rejected(
                400,
                f"* GenerateContentRequest.{where}.data: required oneof field 'data' must have one initialized field\n",
            )
        if "text" in part and (not isinstance(part["text"], str) or not part["text"]):
            raise _Rejected(
                400,
                "Unable to submit request because it has an empty text parameter. "
                "Add a value to the parameter and try again.",
            )
        if "inlineData" in part:
            inline = _check_fields(part["inlineData"], {"mimeType", "data"}, f"{where}.inline_data")
            try:
                base64.b64decode(str(inline.get("data", "")), validate=True)
            except (binascii.Error, ValueError):
                raise _Rejected(
                    400, f"Invalid value at '{where}.inline_data.data' (TYPE_BYTES), Base64 decoding failed"
                ) from None
            if "/" not in str(inline.get("mimeType", "")):
                raise _Rejected(400, f"* GenerateContentRequest.{where}.inline_data.mime_type: missing\n")
        if "fileData" in part:
            file_data = _check_fields(part["fileData"], {"mimeType", "fileUri"}, f"{where}.file_data")
            if not str(file_data.get("fileUri", "")).startswith(("http://", "https://")):
                raise _Rejected(400, f"* GenerateContentRequest.{where}.file_data.file_uri: invalid\n")
        if "functionCall" in part:
            call = _check_fields(part["functionCall"], {"name", "args", "id"}, f"{where}.function_call")
            if not isinstance(call.get("args", {}), dict) or not call.get("name"):
                raise _Rejected(400, f"Invalid value at '{where}.function_call'.")
        if "functionResponse" in part:
            response = _check_fields(
                part["functionResponse"], {"name", "response", "id"}, f"{where}.function_response"
            )
            if not isinstance(response.get("response"), dict) or not response.get("name"):
                raise _Rejected(400, f"Invalid value at '{where}.function_response'.")

    def _check_schema(self, schema: Any, where: str) -> None:
        _check_fields(schema, _SCHEMA_FIELDS, where)
        kind = schema.get("type")
        if kind is not None and (not isinstance(kind, str) or kind.lower() not in _SCHEMA_TYPES):
            raise _Rejected(400, f"Invalid value at '{where}.type': {kind!r}")
        if isinstance(kind, str) and kind.lower() == "object" and not schema.get("properties"):
            raise _Rejected(
                400, f"* GenerateContentRequest.{where}.properties: should be non-empty for OBJECT type\n"
            )
        for name, value in (schema.get("properties") or {}).items():
            self._check_schema(value, f"{where}.properties[{name}].value")
        if "items" in schema:
            self._check_schema(schema["items"], f"{where}.items")
        for number, option in enumerate(schema.get("anyOf") or ()):
            self._check_schema(option, f"{where}.any_of[{number}]")
        enum = schema.get("enum")
        if enum is not None and not all(isinstance(value, str) for value in enum):
            raise _Rejected(400, f"Invalid value at '{where}.enum': enum values must be strings.")

    def _prompt_tokens(self, body: dict[str, Any]) -> int:
        contents = list(body["contents"])
        if body.get("systemInstruction"):
            contents.append(body["systemInstruction"])
        total = 0
        for content in contents:
            total += CONTENT_OVERHEAD
            for part in content.get("parts") or ():
                if "text" in part:
                    total += _words(part["text"])
                elif "inlineData" in part or "fileData" in part:
                    total += MEDIA_TOKENS
                else:
                    total += FUNCTION_PART_TOKENS
        return total

    def _calls_wanted(self, body: dict[str, Any]) -> bool:
        script = self.script
        mode = ((body.get("toolConfig") or {}).get("functionCallingConfig") or {}).get("mode", "AUTO")
        last = body["contents"][-1].get("parts") or ()
        answered = any("functionResponse" in part for part in last)
        return bool(script.function_calls and body.get("tools") and mode != "NONE" and not answered)

    def _plan(
        self, body: dict[str, Any], config: dict[str, Any], model: str
    ) -> tuple[list[tuple[dict[str, Any], int]], dict[str, Any]]:
        """The answer's parts in stream order, each with its candidate tokens, and the full usage."""
        script = self.script
        count = config.get("candidateCount", 1)
        parts: list[tuple[dict[str, Any], int]] = []
        if script.thoughts and (config.get("thinkingConfig") or {}).get("includeThoughts"):
            parts += [({"text": word, "thought": True}, 0) for word in _spaced(script.thoughts)]
        if self._calls_wanted(body):
            for number, (name, args) in enumerate(script.function_calls):
                call: dict[str, Any] = {"name": name, "args": dict(args)}
                if script.function_call_ids:
                    call["id"] = f"fc-{self._served}-{number}"
                part: dict[str, Any] = {"functionCall": call}
                if script.thought_signature and number == 0:
                    part["thoughtSignature"] = script.thought_signature
                parts.append((part, FUNCTION_CALL_TOKENS))
        elif model.endswith("-image") and "IMAGE" in (config.get("responseModalities") or ()):
            ratio = (config.get("imageConfig") or {}).get("aspectRatio")
            if ratio is not None and ratio not in _IMAGE_ASPECT_RATIOS:
                raise _Rejected(400, f"Unsupported aspect ratio: {ratio}")
            prompt = " ".join(p.get("text", "") for p in body["contents"][-1]["parts"])
            parts.append(({"text": "Here is your image."}, 4))
            parts.append(
                ({"inlineData": {"mimeType": "image/png", "data": _ratio_png(ratio, prompt)}}, IMAGE_TOKENS)
            )
        else:
            parts += [({"text": word}, 1) for word in _spaced(script.reply)]
        prompt_tokens = self._prompt_tokens(body)
        thoughts = _words(script.thoughts or "") * count if any(p.get("thought") for p, _ in parts) else 0
        usage: dict[str, Any] = {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": sum(tokens for _, tokens in parts) * count,
            "totalTokenCount": 0,
        }
        if thoughts:
            usage["thoughtsTokenCount"] = thoughts
        if script.cached_tokens:
            usage["cachedContentTokenCount"] = min(script.cached_tokens, prompt_tokens)
        usage["totalTokenCount"] = prompt_tokens + usage["candidatesTokenCount"] + thoughts
        return parts, usage

    def _frame(self, model: str) -> dict[str, Any]:
        self._served += 1
        return {"modelVersion": model, "responseId": f"loopback-{self._served}"}

    def _blocked(self, body: dict[str, Any], model: str) -> dict[str, Any] | None:
        reason = self.script.block_reason
        if reason is None:
            return None
        answer = {
            **self._frame(model),
            "promptFeedback": {
                "blockReason": reason,
                "safetyRatings": [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH"}],
            },
        }
        if not self.script.omit_usage:
            tokens = self._prompt_tokens(body)
            answer["usageMetadata"] = {"promptTokenCount": tokens, "totalTokenCount": tokens}
        return answer

    def _generate(self, body: dict[str, Any], config: dict[str, Any], model: str) -> dict[str, Any]:
        blocked = self._blocked(body, model)
        if blocked is not None:
            return blocked
        parts, usage = self._plan(body, config, model)
        merged: list[dict[str, Any]] = []
        for part, _ in parts:  # the whole answer: consecutive text parts of one kind are one part
            if (
                merged
                and "text" in part
                and "text" in merged[-1]
                and part.get("thought") == merged[-1].get("thought")
            ):
                merged[-1] = {**merged[-1], "text": merged[-1]["text"] + part["text"]}
            else:
                merged.append(dict(part))
        candidates = [
            {
                "content": {"role": "model", "parts": merged},
                "finishReason": self.script.finish_reason,
                "index": index,
            }
            for index in range(config.get("candidateCount", 1))
        ]
        answer = {**self._frame(model), "candidates": candidates}
        if not self.script.omit_usage:
            answer["usageMetadata"] = usage
        return answer

    def _events(
        self, body: dict[str, Any], config: dict[str, Any], model: str
    ) -> list[tuple[dict[str, Any], bool]]:
        """The stream's events, each flagged when it carries the finish reason."""
        blocked = self._blocked(body, model)
        if blocked is not None:
            return [(blocked, True)]
        parts, usage = self._plan(body, config, model)
        frame = self._frame(model)
        count = config.get("candidateCount", 1)
        events: list[tuple[dict[str, Any], bool]] = []
        generated = 0
        for number, (part, tokens) in enumerate(parts):
            last = number == len(parts) - 1
            generated += tokens * count
            candidates = []
            for index in range(count):
                candidate: dict[str, Any] = {"content": {"role": "model", "parts": [part]}, "index": index}
                if last:
                    candidate["finishReason"] = self.script.finish_reason
                candidates.append(candidate)
            event: dict[str, Any] = {**frame, "candidates": candidates}
            if not self.script.omit_usage:
                partial = {
                    "promptTokenCount": usage["promptTokenCount"],
                    "candidatesTokenCount": generated,
                    "totalTokenCount": usage["promptTokenCount"] + generated,
                }
                event["usageMetadata"] = usage if last else partial
            events.append((event, last))
        return events

    async def _stream(
        self, request: web.Request, body: dict[str, Any], config: dict[str, Any], model: str
    ) -> web.StreamResponse:
        script = self.script
        events = self._events(body, config, model)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        try:
            for sent, (event, _) in enumerate(events):
                if script.drop_after is not None and sent >= script.drop_after:
                    assert request.transport is not None
                    request.transport.close()  # flushes what was written, then closes mid-body
                    return response
                if script.end_after is not None and sent >= script.end_after:
                    break
                if script.error_after is not None and sent >= script.error_after:
                    error = _error_body(500, _STATUS_ERRORS[500][1])
                    await response.write(f"data: {_dumps(error)}\r\n\r\n".encode())
                    break
                if script.stall_after is not None and sent >= script.stall_after:
                    await self._pause(script.stall_seconds)
                if script.chunk_delay and sent:
                    await self._pause(script.chunk_delay)
                # The real API ends its lines with \r\n.
                await response.write(f"data: {_dumps(event)}\r\n\r\n".encode())
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away (as it does after its idle timeout)
        return response

    # -- embeddings and images ---------------------------------------------------------------

    def _embed(self, body: dict[str, Any], model: str, where: str) -> dict[str, Any]:
        named = body.get("model")
        if named is not None and named != f"models/{model}":
            raise _Rejected(
                400, f"Model name in {where or 'request'} ({named}) does not match the model of the call."
            )
        content = _check_fields(body.get("content"), {"parts", "role"}, f"{where}content")
        texts = []
        for number, part in enumerate(content.get("parts") or ()):
            _check_fields(part, {"text"}, f"{where}content.parts[{number}]")
            texts.append(str(part.get("text", "")))
        if not texts or not any(texts):
            raise _Rejected(400, "* BatchEmbedContentsRequest.content: contents must not be empty\n")
        dimensions = body.get("outputDimensionality", DEFAULT_DIMENSIONS)
        if not isinstance(dimensions, int) or not 1 <= dimensions <= 3072:
            raise _Rejected(400, "output_dimensionality must be between 1 and 3072.")
        seed = zlib.crc32(" ".join(texts).encode())
        return {"values": [((seed >> (i % 32)) & 0xFF) / 255 for i in range(dimensions)]}

    def _batch_embed(self, body: dict[str, Any], model: str) -> dict[str, Any]:
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            raise _Rejected(400, "* BatchEmbedContentsRequest.requests: requests must not be empty\n")
        if len(requests) > 100:
            raise _Rejected(
                400, "* BatchEmbedContentsRequest.requests: at most 100 requests can be in one batch\n"
            )
        embeddings = []
        for index, item in enumerate(requests):
            where = f"requests[{index}]."
            _check_fields(item, _REQUEST_FIELDS["embedContent"], f"requests[{index}]")
            if "model" not in item:
                raise _Rejected(400, f"* BatchEmbedContentsRequest.{where}model: model is required\n")
            embeddings.append(self._embed(item, model, where))
        return {"embeddings": embeddings}

    def _predict(self, body: dict[str, Any]) -> dict[str, Any]:
        instances = body.get("instances")
        if not isinstance(instances, list) or len(instances) != 1:
            raise _Rejected(400, "Exactly one instance is supported.")
        instance = _check_fields(instances[0], {"prompt"}, "instances[0]")
        prompt = instance.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise _Rejected(400, "The prompt is required.")
        parameters = _check_fields(body.get("parameters", {}), _IMAGEN_PARAMETERS, "parameters")
        count = parameters.get("sampleCount", 4)
        if not isinstance(count, int) or not 1 <= count <= 4:
            raise _Rejected(400, "Number of images must be between 1 and 4.")
        ratio = parameters.get("aspectRatio", "1:1")
        if ratio not in _ASPECT_RATIOS:
            raise _Rejected(400, f"Unsupported aspect ratio: {ratio}")
        if self.script.filter_images:
            if not parameters.get("includeRaiReason"):
                return {}
            reason = "Your current safety filter threshold filtered out the generated image."
            return {"predictions": [{"raiFilteredReason": reason} for _ in range(count)]}
        return {
            "predictions": [
                {"mimeType": "image/png", "bytesBase64Encoded": _ratio_png(ratio, f"{prompt}:{number}")}
                for number in range(count)
            ]
        }


def _family(method: str) -> str:
    return "generateContent" if method == "streamGenerateContent" else method


def _methods(model: str) -> frozenset[str]:
    """The methods a model serves, from its name (as with the real models)."""
    if "embedding" in model:
        return frozenset({"embedContent", "batchEmbedContents"})
    if model.startswith("imagen"):
        return frozenset({"predict"})
    return frozenset({"generateContent", "streamGenerateContent"})


def _spaced(text: str) -> list[str]:
    words = text.split(" ")
    return [word if position == 0 else f" {word}" for position, word in enumerate(words)]
