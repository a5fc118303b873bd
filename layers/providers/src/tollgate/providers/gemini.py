"""Google Gemini: the Generative Language API (``v1beta``) behind OpenAI's shapes.

Translation is pure functions; ``GeminiProvider`` adds the transport:

* ``build_generate_body``: an OpenAI ``ChatRequest`` as a ``generateContent`` body (system and
  developer messages become ``systemInstruction``, assistant turns ``model`` turns, tool calls
  ``functionCall`` parts, tool results ``functionResponse`` parts, image URLs ``inlineData`` or
  ``fileData``, tools ``functionDeclarations``, ``response_format`` a response schema);
* ``convert_schema``: a JSON Schema as Gemini's OpenAPI-subset ``Schema``;
* ``parse_generate_response``: a ``GenerateContentResponse`` as a ``chat.completion``;
* ``GeminiStreamTranslator``: ``streamGenerateContent?alt=sse`` events as
  ``chat.completion.chunk``\\s, ending in a ``choices: []`` usage chunk;
* ``build_embed_body`` / ``parse_embed_response`` / ``embedding_result``: ``batchEmbedContents``;
* ``build_imagen_body`` / ``parse_imagen_response`` (Imagen ``:predict``) and
  ``build_image_generate_body`` / ``parse_image_generate_responses`` (Gemini image models);
* ``translate_gemini_error``: Gemini's error object as Tollgate's error.

Decisions worth knowing:

* Usage: ``prompt_tokens`` is ``promptTokenCount`` (plus ``toolUsePromptTokenCount``, billed as
  input), ``completion_tokens`` is ``candidatesTokenCount + thoughtsTokenCount``; cached tokens are
  ``cachedContentTokenCount``, reasoning tokens ``thoughtsTokenCount``. Stream events repeat
  ``usageMetadata``; the last one wins. No usage at all is estimated and labelled as such.
* Embeddings carry no token counts upstream, so their usage is estimated (source ``estimated``)
  unless the response brings ``usageMetadata``.
* Images come back as ``b64_json`` only: Gemini hosts no image URLs, so an explicit
  ``response_format: "url"`` is a 400 rather than a silently different shape. ``size`` only sets
  the aspect ratio (``1024x1792`` is ``9:16``); the pixel size is the model's. Models named
  ``imagen*`` use ``:predict``; any other model is a Gemini image model (``generateContent`` with
  image output, one request per image).
* Gemini's thought signatures ride on tool calls as ``extra_content.google.thought_signature``,
  the convention of Google's own OpenAI-compatible endpoint, so a client that sends the assistant
  message back unchanged keeps them.
* The API key travels in the ``x-goog-api-key`` header, never in a URL; error messages are
  redacted of it all the same.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import mimetypes
import re
import struct
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeGuard, TypeVar
from urllib.parse import unquote_to_bytes, urlsplit

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
from tollgate.providers.openai_compat import (
    ERROR_BODY_LIMIT,
    estimate_usage,
    parse_retry_after,
    read_capped,
    redact,
    truncate_message,
)
from tollgate.sse import SSEDecoder
from tollgate.tokens import estimate_tokens

if TYPE_CHECKING:
    from tollgate.providers.http import HttpClient, UpstreamResponse
    from tollgate.providers.presets import Preset
    from tollgate.schemas.openai import (
        ChatChunk,
        ChatMessage,
        ChatRequest,
        ContentPart,
        EmbeddingRequest,
        ImageRequest,
    )

__all__ = [
    "EMBED_BATCH_LIMIT",
    "GeminiProvider",
    "GeminiStreamTranslator",
    "aspect_ratio_for",
    "build_embed_body",
    "build_generate_body",
    "build_image_generate_body",
    "build_imagen_body",
    "convert_schema",
    "embedding_result",
    "embedding_texts",
    "is_imagen_model",
    "map_finish_reason",
    "model_path",
    "parse_embed_response",
    "parse_generate_response",
    "parse_image_generate_responses",
    "parse_imagen_response",
    "translate_gemini_error",
    "usage_from_metadata",
]

#: Most inputs one ``batchEmbedContents`` call takes; more are split into several calls.
EMBED_BATCH_LIMIT: Final = 100
#: Aspect ratios Imagen accepts, and those Gemini image models accept.
IMAGEN_ASPECT_RATIOS: Final = ("1:1", "3:4", "4:3", "9:16", "16:9")
GEMINI_IMAGE_ASPECT_RATIOS: Final = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
#: How far a requested size may be from an aspect ratio and still mean it (1792x1024 is 16:9).
ASPECT_TOLERANCE: Final = 0.02
#: Thinking budgets for OpenAI's ``reasoning_effort``: the Gemini 2.5 budgets Google's own
#: OpenAI-compatible endpoint documents (Gemini 3 models accept budgets too).
THINKING_BUDGETS: Final = {"none": 0, "minimal": 1024, "low": 1024, "medium": 8192, "high": 24576}

_API_VERSIONS: Final = ("/v1beta", "/v1", "/v1alpha")
_MODEL_NAME: Final = re.compile(r"(models/|tunedModels/)?([A-Za-z0-9][A-Za-z0-9._-]{0,127})")
_REDACTED: Final = "[redacted]"
_JSON_MIME: Final = "application/json"
# Compact ASCII JSON; one prebuilt encoder (json.dumps with options builds one per call).
_encode_json = json.JSONEncoder(separators=(",", ":")).encode
_loads = json.loads
_T = TypeVar("_T")

_FINISH_REASONS: Final = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter",
}

_AUDIO_FORMATS: Final = {
    "wav": "audio/wav",
    "mp3": "audio/mp3",
    "aiff": "audio/aiff",
    "aac": "audio/aac",
    "ogg": "audio/ogg",
    "flac": "audio/flac",
}


# -- Translation: requests (pure) --------------------------------------------------------------


def model_path(upstream_model: str) -> str:
    """The model's resource name, ``models/<id>`` (or ``tunedModels/<id>``), checked so a model
    name can never add path segments or a query to the upstream URL.

    >>> model_path("gemini-2.5-flash")
    'models/gemini-2.5-flash'
    """
    match = _MODEL_NAME.fullmatch(upstream_model)
    if match is None:
        raise InvalidRequestError(f"'{upstream_model}' is not a valid Gemini model name.", param="model")
    return f"{match.group(1) or 'models/'}{match.group(2)}"


def is_imagen_model(upstream_model: str) -> bool:
    """Imagen models generate through ``:predict``; other image models through ``generateContent``."""
    return upstream_model.rpartition("/")[2].startswith("imagen")


def build_generate_body(request: ChatRequest) -> dict[str, Any]:
    """The ``generateContent`` (and ``streamGenerateContent``) body for an OpenAI chat request.

    Raises ``InvalidRequestError`` (400, with the offending ``param``) for what Gemini cannot
    represent, before any network call.
    """
    system, contents = _translate_messages(request.messages)
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    if request.tools:
        body["tools"] = [{"functionDeclarations": _function_declarations(request.tools)}]
    tool_config = _tool_config(request.tool_choice, has_tools=bool(request.tools))
    if tool_config is not None:
        body["toolConfig"] = tool_config
    extras = request.model_extra or {}
    config = _generation_config(request, extras)
    if config:
        body["generationConfig"] = config
    google = extras.get("google")
    if google is not None:
        _apply_google_options(body, google)
    return body


def _translate_messages(messages: Sequence[ChatMessage]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """System parts, and contents with adjacent turns of one role merged (Gemini alternates turns;
    a run of tool results must answer its function calls in one turn)."""
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    tool_names: dict[str, str] = {}  # tool call id -> function name, for the tool results
    for position, message in enumerate(messages):
        role = message.role
        if role in ("system", "developer"):
            text = _system_text(message, position)
            if text:
                system.append({"text": text})
            continue
        if role == "user":
            turn, parts = "user", _content_parts(message, position)
        elif role == "assistant":
            turn, parts = "model", _assistant_parts(message, position, tool_names)
        else:  # "tool", or the legacy "function"
            turn, parts = "user", [_function_response(message, position, tool_names)]
        if not parts:
            continue  # Gemini refuses empty turns and empty text parts
        if contents and contents[-1]["role"] == turn:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": turn, "parts": parts})
    if not contents:
        raise InvalidRequestError(
            "Gemini needs at least one user or assistant message with content.", param="messages"
        )
    return system, contents


def _system_text(message: ChatMessage, position: int) -> str:
    content = message.content
    if content is None or isinstance(content, str):
        return content or ""
    texts: list[str] = []
    for index, part in enumerate(content):
        if part.type != "text":
            raise InvalidRequestError(
                f"Gemini takes only text in {message.role} messages.",
                param=f"messages[{position}].content[{index}]",
            )
        texts.append(_part_text(part, f"messages[{position}].content[{index}].text"))
    return "".join(texts)


def _part_text(part: ContentPart, param: str, field: str = "text") -> str:
    text = getattr(part, field, None)
    if not isinstance(text, str):
        raise InvalidRequestError(f"A {part.type} part needs a string '{field}'.", param=param)
    return text


def _content_parts(message: ChatMessage, position: int) -> list[dict[str, Any]]:
    content = message.content
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts: list[dict[str, Any]] = []
    for index, part in enumerate(content):
        param = f"messages[{position}].content[{index}]"
        kind = part.type
        if kind == "text" or (kind == "refusal" and message.role == "assistant"):
            text = _part_text(part, f"{param}.{kind}", kind)
            if text:
                parts.append({"text": text})
        elif kind == "image_url":
            parts.append(_image_part(getattr(part, "image_url", None), f"{param}.image_url"))
        elif kind == "input_audio":
            parts.append(_audio_part(getattr(part, "input_audio", None), f"{param}.input_audio"))
        elif kind == "file":
            parts.append(_file_part(getattr(part, "file", None), f"{param}.file"))
        else:
            raise InvalidRequestError(f"Gemini does not take '{kind}' content parts.", param=param)
    return parts


def _image_part(value: Any, param: str) -> dict[str, Any]:
    url: Any = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str) or not url:
        raise InvalidRequestError("An image_url part needs a 'url'.", param=param)
    if url[:5].lower() == "data:":
        mime, data = _parse_data_url(url, param)
        return {"inlineData": {"mimeType": mime, "data": data}}
    parsed = urlsplit(url)
    if parsed.scheme.lower() not in ("http", "https") or not parsed.netloc:
        raise InvalidRequestError("An image URL must be a data: URL or an http(s) URL.", param=param)
    file_data: dict[str, Any] = {"fileUri": url}
    guessed = mimetypes.guess_type(parsed.path, strict=False)[0]
    if guessed is not None:
        file_data["mimeType"] = guessed
    elif not _is_gemini_file(parsed.netloc, parsed.path):
        # Gemini must be told the type of an external URL, and nothing here says what it is.
        raise InvalidRequestError(
            "Gemini needs to know the type of an image URL, and this one does not end in a known "
            "extension (such as .png, .jpg, .webp or .heic). Send the image as a data: URL instead.",
            param=param,
        )
    return {"fileData": file_data}


def _is_gemini_file(host: str, path: str) -> bool:
    """A file uploaded through Gemini's Files API, whose type Gemini already knows."""
    return host.lower() == "generativelanguage.googleapis.com" and "/files/" in path


def _parse_data_url(url: str, param: str) -> tuple[str, str]:
    """The MIME type and base64 payload of a ``data:`` URL."""
    header, comma, payload = url[5:].partition(",")
    options = header.split(";")
    mime = options[0].strip().lower()
    if not comma or "/" not in mime:
        raise InvalidRequestError(
            "The data: URL needs a media type, such as data:image/png;base64,...", param=param
        )
    if any(option.strip().lower() == "base64" for option in options[1:]):
        data = payload.strip()
    else:  # percent-encoded bytes; Gemini wants base64
        data = base64.b64encode(unquote_to_bytes(payload)).decode("ascii")
    if not data:
        raise InvalidRequestError("The data: URL is empty.", param=param)
    return mime, data


def _audio_part(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not isinstance(value.get("data"), str) or not value["data"]:
        raise InvalidRequestError("An input_audio part needs base64 'data'.", param=param)
    mime = _AUDIO_FORMATS.get(str(value.get("format", "")).lower())
    if mime is None:
        raise InvalidRequestError(
            f"input_audio.format must be one of {', '.join(_AUDIO_FORMATS)}.", param=f"{param}.format"
        )
    return {"inlineData": {"mimeType": mime, "data": value["data"]}}


def _file_part(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRequestError("A file part needs a 'file' object.", param=param)
    data = value.get("file_data")
    if not isinstance(data, str) or not data:
        if value.get("file_id") is not None:
            raise InvalidRequestError(
                "OpenAI file ids mean nothing to Gemini; send the file inline as file_data.", param=param
            )
        raise InvalidRequestError("A file part needs 'file_data'.", param=param)
    if data[:5].lower() == "data:":
        mime, payload = _parse_data_url(data, f"{param}.file_data")
        return {"inlineData": {"mimeType": mime, "data": payload}}
    filename = value.get("filename")
    guessed = mimetypes.guess_type(filename, strict=False)[0] if isinstance(filename, str) else None
    if guessed is None:
        raise InvalidRequestError(
            "Gemini needs the file's type: send file_data as a data: URL, or a filename with a known "
            "extension.",
            param=f"{param}.file_data",
        )
    return {"inlineData": {"mimeType": guessed, "data": data}}


def _assistant_parts(message: ChatMessage, position: int, tool_names: dict[str, str]) -> list[dict[str, Any]]:
    parts = _content_parts(message, position)
    for index, call in enumerate(message.tool_calls or ()):
        param = f"messages[{position}].tool_calls[{index}]"
        function = call.get("function") if call.get("type", "function") == "function" else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(function, dict) or not isinstance(name, str) or not name:
            raise InvalidRequestError("Gemini takes only function tool calls, each with a name.", param=param)
        part: dict[str, Any] = {
            "functionCall": {"name": name, "args": _call_arguments(function.get("arguments"), param)}
        }
        signature = _thought_signature(call)
        if signature is not None:
            part["thoughtSignature"] = signature
        call_id = call.get("id")
        if isinstance(call_id, str):
            tool_names[call_id] = name
        parts.append(part)
    return parts


def _call_arguments(arguments: Any, param: str) -> dict[str, Any]:
    if arguments is None or arguments == "":
        return {}
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = _loads(arguments) if isinstance(arguments, str) else None
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise InvalidRequestError(
            "Tool call arguments must be a JSON object (as a string).", param=f"{param}.function.arguments"
        )
    return parsed


def _thought_signature(call: Mapping[str, Any]) -> str | None:
    extra = call.get("extra_content")
    google = extra.get("google") if isinstance(extra, dict) else None
    signature = google.get("thought_signature") if isinstance(google, dict) else None
    return signature if isinstance(signature, str) and signature else None


def _function_response(message: ChatMessage, position: int, tool_names: Mapping[str, str]) -> dict[str, Any]:
    call_id = message.tool_call_id
    name = tool_names.get(call_id) if call_id else None
    if name is None and message.name:
        name = message.name
    if name is None:
        problem = (
            f"tool_call_id '{call_id}' answers no tool call of an earlier message"
            if call_id
            else "it needs the tool_call_id of the tool call it answers"
        )
        raise InvalidRequestError(
            f"Gemini cannot take this tool result: {problem}.", param=f"messages[{position}].tool_call_id"
        )
    return {"functionResponse": {"name": name, "response": _function_output(_tool_text(message, position))}}


def _tool_text(message: ChatMessage, position: int) -> str:
    content = message.content
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(
        _part_text(part, f"messages[{position}].content[{index}].text")
        for index, part in enumerate(content)
        if part.type == "text"
    )


def _function_output(text: str) -> dict[str, Any]:
    """Gemini takes a function's response as a JSON object: a JSON object result is sent as is,
    anything else under ``output`` (the key Gemini reads a function's output from)."""
    if text.lstrip().startswith("{"):
        try:
            parsed = _loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            return parsed
    return {"output": text}


def _function_declarations(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    declarations: list[dict[str, Any]] = []
    for index, tool in enumerate(tools):
        param = f"tools[{index}]"
        function = tool.get("function") if tool.get("type") == "function" else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(function, dict) or not isinstance(name, str) or not name:
            raise InvalidRequestError("Gemini takes only function tools, each with a name.", param=param)
        declaration: dict[str, Any] = {"name": name}
        description = function.get("description")
        if isinstance(description, str) and description:
            declaration["description"] = description
        parameters = function.get("parameters")
        if parameters:
            schema = convert_schema(parameters, param=f"{param}.function.parameters")
            # Gemini refuses an OBJECT schema without properties: a function without parameters.
            if not (str(schema.get("type", "")).lower() == "object" and not schema.get("properties")):
                declaration["parameters"] = schema
        declarations.append(declaration)
    return declarations


def _tool_config(choice: str | dict[str, Any] | None, *, has_tools: bool) -> dict[str, Any] | None:
    if choice is None or (not has_tools and choice in ("none", "auto")):
        return None
    if not has_tools:
        raise InvalidRequestError("tool_choice needs tools.", param="tool_choice")
    if choice == "none":
        return {"functionCallingConfig": {"mode": "NONE"}}
    if choice == "auto":
        return {"functionCallingConfig": {"mode": "AUTO"}}
    if choice == "required":
        return {"functionCallingConfig": {"mode": "ANY"}}
    if isinstance(choice, dict) and choice.get("type") == "function":
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if isinstance(name, str) and name:
            return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}
    raise InvalidRequestError(
        "tool_choice must be 'none', 'auto', 'required' or a function by name.", param="tool_choice"
    )


def _generation_config(request: ChatRequest, extras: Mapping[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if request.temperature is not None:
        config["temperature"] = request.temperature
    if request.top_p is not None:
        config["topP"] = request.top_p
    if request.output_limit is not None:
        config["maxOutputTokens"] = request.output_limit
    if request.n is not None and request.n > 1:
        config["candidateCount"] = request.n
    if request.stop:
        stops = [request.stop] if isinstance(request.stop, str) else request.stop
        if any(stops):
            config["stopSequences"] = [stop for stop in stops if stop]
    for field, key in (("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty")):
        value = extras.get(field)
        if value is not None:
            if not _is_number(value):
                raise InvalidRequestError(f"{field} must be a number.", param=field)
            config[key] = value
    seed = extras.get("seed")
    if seed is not None:
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise InvalidRequestError("seed must be an integer.", param="seed")
        config["seed"] = seed
    if request.response_format is not None:
        config.update(_response_format(request.response_format))
    effort = extras.get("reasoning_effort")
    if effort is not None:
        budget = THINKING_BUDGETS.get(effort) if isinstance(effort, str) else None
        if budget is None:
            raise InvalidRequestError(
                f"reasoning_effort must be one of {', '.join(THINKING_BUDGETS)}.", param="reasoning_effort"
            )
        config["thinkingConfig"] = {"thinkingBudget": budget, "includeThoughts": budget > 0}
    return config


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _response_format(response_format: Mapping[str, Any]) -> dict[str, Any]:
    kind = response_format.get("type")
    if kind == "text":
        return {}
    if kind == "json_object":
        return {"responseMimeType": _JSON_MIME}
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if schema is None:
            return {"responseMimeType": _JSON_MIME}
        converted = convert_schema(schema, param="response_format.json_schema.schema")
        return {"responseMimeType": _JSON_MIME, "responseSchema": converted}
    raise InvalidRequestError(
        "response_format.type must be 'text', 'json_object' or 'json_schema'.", param="response_format"
    )


def _apply_google_options(body: dict[str, Any], google: Any) -> None:
    """Gemini-only options under ``google`` (``extra_body={"google": {...}}`` in the OpenAI SDK),
    as Google's own OpenAI-compatible endpoint takes them: ``thinking_config``,
    ``safety_settings`` and ``cached_content``."""
    if not isinstance(google, dict):
        raise InvalidRequestError("google must be an object.", param="google")
    thinking = google.get("thinking_config")
    if thinking is not None:
        if not isinstance(thinking, dict):
            raise InvalidRequestError(
                "google.thinking_config must be an object.", param="google.thinking_config"
            )
        config = body.setdefault("generationConfig", {})
        config["thinkingConfig"] = {_camel(key): value for key, value in thinking.items()}
    safety = google.get("safety_settings")
    if safety is not None:
        if not isinstance(safety, list) or not all(isinstance(item, dict) for item in safety):
            raise InvalidRequestError(
                "google.safety_settings must be a list of objects.", param="google.safety_settings"
            )
        body["safetySettings"] = safety
    cached = google.get("cached_content")
    if cached is not None:
        if not isinstance(cached, str) or not cached:
            raise InvalidRequestError(
                "google.cached_content must be a string.", param="google.cached_content"
            )
        body["cachedContent"] = cached


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


# -- Translation: JSON Schema (pure) -----------------------------------------------------------

#: Schema keys Gemini takes as they are.
_SCHEMA_KEPT: Final = frozenset(
    {
        "title",
        "description",
        "nullable",
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
        "propertyOrdering",
        "default",
        "example",
    }
)
#: Keys that change what a schema means in ways Gemini cannot express: refused, not dropped.
_SCHEMA_REFUSED: Final = frozenset(
    {"not", "if", "then", "else", "prefixItems", "contains", "dependentSchemas"}
)
_SCHEMA_TYPES: Final = frozenset({"string", "number", "integer", "boolean", "array", "object", "null"})
_SCHEMA_FORMATS: Final = {
    "string": frozenset({"enum", "date-time"}),
    "number": frozenset({"float", "double"}),
    "integer": frozenset({"int32", "int64"}),
}
_SCHEMA_DEPTH_LIMIT: Final = 48


def convert_schema(schema: Any, *, param: str) -> dict[str, Any]:
    """A JSON Schema (as OpenAI's ``json_schema`` and tool ``parameters`` carry it) as Gemini's
    ``Schema``, an OpenAPI 3.0 subset.

    Local ``$ref``\\s are inlined; ``anyOf``/``oneOf``/``type`` lists with ``null`` become
    ``nullable``; a string ``const`` becomes a one-value ``enum``. Keys a model cannot be held to
    and Gemini does not know (``additionalProperties``, ``$schema``, ``examples``, unsupported
    ``format``\\s...) are dropped. What would change the meaning (``not``, ``if``, tuples, recursive
    ``$ref``, non-string enums, several types) is a 400 naming ``param``.

    >>> convert_schema({"type": ["string", "null"], "format": "email"}, param="p")
    {'type': 'string', 'nullable': True}
    """
    if not isinstance(schema, dict):
        raise InvalidRequestError("A JSON schema must be an object.", param=param)
    definitions: dict[str, Any] = {}
    for key in ("$defs", "definitions"):
        found = schema.get(key)
        if isinstance(found, dict):
            definitions.update({f"#/{key}/{name}": value for name, value in found.items()})
    return _SchemaConverter(definitions, param).convert(schema, (), 0)


class _SchemaConverter:
    __slots__ = ("_definitions", "_param")

    def __init__(self, definitions: dict[str, Any], param: str) -> None:
        self._definitions = definitions
        self._param = param

    def _refuse(self, message: str) -> InvalidRequestError:
        return InvalidRequestError(f"Gemini cannot take this JSON schema: {message}.", param=self._param)

    def convert(self, schema: Any, refs: tuple[str, ...], depth: int) -> dict[str, Any]:
        if not isinstance(schema, dict):
            raise self._refuse("every subschema must be an object")
        if depth > _SCHEMA_DEPTH_LIMIT:
            raise self._refuse("it is nested too deeply")
        ref = schema.get("$ref")
        if ref is not None:
            if not isinstance(ref, str) or ref not in self._definitions:
                raise self._refuse(f"'$ref' {ref!r} does not point into this schema's $defs")
            if ref in refs:
                raise self._refuse(f"'$ref' {ref!r} is recursive")
            resolved = self.convert(self._definitions[ref], (*refs, ref), depth + 1)
            siblings = {key: value for key, value in schema.items() if key != "$ref"}
            return {**resolved, **self.convert(siblings, refs, depth + 1)} if siblings else resolved
        refused = _SCHEMA_REFUSED.intersection(schema)
        if refused:
            raise self._refuse(f"'{sorted(refused)[0]}' is not supported")
        all_of = schema.get("allOf")
        if all_of is not None:
            if not isinstance(all_of, list) or len(all_of) != 1:
                raise self._refuse("'allOf' is supported with one subschema only")
            rest = {key: value for key, value in schema.items() if key != "allOf"}
            return {**self.convert(all_of[0], refs, depth + 1), **self.convert(rest, refs, depth + 1)}

        out: dict[str, Any] = {}
        nullable = schema.get("nullable") is True
        kind = schema.get("type")
        if isinstance(kind, list):
            kinds = [item for item in kind if item != "null"]
            nullable = nullable or len(kinds) < len(kind)
            if len(kinds) != 1:
                raise self._refuse("a schema may have one type besides 'null'; use anyOf for more")
            kind = kinds[0]
        if kind is not None:
            if not isinstance(kind, str) or kind.lower() not in _SCHEMA_TYPES:
                raise self._refuse(f"unknown type {kind!r}")
            out["type"] = kind = kind.lower()

        options = schema.get("anyOf", schema.get("oneOf"))
        if options is not None:
            if not isinstance(options, list) or not options:
                raise self._refuse("'anyOf' and 'oneOf' need a list of subschemas")
            branches = [
                item for item in options if not (isinstance(item, dict) and item.get("type") == "null")
            ]
            nullable = nullable or len(branches) < len(options)
            converted = [self.convert(item, refs, depth + 1) for item in branches]
            if len(converted) == 1:  # Optional[X]: X, nullable; the outer description wins
                out = {**converted[0], **out}
            elif converted:
                out["anyOf"] = converted

        enum = schema.get("enum")
        const = schema.get("const")
        if const is not None:
            enum = [const]
        if enum is not None:
            if not isinstance(enum, list):
                raise self._refuse("'enum' must be a list")
            nullable = nullable or None in enum
            values = [value for value in enum if value is not None]
            if not all(isinstance(value, str) for value in values):
                raise self._refuse("Gemini enums hold strings only")
            out["enum"] = values
            out.setdefault("type", "string")

        fmt = schema.get("format")
        if isinstance(fmt, str) and fmt in _SCHEMA_FORMATS.get(str(out.get("type")), ()):
            out["format"] = fmt

        properties = schema.get("properties")
        if properties is not None:
            if not isinstance(properties, dict):
                raise self._refuse("'properties' must be an object")
            out["properties"] = {
                name: self.convert(value, refs, depth + 1) for name, value in properties.items()
            }
        items = schema.get("items")
        if items is not None:
            if not isinstance(items, dict):
                raise self._refuse("'items' must be one schema (tuples are not supported)")
            out["items"] = self.convert(items, refs, depth + 1)

        for key in _SCHEMA_KEPT.intersection(schema):  # the outer schema's words win over a branch's
            out[key] = schema[key]
        if nullable or out.get("nullable") is True:  # a nullable branch makes the whole nullable
            out["nullable"] = True
        else:
            out.pop("nullable", None)
        return out


# -- Translation: responses (pure) -------------------------------------------------------------


def map_finish_reason(reason: Any, *, tool_calls: bool = False) -> str:
    """Gemini's ``finishReason`` as OpenAI's ``finish_reason``.

    >>> map_finish_reason("MAX_TOKENS"), map_finish_reason("STOP", tool_calls=True)
    ('length', 'tool_calls')
    """
    mapped = _FINISH_REASONS.get(reason, "stop") if isinstance(reason, str) else "stop"
    return "tool_calls" if tool_calls and mapped == "stop" else mapped


def usage_from_metadata(metadata: Mapping[str, Any]) -> Usage:
    """Gemini's ``usageMetadata`` as Tollgate's usage.

    >>> metadata = {"promptTokenCount": 9, "candidatesTokenCount": 5, "thoughtsTokenCount": 7}
    >>> usage = usage_from_metadata(metadata)
    >>> usage.prompt_tokens, usage.completion_tokens, usage.reasoning_tokens
    (9, 12, 7)
    """
    prompt = _tokens(metadata.get("promptTokenCount")) + _tokens(metadata.get("toolUsePromptTokenCount"))
    thoughts = _tokens(metadata.get("thoughtsTokenCount"))
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=_tokens(metadata.get("candidatesTokenCount")) + thoughts,
        cached_tokens=min(_tokens(metadata.get("cachedContentTokenCount")), prompt),
        reasoning_tokens=thoughts,
    )


def _has_usage(metadata: Any) -> TypeGuard[dict[str, Any]]:
    return isinstance(metadata, dict) and "promptTokenCount" in metadata


def _tokens(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _raise_if_blocked(body: Mapping[str, Any], provider: str) -> None:
    feedback = body.get("promptFeedback")
    reason = feedback.get("blockReason") if isinstance(feedback, dict) else None
    if reason:
        raise UpstreamRejectedError(
            f"The provider '{provider}' blocked the prompt ({_printable(reason)}); rephrase it and retry.",
            status=400,
            code="content_filter",
        )


def _printable(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 64 and text.isprintable() else "unspecified reason"


def _new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def _tool_call(call: Mapping[str, Any], part: Mapping[str, Any]) -> dict[str, Any]:
    """A ``functionCall`` part as an OpenAI tool call (arguments as a JSON string)."""
    call_id = call.get("id")
    args = call.get("args")
    tool_call: dict[str, Any] = {
        "id": call_id if isinstance(call_id, str) and call_id else _new_call_id(),
        "type": "function",
        "function": {
            "name": str(call.get("name", "")),
            "arguments": _encode_json(args if args is not None else {}),
        },
    }
    signature = part.get("thoughtSignature")
    if isinstance(signature, str) and signature:
        tool_call["extra_content"] = {"google": {"thought_signature": signature}}
    return tool_call


def _read_parts(candidate: Mapping[str, Any]) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """A candidate's answer text, thought text and tool calls."""
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    if isinstance(parts, list):
        for part in parts:
            if type(part) is not dict:
                continue
            text = part.get("text")
            if type(text) is str:
                if text:
                    (thoughts if part.get("thought") is True else texts).append(text)
                continue
            call = part.get("functionCall")
            if type(call) is dict:
                calls.append(_tool_call(call, part))
    return texts, thoughts, calls


def _completion_id(body: Mapping[str, Any]) -> str:
    response_id = body.get("responseId")
    if isinstance(response_id, str) and response_id.isascii() and response_id.isprintable():
        return f"chatcmpl-{response_id[:64]}"
    return f"chatcmpl-{uuid.uuid4().hex}"


def parse_generate_response(
    body: Any, public_model: str, request: ChatRequest, *, provider: str, secrets: tuple[str, ...] = ()
) -> ChatResult:
    """A ``GenerateContentResponse`` as a ``chat.completion`` under the public model name.

    A blocked prompt (``promptFeedback.blockReason``) is a 400 ``content_filter``; missing usage is
    estimated and labelled ``estimated``.
    """
    if not isinstance(body, dict):
        raise UpstreamError(f"The provider '{provider}' answered something that is not a Gemini response.")
    if "error" in body:
        raise _reported_error(body["error"], f"The provider '{provider}' reported an error", secrets)
    _raise_if_blocked(body, provider)
    candidates = body.get("candidates")
    if not isinstance(candidates, list) or not candidates:
        raise UpstreamError(f"The provider '{provider}' answered with no candidates.")
    choices: list[dict[str, Any]] = []
    generated: list[str] = []
    for position, candidate in enumerate(candidates):
        if not isinstance(candidate, dict):
            continue
        texts, thoughts, calls = _read_parts(candidate)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(texts) if texts or not calls else None,
            "refusal": None,
        }
        if thoughts:
            message["reasoning_content"] = "".join(thoughts)
        if calls:
            message["tool_calls"] = calls
        index = candidate.get("index")
        choices.append(
            {
                "index": index if isinstance(index, int) else position,
                "message": message,
                "logprobs": None,
                "finish_reason": map_finish_reason(candidate.get("finishReason"), tool_calls=bool(calls)),
            }
        )
        generated.extend(texts)
        generated.extend(thoughts)
        generated.extend(call["function"]["arguments"] for call in calls)
    metadata = body.get("usageMetadata")
    if _has_usage(metadata):
        usage = usage_from_metadata(metadata)
    else:
        usage = estimate_usage(request, "".join(generated))
    completion: ChatChunk = {
        "id": _completion_id(body),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": public_model,
        "choices": choices,
        "usage": usage.to_openai(),
    }
    return ChatResult(completion=completion, usage=usage)


class GeminiStreamTranslator:
    """Turns one stream's decoded ``GenerateContentResponse`` events into OpenAI chunks.

    Per candidate: a role chunk, then content / ``reasoning_content`` / ``tool_calls`` deltas,
    then a finish chunk; ``usage_chunk()`` gives the closing ``choices: []`` chunk with the last
    ``usageMetadata`` seen (or an estimate, marked with ``USAGE_SOURCE_MARKER``). One per stream;
    works on plain dicts, with no validation model per event::

        translator = GeminiStreamTranslator(request, provider="gemini")
        for event in events:
            chunks = translator.feed(event)
        if translator.finished:
            last = translator.usage_chunk()
    """

    __slots__ = (
        "_calls",
        "_created",
        "_finished",
        "_id",
        "_metadata",
        "_model",
        "_provider",
        "_request",
        "_secrets",
        "_started",
        "_texts",
    )

    def __init__(self, request: ChatRequest, *, provider: str, secrets: tuple[str, ...] = ()) -> None:
        self._request = request
        self._model = request.model
        self._provider = provider
        self._secrets = secrets
        self._id: str | None = None
        self._created = int(time.time())
        self._started: set[int] = set()
        self._finished: set[int] = set()
        self._calls: dict[int, int] = {}  # candidate index -> tool calls so far
        self._metadata: dict[str, Any] | None = None
        self._texts: list[str] = []  # generated text, for an estimate should usage never come

    @property
    def finished(self) -> bool:
        """Whether every candidate that started has finished."""
        return bool(self._started) and self._finished >= self._started

    def _chunk(self, index: int, delta: dict[str, Any], finish_reason: str | None = None) -> ChatChunk:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }

    def feed(self, event: Any) -> list[ChatChunk]:
        """The chunks one event makes, in order. Raises ``UpstreamError`` for an error event and
        ``UpstreamRejectedError`` for a blocked prompt."""
        if type(event) is not dict:
            raise UpstreamError(f"The provider '{self._provider}' sent a malformed stream event.")
        if "error" in event:
            raise _reported_error(
                event["error"], f"The provider '{self._provider}' failed mid-stream", self._secrets
            )
        if "promptFeedback" in event:
            _raise_if_blocked(event, self._provider)
        metadata = event.get("usageMetadata")
        if metadata and type(metadata) is dict:
            self._metadata = metadata
        if self._id is None:
            self._id = _completion_id(event)
        candidates = event.get("candidates")
        if not candidates or type(candidates) is not list:
            return []
        chunks: list[ChatChunk] = []
        for position, candidate in enumerate(candidates):
            if type(candidate) is not dict:
                continue
            index = candidate.get("index", position)
            if type(index) is not int:
                index = position
            if index not in self._started:
                self._started.add(index)
                chunks.append(self._chunk(index, {"role": "assistant", "content": ""}))
            texts, thoughts, calls = _read_parts(candidate)
            delta: dict[str, Any] = {}
            if thoughts:
                delta["reasoning_content"] = thought = "".join(thoughts)
                self._texts.append(thought)
            if texts:
                delta["content"] = text = "".join(texts)
                self._texts.append(text)
            if calls:
                first = self._calls.get(index, 0)
                self._calls[index] = first + len(calls)
                for offset, call in enumerate(calls):
                    call["index"] = first + offset
                    self._texts.append(call["function"]["arguments"])
                delta["tool_calls"] = calls
            if delta:
                chunks.append(self._chunk(index, delta))
            reason = candidate.get("finishReason")
            if reason and index not in self._finished:
                self._finished.add(index)
                finish = map_finish_reason(reason, tool_calls=index in self._calls)
                chunks.append(self._chunk(index, {}, finish))
        return chunks

    def usage_chunk(self) -> ChatChunk:
        """The closing ``choices: []`` chunk carrying the stream's usage."""
        chunk: ChatChunk = {
            "id": self._id or f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [],
        }
        if _has_usage(self._metadata):
            chunk["usage"] = usage_from_metadata(self._metadata).to_openai()
        else:
            chunk["usage"] = estimate_usage(self._request, "".join(self._texts)).to_openai()
            chunk[USAGE_SOURCE_MARKER] = "estimated"
        return chunk


# -- Translation: embeddings and images (pure) ---------------------------------------------------


def embedding_texts(request: EmbeddingRequest) -> list[str]:
    """The inputs to embed; Gemini embeds text only, so token ids are a 400."""
    if isinstance(request.input, str):
        return [request.input]
    if not all(isinstance(item, str) for item in request.input):
        raise InvalidRequestError(
            "Gemini embeds text only; send input as strings, not token ids.", param="input"
        )
    return [item for item in request.input if isinstance(item, str)]


def build_embed_body(texts: Sequence[str], upstream_model: str, dimensions: int | None) -> dict[str, Any]:
    """A ``batchEmbedContents`` body: one request per input (at most ``EMBED_BATCH_LIMIT``)."""
    model = model_path(upstream_model)
    requests: list[dict[str, Any]] = []
    for text in texts:
        item: dict[str, Any] = {"model": model, "content": {"parts": [{"text": text}]}}
        if dimensions is not None:
            item["outputDimensionality"] = dimensions
        requests.append(item)
    return {"requests": requests}


def parse_embed_response(
    body: Any, expected: int, *, provider: str
) -> tuple[list[list[float]], Usage | None]:
    """The vectors of a ``batchEmbedContents`` answer, in input order, and its usage if it has any."""
    embeddings = body.get("embeddings") if isinstance(body, dict) else None
    if not isinstance(embeddings, list) or len(embeddings) != expected:
        raise UpstreamError(f"The provider '{provider}' answered with the wrong number of embeddings.")
    vectors: list[list[float]] = []
    for embedding in embeddings:
        values = embedding.get("values") if isinstance(embedding, dict) else None
        if not isinstance(values, list):
            raise UpstreamError(f"The provider '{provider}' sent an embedding without values.")
        vectors.append(values)
    metadata = body.get("usageMetadata")
    usage = None
    if _has_usage(metadata):
        usage = Usage(prompt_tokens=_tokens(metadata.get("promptTokenCount")), completion_tokens=0)
    return vectors, usage


def embedding_result(
    vectors: Sequence[list[float]], request: EmbeddingRequest, usage: Usage | None = None
) -> EmbeddingResult:
    """OpenAI's embeddings ``list`` (base64 float32 when asked for). Without upstream usage the
    prompt tokens are estimated from the text, and labelled ``estimated``."""
    if usage is None:
        tokens = sum(estimate_tokens(text) for text in embedding_texts(request))
        usage = Usage(prompt_tokens=tokens, completion_tokens=0, source="estimated")
    as_base64 = request.encoding_format == "base64"
    data = [
        {
            "object": "embedding",
            "index": index,
            "embedding": _float32_base64(vector) if as_base64 else vector,
        }
        for index, vector in enumerate(vectors)
    ]
    body = {
        "object": "list",
        "data": data,
        "model": request.model,
        "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.prompt_tokens},
    }
    return EmbeddingResult(body=body, usage=usage)


def _float32_base64(vector: Sequence[float]) -> str:
    """OpenAI's ``base64`` encoding: little-endian float32s."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def aspect_ratio_for(size: str | None, supported: Sequence[str]) -> str | None:
    """The aspect ratio a size (``1792x1024``, or a ratio such as ``16:9``) asks for; None for no
    preference (``None``, ``auto``). A size no supported ratio matches is a 400.

    >>> aspect_ratio_for("1792x1024", IMAGEN_ASPECT_RATIOS)
    '16:9'
    """
    if size is None or size == "auto":
        return None
    match = re.fullmatch(r"\s*(\d{1,5})\s*[x:]\s*(\d{1,5})\s*", size)
    if match is None or not int(match.group(1)) or not int(match.group(2)):
        raise InvalidRequestError(
            "size must look like 1024x1024 (or an aspect ratio such as 16:9).", param="size"
        )
    wanted = int(match.group(1)) / int(match.group(2))
    for ratio in supported:
        width, _, height = ratio.partition(":")
        if abs(wanted / (int(width) / int(height)) - 1) <= ASPECT_TOLERANCE:
            return ratio
    raise InvalidRequestError(
        f"This model cannot draw size '{size}'; its aspect ratios are {', '.join(supported)}.", param="size"
    )


def _check_image_format(request: ImageRequest) -> None:
    if request.response_format == "url":
        raise InvalidRequestError(
            "Gemini returns images inline, not as URLs: ask for response_format 'b64_json' or omit it.",
            param="response_format",
        )


def build_imagen_body(request: ImageRequest) -> dict[str, Any]:
    """An Imagen ``:predict`` body: one instance with the prompt, ``sampleCount`` = ``n``."""
    _check_image_format(request)
    # includeRaiReason: a filtered image says why, rather than silently going missing.
    parameters: dict[str, Any] = {"sampleCount": request.n, "includeRaiReason": True}
    ratio = aspect_ratio_for(request.size, IMAGEN_ASPECT_RATIOS)
    if ratio is not None:
        parameters["aspectRatio"] = ratio
    return {"instances": [{"prompt": request.prompt}], "parameters": parameters}


def parse_imagen_response(body: Any, *, provider: str) -> ImageResult:
    """Imagen's predictions as OpenAI's images body. Images Imagen filtered out are missing; if all
    were, it is a 400 ``content_filter``."""
    predictions = body.get("predictions") if isinstance(body, dict) else None
    if predictions is None and isinstance(body, dict) and "error" not in body:
        predictions = []  # Imagen answers {} when it filtered every image
    if not isinstance(predictions, list):
        raise UpstreamError(f"The provider '{provider}' answered something that is not an Imagen response.")
    data: list[dict[str, Any]] = []
    filtered: list[str] = []
    for prediction in predictions:
        if not isinstance(prediction, dict):
            continue
        encoded = prediction.get("bytesBase64Encoded")
        if isinstance(encoded, str) and encoded:
            image: dict[str, Any] = {"b64_json": encoded}
            revised = prediction.get("prompt")
            if isinstance(revised, str) and revised:
                image["revised_prompt"] = revised
            data.append(image)
        elif prediction.get("raiFilteredReason"):
            filtered.append(str(prediction["raiFilteredReason"]))
    if not data:
        reason = f": {truncate_message(filtered[0])}" if filtered else "."
        raise UpstreamRejectedError(
            f"The provider '{provider}' generated no image for this prompt{reason}",
            status=400,
            code="content_filter",
        )
    return ImageResult(body={"created": int(time.time()), "data": data}, images=len(data))


def build_image_generate_body(request: ImageRequest) -> dict[str, Any]:
    """A ``generateContent`` body asking a Gemini image model for one image."""
    _check_image_format(request)
    config: dict[str, Any] = {"responseModalities": ["TEXT", "IMAGE"]}
    ratio = aspect_ratio_for(request.size, GEMINI_IMAGE_ASPECT_RATIOS)
    if ratio is not None:
        config["imageConfig"] = {"aspectRatio": ratio}
    return {"contents": [{"role": "user", "parts": [{"text": request.prompt}]}], "generationConfig": config}


def parse_image_generate_responses(bodies: Sequence[Any], *, provider: str) -> ImageResult:
    """The ``inlineData`` images of Gemini image-model answers, with their summed token usage."""
    data: list[dict[str, Any]] = []
    prompt = completion = 0
    refusal = ""
    for body in bodies:
        if not isinstance(body, dict):
            raise UpstreamError(
                f"The provider '{provider}' answered something that is not a Gemini response."
            )
        _raise_if_blocked(body, provider)
        for candidate in body.get("candidates") or ():
            content = candidate.get("content") if isinstance(candidate, dict) else None
            for part in (content.get("parts") if isinstance(content, dict) else None) or ():
                inline = part.get("inlineData") if isinstance(part, dict) else None
                if isinstance(inline, dict) and isinstance(inline.get("data"), str) and inline["data"]:
                    data.append({"b64_json": inline["data"]})
                elif isinstance(part, dict) and isinstance(part.get("text"), str) and not part.get("thought"):
                    refusal = refusal or part["text"]
        metadata = body.get("usageMetadata")
        if _has_usage(metadata):
            usage = usage_from_metadata(metadata)
            prompt += usage.prompt_tokens
            completion += usage.completion_tokens
    if not data:
        reason = f": {truncate_message(refusal)}" if refusal else "."
        raise UpstreamRejectedError(
            f"The provider '{provider}' generated no image for this prompt{reason}",
            status=400,
            code="content_filter",
        )
    usage_total = Usage(prompt_tokens=prompt, completion_tokens=completion) if prompt or completion else None
    return ImageResult(body={"created": int(time.time()), "data": data}, images=len(data), usage=usage_total)


# -- Translation: errors (pure) -----------------------------------------------------------------


def translate_gemini_error(
    status: int,
    body: bytes,
    headers: Mapping[str, str],
    *,
    provider: str,
    secrets: tuple[str, ...] = (),
) -> TollgateError:
    """Gemini's non-2xx answer (``{"error": {"code", "message", "status", "details"}}``) as
    Tollgate's error.

    A refused credential is a 502 whatever its status (Gemini answers a bad key with a 400
    ``API_KEY_INVALID``); a rate limit is a 429 with ``Retry-After`` from the header or from
    ``RetryInfo.retryDelay``; the request's own refusal keeps its status and Gemini's message,
    redacted of ``secrets``.
    """
    if 300 <= status < 400:
        return UpstreamError(
            f"The provider '{provider}' answered with a redirect (HTTP {status}); Tollgate does not follow "
            "redirects. Check the provider's base URL.",
            code="upstream_redirect",
        )
    error = _error_object(body)
    message = error.get("message")
    message = redact(truncate_message(message), secrets) if isinstance(message, str) and message else None
    google_status = error.get("status")
    details = [item for item in error.get("details") or () if isinstance(item, dict)]
    reasons = {str(item.get("reason", "")) for item in details}
    if (
        status in (401, 403)
        or google_status in ("UNAUTHENTICATED", "PERMISSION_DENIED")
        or any(reason.startswith("API_KEY_") for reason in reasons)
    ):
        return UpstreamError(
            f"The provider rejected Tollgate's credentials for '{provider}'.", code="upstream_auth_failed"
        )
    if status == 429 or google_status == "RESOURCE_EXHAUSTED":
        retry_after = parse_retry_after(headers.get("Retry-After") or headers.get("retry-after"))
        if retry_after is None:
            retry_after = _retry_delay(details)
        return RateLimitError(
            f"The provider '{provider}' is rate limiting requests; retry later.",
            retry_after=retry_after,
            code="upstream_rate_limited",
        )
    if google_status == "FAILED_PRECONDITION":
        # Such as "User location is not supported for the API use": the deployment's problem.
        detail = f": {message}" if message else "."
        return UpstreamError(
            f"The provider '{provider}' cannot serve this deployment{detail}", code="upstream_unavailable"
        )
    if status in (400, 404, 409, 413, 422):
        return UpstreamRejectedError(
            message or f"The provider '{provider}' rejected the request (HTTP {status}).", status=status
        )
    return UpstreamError(f"The provider '{provider}' failed (HTTP {status}).")


def _error_object(body: bytes) -> dict[str, Any]:
    try:
        parsed = _loads(body)
    except (ValueError, UnicodeDecodeError):
        return {}
    if isinstance(parsed, list) and parsed:  # streamGenerateContent without alt=sse answers a list
        parsed = parsed[0]
    error = parsed.get("error") if isinstance(parsed, dict) else None
    return error if isinstance(error, dict) else {}


def _retry_delay(details: list[dict[str, Any]]) -> int | None:
    for item in details:
        delay = item.get("retryDelay")
        if isinstance(delay, str) and delay.endswith("s"):
            return parse_retry_after(delay[:-1])
    return None


def _reported_error(error: Any, prefix: str, secrets: tuple[str, ...] = ()) -> UpstreamError:
    message = error.get("message") if isinstance(error, dict) else error
    if isinstance(message, str) and message:
        return UpstreamError(f"{prefix}: {redact(truncate_message(message), secrets)}")
    return UpstreamError(f"{prefix}.")


# -- Transport ---------------------------------------------------------------------------------


class GeminiProvider:
    """One configured Gemini provider. Holds no per-request state.

    ``base_url`` is the API's root (``https://generativelanguage.googleapis.com``); ``/v1beta`` is
    added unless the URL already names an API version.
    """

    def __init__(
        self,
        name: str,
        preset: Preset,
        base_url: str,
        api_key: str | None,
        http: HttpClient,
        *,
        read_timeout: float | None = None,
    ) -> None:
        self._name = name
        self._preset = preset
        self._http = http
        root = base_url.rstrip("/")
        self._root = root if root.endswith(_API_VERSIONS) else f"{root}/v1beta"
        self._capabilities = preset.capabilities
        self._secrets: tuple[str, ...] = (api_key,) if api_key else ()
        self._read_timeout = read_timeout
        common = {"Content-Type": "application/json"}
        if api_key:
            common["x-goog-api-key"] = api_key  # a header, so the key is never in a URL or a log line
        self._headers = {**common, "Accept": "application/json"}
        # Streams ask for no compression: a compressing proxy would hold chunks back to fill blocks.
        self._stream_headers = {**common, "Accept": "text/event-stream", "Accept-Encoding": "identity"}

    @property
    def name(self) -> str:
        return self._name

    @property
    def capabilities(self) -> frozenset[Capability]:
        return self._capabilities

    def __repr__(self) -> str:  # never shows the key
        return f"GeminiProvider(name={self._name!r}, type={self._preset.type!r})"

    def _url(self, upstream_model: str, method: str) -> str:
        return f"{self._root}/{model_path(upstream_model)}:{method}"

    async def chat(self, request: ChatRequest, upstream_model: str) -> ChatResult:
        url = self._url(upstream_model, "generateContent")
        answer = await self._post_json(url, build_generate_body(request))
        return parse_generate_response(
            answer, request.model, request, provider=self._name, secrets=self._secrets
        )

    async def stream(self, request: ChatRequest, upstream_model: str) -> AsyncIterator[ChatChunk]:
        url = self._url(upstream_model, "streamGenerateContent") + "?alt=sse"
        body = _encode_json(build_generate_body(request)).encode()
        translator = GeminiStreamTranslator(request, provider=self._name, secrets=self._secrets)
        async with self._http.post(
            url, body, headers=self._stream_headers, provider=self._name, read_timeout=self._read_timeout
        ) as response:
            if not 200 <= response.status < 300:
                raise await self._error(response)
            if not response.headers.get("Content-Type", "").startswith("text/event-stream"):
                raise await self._not_a_stream(response)
            content = response.content
            decoder = SSEDecoder()
            while True:
                raw = await content.readany()
                for event in decoder.feed(raw) if raw else decoder.close():
                    if event.data:
                        for chunk in translator.feed(self._decode_event(event.data)):
                            yield chunk
                if not raw:
                    break
        if not translator.finished:
            raise UpstreamError(
                f"The provider '{self._name}' stream ended early.", code="upstream_disconnected"
            )
        yield translator.usage_chunk()

    async def embed(self, request: EmbeddingRequest, upstream_model: str) -> EmbeddingResult:
        texts = embedding_texts(request)
        url = self._url(upstream_model, "batchEmbedContents")
        batches = [
            texts[start : start + EMBED_BATCH_LIMIT] for start in range(0, len(texts), EMBED_BATCH_LIMIT)
        ]
        answers = await _all(
            [
                self._post_json(url, build_embed_body(batch, upstream_model, request.dimensions))
                for batch in batches
            ]
        )
        vectors: list[list[float]] = []
        usages: list[Usage | None] = []
        for batch, answer in zip(batches, answers, strict=True):
            batch_vectors, usage = parse_embed_response(answer, len(batch), provider=self._name)
            vectors.extend(batch_vectors)
            usages.append(usage)
        usage_total = None
        if all(usage is not None for usage in usages):
            usage_total = Usage(prompt_tokens=sum(u.prompt_tokens for u in usages if u), completion_tokens=0)
        return embedding_result(vectors, request, usage_total)

    async def image(self, request: ImageRequest, upstream_model: str) -> ImageResult:
        if is_imagen_model(upstream_model):
            answer = await self._post_json(self._url(upstream_model, "predict"), build_imagen_body(request))
            return parse_imagen_response(answer, provider=self._name)
        url = self._url(upstream_model, "generateContent")
        body = build_image_generate_body(request)
        answers = await _all([self._post_json(url, body) for _ in range(request.n)])
        return parse_image_generate_responses(answers, provider=self._name)

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

    def _decode_event(self, data: str) -> Any:
        try:
            return _loads(data)
        except ValueError:
            raise UpstreamError(f"The provider '{self._name}' sent a malformed stream event.") from None

    async def _error(self, response: UpstreamResponse) -> TollgateError:
        body = await read_capped(response, ERROR_BODY_LIMIT)
        return translate_gemini_error(
            response.status, body, response.headers, provider=self._name, secrets=self._secrets
        )

    async def _not_a_stream(self, response: UpstreamResponse) -> TollgateError:
        error = _error_object(await read_capped(response, ERROR_BODY_LIMIT))
        if error:
            return _reported_error(error, f"The provider '{self._name}' reported an error", self._secrets)
        return UpstreamError(f"The provider '{self._name}' did not answer with an event stream.")


async def _all(calls: Sequence[Awaitable[_T]]) -> list[_T]:
    """Runs ``calls`` concurrently, in order; the first failure cancels the rest and is raised."""
    if len(calls) == 1:
        return [await calls[0]]
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(_await(call)) for call in calls]
    except BaseExceptionGroup as failures:
        raise failures.exceptions[0] from None
    return [task.result() for task in tasks]


async def _await(call: Awaitable[_T]) -> _T:
    return await call
