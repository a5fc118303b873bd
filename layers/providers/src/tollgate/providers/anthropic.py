"""Anthropic's Messages API (``POST /v1/messages``) behind Tollgate's OpenAI-shaped contract.

Translation is pure functions (``build_messages_body``, ``parse_message``, ``usage_from_anthropic``,
``translate_upstream_error``) and one stateful stream translator, ``AnthropicStreamTranslator``
(one per stream); ``AnthropicProvider`` adds the transport. Stream events are decoded once with
``json.loads`` and turned into chunk dicts directly: no pydantic per event.

Choices made where the two APIs differ:

* ``max_tokens`` is required by Anthropic: the client's limit (``max_completion_tokens`` or
  ``max_tokens``), else ``DEFAULT_MAX_TOKENS``, which every Claude model accepts. With extended
  thinking and no client limit, the default grows by the thinking budget, which Anthropic requires
  to stay below ``max_tokens``.
* ``system`` and ``developer`` messages, wherever they appear, become the top-level ``system``, in
  order. ``tool`` messages become ``tool_result`` blocks of a user turn; consecutive turns of one
  role are merged, as Anthropic would merge them anyway.
* JSON mode (``response_format`` ``json_object`` or ``json_schema``) forces a tool, ``JSON_TOOL``,
  whose input schema is the requested schema. Its input comes back as the message's content (JSON
  text) with ``finish_reason`` ``stop``, streamed as content deltas. A forced tool works on every
  Claude model; Anthropic's native structured output does not. What it cannot express is a 400:
  JSON mode together with the client's own tools or with extended thinking (Anthropic refuses forced
  tool use while thinking), and a schema whose root is not an object.
* ``temperature`` is clamped to Anthropic's 0..1; ``n`` above 1 is a 400; ``user`` becomes
  ``metadata.user_id``; ``parallel_tool_calls: false`` becomes ``disable_parallel_tool_use``.
* Anthropic-only details ride in the OpenAI shape under the names other gateways use, so a
  client speaking Anthropic (``tollgate.messages``) loses nothing on the way through:
  ``thinking`` and ``top_k`` as top-level extras; ``cache_control`` on content parts, tools and tool
  messages; ``is_error`` on tool messages; ``thinking_blocks`` (with signatures) on assistant
  messages. Answers carry thinking as ``reasoning_content`` plus ``thinking_blocks``.
* Usage: ``prompt_tokens`` = ``input_tokens`` + cache reads + cache writes (Anthropic counts them
  apart); ``cached_tokens`` = cache reads; ``cache_write_tokens`` = cache writes. In a stream, the
  counts of ``message_delta`` are cumulative: the last one wins, nothing is summed.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, Final

from tollgate.errors import InvalidRequestError, TollgateError, UpstreamError
from tollgate.providers.base import USAGE_SOURCE_MARKER, Capability, ChatResult, Usage

# One error table and one set of wire helpers for every HTTP adapter: Anthropic's differences are
# layered on top of the OpenAI-compatible family's.
from tollgate.providers.openai_compat import (
    ERROR_BODY_LIMIT,
    drain_response,
    estimate_usage,
    read_capped,
    redact,
    truncate_message,
)
from tollgate.providers.openai_compat import translate_upstream_error as translate_http_error
from tollgate.sse import SSEDecoder
from tollgate.tokens import estimate_prompt_tokens, estimate_tokens

if TYPE_CHECKING:
    from tollgate.providers.base import EmbeddingResult, ImageResult
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
    "ANTHROPIC_VERSION",
    "DEFAULT_MAX_TOKENS",
    "JSON_TOOL",
    "AnthropicProvider",
    "AnthropicStreamTranslator",
    "build_messages_body",
    "json_mode_tool",
    "parse_message",
    "translate_messages",
    "translate_tool_choice",
    "translate_tools",
    "translate_upstream_error",
    "usage_from_anthropic",
]

#: The API version Tollgate speaks (the ``anthropic-version`` header).
ANTHROPIC_VERSION: Final = "2023-06-01"
#: ``max_tokens`` when the client sets no limit: the largest every Claude model accepts.
DEFAULT_MAX_TOKENS: Final = 4096
#: The tool JSON mode forces; its input is the answer.
JSON_TOOL: Final = "json_response"
#: Anthropic's own top-level parameters, which reach Tollgate as extras and pass on unchanged.
PASSTHROUGH_FIELDS: Final = ("thinking", "top_k")

#: Anthropic's ``stop_reason`` as OpenAI's ``finish_reason``.
FINISH_REASONS: Final[Mapping[str, str]] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

_USAGE_KEYS: Final = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)
# Compact ASCII JSON; one prebuilt encoder (json.dumps with options builds one per call).
_encode_json = json.JSONEncoder(separators=(",", ":")).encode
_loads = json.loads


# -- Translation: OpenAI request -> Anthropic request (pure) --------------------------------------


def build_messages_body(request: ChatRequest, upstream_model: str, *, stream: bool) -> dict[str, Any]:
    """The Messages API body for ``request``; raises ``InvalidRequestError`` for what Anthropic
    cannot express.

    >>> from tollgate.schemas.openai import ChatRequest
    >>> request = ChatRequest(model="team/claude", messages=[
    ...     {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    >>> build_messages_body(request, "claude-sonnet-4-5", stream=False)
    {'model': 'claude-sonnet-4-5', 'max_tokens': 4096, 'messages': [{'role': 'user', 'content': 'Hi'}], 'system': 'Be brief.'}
    """  # noqa: E501
    if request.n is not None and request.n > 1:
        raise InvalidRequestError("Anthropic models return one choice: 'n' must be 1.", param="n")
    extras = request.model_extra or {}
    system, messages = translate_messages(request.messages)
    body: dict[str, Any] = {
        "model": upstream_model,
        "max_tokens": _max_tokens(request, extras.get("thinking")),
        "messages": messages,
    }
    if system:
        body["system"] = system
    if stream:
        body["stream"] = True
    if request.temperature is not None:
        body["temperature"] = min(request.temperature, 1.0)
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.stop:
        body["stop_sequences"] = [request.stop] if isinstance(request.stop, str) else list(request.stop)
    if request.user:
        body["metadata"] = {"user_id": request.user}
    for name in PASSTHROUGH_FIELDS:
        if extras.get(name) is not None:
            body[name] = extras[name]
    tools = translate_tools(request.tools) if request.tools else []
    tool_choice = translate_tool_choice(request.tool_choice, extras.get("parallel_tool_calls"))
    json_tool = json_mode_tool(request)
    if json_tool is not None:
        if tools and request.tool_choice != "none":
            raise InvalidRequestError(
                "Anthropic models cannot combine 'response_format' with tools; send one or the other.",
                param="response_format",
            )
        if _thinking_enabled(extras.get("thinking")):
            raise InvalidRequestError(
                "Anthropic models cannot combine 'response_format' with extended thinking.",
                param="response_format",
            )
        tools, tool_choice = [json_tool], {"type": "tool", "name": JSON_TOOL}
    if tools:
        body["tools"] = tools
        if tool_choice is not None:
            body["tool_choice"] = tool_choice
    return body


def translate_messages(
    messages: list[ChatMessage],
) -> tuple[str | list[dict[str, Any]], list[dict[str, Any]]]:
    """OpenAI messages as Anthropic's ``system`` and ``messages``.

    Content that is one plain text block is sent as a string, as clients usually write it.
    """
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for position, message in enumerate(messages):
        role = message.role
        if role == "system" or role == "developer":
            system.extend(_text_blocks(message, f"messages.{position}.content"))
            continue
        if role == "user":
            blocks = _user_blocks(message, f"messages.{position}.content")
        elif role == "assistant":
            blocks = _assistant_blocks(message, position)
        elif role == "tool":
            blocks, role = [_tool_result(message, position)], "user"
        else:
            raise InvalidRequestError(
                "Anthropic models do not take 'function' messages; use tools and 'tool' messages.",
                param=f"messages.{position}.role",
            )
        if not blocks:
            continue  # Anthropic refuses empty content; an empty message says nothing anyway
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        turn["content"] = _compact(turn["content"])
    compact_system = _compact(system)
    return compact_system, turns


def translate_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI function tools as Anthropic tools (``input_schema`` is the function's ``parameters``)."""
    translated: list[dict[str, Any]] = []
    for position, tool in enumerate(tools):
        function = tool.get("function")
        if tool.get("type") != "function" or not isinstance(function, dict):
            raise InvalidRequestError(
                "Anthropic models take function tools only.", param=f"tools.{position}.type"
            )
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequestError("Every tool needs a name.", param=f"tools.{position}.function.name")
        entry: dict[str, Any] = {
            "name": name,
            "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
        }
        description = function.get("description")
        if isinstance(description, str) and description:
            entry["description"] = description
        if tool.get("cache_control") is not None:
            entry["cache_control"] = tool["cache_control"]
        translated.append(entry)
    return translated


def translate_tool_choice(
    choice: str | dict[str, Any] | None, parallel_tool_calls: Any = None
) -> dict[str, Any] | None:
    """OpenAI's ``tool_choice`` (and ``parallel_tool_calls``) as Anthropic's ``tool_choice``."""
    translated: dict[str, Any] | None
    if choice is None:
        translated = None
    elif choice == "auto":
        translated = {"type": "auto"}
    elif choice == "required":
        translated = {"type": "any"}
    elif choice == "none":
        translated = {"type": "none"}
    elif (
        isinstance(choice, dict)
        and choice.get("type") == "function"
        and isinstance(function := choice.get("function"), dict)
        and isinstance(name := function.get("name"), str)
    ):
        translated = {"type": "tool", "name": name}
    else:
        raise InvalidRequestError(
            "tool_choice must be 'auto', 'required', 'none' or a function.", param="tool_choice"
        )
    if parallel_tool_calls is False and (translated is None or translated["type"] != "none"):
        translated = {**(translated or {"type": "auto"}), "disable_parallel_tool_use": True}
    return translated


def json_mode_tool(request: ChatRequest) -> dict[str, Any] | None:
    """The tool JSON mode forces, or None when the request asks for plain text."""
    response_format = request.response_format or {}
    kind = response_format.get("type")
    if kind is None or kind == "text":
        return None
    if kind == "json_object":
        return {
            "name": JSON_TOOL,
            "description": "Give the answer as a JSON object.",
            "input_schema": {"type": "object"},
        }
    if kind != "json_schema":
        raise InvalidRequestError(
            f"response_format type '{kind}' is not supported.", param="response_format.type"
        )
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise InvalidRequestError(
            "Anthropic models need a json_schema whose root is an object.",
            param="response_format.json_schema.schema",
        )
    description = spec.get("description") if isinstance(spec, dict) else None
    return {
        "name": JSON_TOOL,
        "description": description if isinstance(description, str) and description else "Give the answer.",
        "input_schema": schema,
    }


def uses_json_tool(request: ChatRequest) -> bool:
    """Whether the answer's ``JSON_TOOL`` call is the content (see ``json_mode_tool``)."""
    return (request.response_format or {}).get("type") in ("json_object", "json_schema")


def _max_tokens(request: ChatRequest, thinking: Any) -> int:
    limit = request.output_limit
    if limit is not None:
        return limit
    budget = thinking.get("budget_tokens") if _thinking_enabled(thinking) else None
    if isinstance(budget, int) and not isinstance(budget, bool) and budget > 0:
        return DEFAULT_MAX_TOKENS + budget
    return DEFAULT_MAX_TOKENS


def _thinking_enabled(thinking: Any) -> bool:
    return isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")


def _compact(blocks: list[dict[str, Any]]) -> Any:
    """One plain text block as a string; anything else as the list of blocks."""
    if len(blocks) == 1 and len(blocks[0]) == 2 and blocks[0]["type"] == "text":
        text: str = blocks[0]["text"]
        return text
    return blocks


def _with_cache_control(block: dict[str, Any], extra: Mapping[str, Any] | None) -> dict[str, Any]:
    if extra and extra.get("cache_control") is not None:
        block["cache_control"] = extra["cache_control"]
    return block


def _text_blocks(message: ChatMessage, param: str) -> list[dict[str, Any]]:
    """A system, developer or assistant message's text; other parts are refused."""
    content = message.content
    if content is None or content == "":
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    blocks = []
    for index, part in enumerate(content):
        if part.type != "text":
            raise InvalidRequestError(
                f"Anthropic models take only text in {message.role} messages.", param=f"{param}.{index}.type"
            )
        text = _part_text(part, f"{param}.{index}")
        if text:
            blocks.append(_with_cache_control({"type": "text", "text": text}, part.model_extra))
    return blocks


def _part_text(part: ContentPart, param: str) -> str:
    text = (part.model_extra or {}).get("text")
    if not isinstance(text, str):
        raise InvalidRequestError("A text part needs a 'text' string.", param=f"{param}.text")
    return text


def _user_blocks(message: ChatMessage, param: str) -> list[dict[str, Any]]:
    content = message.content
    if isinstance(content, str) or content is None:
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for index, part in enumerate(content):
        block = _part_block(part, f"{param}.{index}")
        if block is not None:
            blocks.append(block)
    return blocks


def _part_block(part: ContentPart, param: str) -> dict[str, Any] | None:
    """One OpenAI content part as an Anthropic content block (None for empty text)."""
    extra = part.model_extra or {}
    kind = part.type
    if kind == "text":
        text = _part_text(part, param)
        return _with_cache_control({"type": "text", "text": text}, extra) if text else None
    if kind == "image_url":
        image = extra.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        if not isinstance(url, str):
            raise InvalidRequestError("An image part needs 'image_url.url'.", param=f"{param}.image_url")
        return _with_cache_control({"type": "image", "source": _image_source(url, param)}, extra)
    if kind == "file":
        file = extra.get("file")
        data = file.get("file_data") if isinstance(file, dict) else None
        source = _data_url_source(data) if isinstance(data, str) else None
        if source is None:
            raise InvalidRequestError(
                "Anthropic models take files as base64 'file_data' data URLs.", param=f"{param}.file"
            )
        return _with_cache_control({"type": "document", "source": source}, extra)
    raise InvalidRequestError(
        f"Anthropic models do not take content parts of type '{kind}'.", param=f"{param}.type"
    )


def _image_source(url: str, param: str) -> dict[str, Any]:
    if url.startswith("data:"):
        source = _data_url_source(url)
        if source is None:
            raise InvalidRequestError(
                "An image data URL must be base64: data:<media type>;base64,<data>.",
                param=f"{param}.image_url.url",
            )
        return source
    if url.startswith(("https://", "http://")):
        return {"type": "url", "url": url}
    raise InvalidRequestError(
        "An image URL must be https or a base64 data URL.", param=f"{param}.image_url.url"
    )


def _data_url_source(url: str) -> dict[str, Any] | None:
    """``data:<media type>;base64,<data>`` as Anthropic's base64 source, or None."""
    header, comma, data = url.partition(",")
    if not comma or not header.startswith("data:") or not header.endswith(";base64"):
        return None
    media_type = header[5:-7]
    if not media_type or not data:
        return None
    return {"type": "base64", "media_type": media_type, "data": data}


def _assistant_blocks(message: ChatMessage, position: int) -> list[dict[str, Any]]:
    extra = message.model_extra or {}
    blocks: list[dict[str, Any]] = []
    thinking = extra.get("thinking_blocks")
    if isinstance(thinking, list):
        # Signed thinking goes back exactly as received: Anthropic checks it when tools are in use.
        blocks.extend(
            block
            for block in thinking
            if isinstance(block, dict) and block.get("type") in ("thinking", "redacted_thinking")
        )
    blocks.extend(_text_blocks(message, f"messages.{position}.content"))
    for index, call in enumerate(message.tool_calls or ()):
        blocks.append(_tool_use(call, f"messages.{position}.tool_calls.{index}"))
    return blocks


def _tool_use(call: dict[str, Any], param: str) -> dict[str, Any]:
    function = call.get("function")
    call_id = call.get("id")
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise InvalidRequestError("A tool call needs a function name.", param=f"{param}.function")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidRequestError("A tool call needs an id.", param=f"{param}.id")
    arguments = function.get("arguments")
    tool_input: Any = {}
    if isinstance(arguments, str) and arguments.strip():
        try:
            tool_input = _loads(arguments)
        except ValueError:
            tool_input = None
    elif arguments is not None and arguments != "":
        tool_input = None
    if not isinstance(tool_input, dict):
        raise InvalidRequestError(
            "Tool call arguments must be a JSON object.", param=f"{param}.function.arguments"
        )
    return {"type": "tool_use", "id": call_id, "name": function["name"], "input": tool_input}


def _tool_result(message: ChatMessage, position: int) -> dict[str, Any]:
    if not message.tool_call_id:
        raise InvalidRequestError(
            "A tool message needs the 'tool_call_id' it answers.", param=f"messages.{position}.tool_call_id"
        )
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.tool_call_id}
    content = message.content
    if isinstance(content, str):
        if content:
            block["content"] = content
    elif content:
        parts = _user_blocks(message, f"messages.{position}.content")
        if parts:
            block["content"] = _compact(parts)
    extra = message.model_extra or {}
    if extra.get("is_error") is True:
        block["is_error"] = True
    return _with_cache_control(block, extra)


# -- Translation: Anthropic answer -> OpenAI answer (pure) ----------------------------------------


def usage_from_anthropic(usage: Any) -> Usage | None:
    """Anthropic's ``usage`` as Tollgate's, or None when it holds no token counts.

    >>> usage_from_anthropic({"input_tokens": 5, "output_tokens": 9, "cache_read_input_tokens": 100,
    ...                       "cache_creation_input_tokens": 20})
    Usage(prompt_tokens=125, completion_tokens=9, cached_tokens=100, cache_write_tokens=20, reasoning_tokens=0, source='provider')
    """  # noqa: E501
    if not isinstance(usage, dict) or ("input_tokens" not in usage and "output_tokens" not in usage):
        return None
    return _usage(usage)


def _usage(counts: Mapping[str, Any]) -> Usage:
    cache_read = _tokens(counts.get("cache_read_input_tokens"))
    cache_write = _tokens(counts.get("cache_creation_input_tokens"))
    details = counts.get("output_tokens_details")
    return Usage(
        prompt_tokens=_tokens(counts.get("input_tokens")) + cache_read + cache_write,
        completion_tokens=_tokens(counts.get("output_tokens")),
        cached_tokens=cache_read,
        cache_write_tokens=cache_write,
        reasoning_tokens=_tokens(details.get("thinking_tokens")) if isinstance(details, dict) else 0,
    )


def _tokens(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def parse_message(
    body: Any, public_model: str, request: ChatRequest, *, secrets: tuple[str, ...] = ()
) -> ChatResult:
    """An Anthropic ``message`` as an OpenAI ``chat.completion`` under the public model name.

    Usage missing from the answer is estimated and labelled. An error body is an ``UpstreamError``.
    """
    if not isinstance(body, dict) or not isinstance(body.get("content"), list):
        if isinstance(body, dict) and body.get("type") == "error":
            raise _reported_error(body.get("error"), "The provider reported an error", secrets)
        raise UpstreamError("The provider's answer is not a message.")
    json_mode = uses_json_tool(request)
    texts: list[str] = []
    reasoning: list[str] = []
    thinking_blocks: list[dict[str, Any]] = []
    tool_calls: list[dict[str, Any]] = []
    for block in body["content"]:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            text = block.get("text")
            if isinstance(text, str):
                texts.append(text)
        elif kind == "tool_use":
            tool_input = block.get("input")
            arguments = _encode_json(tool_input if tool_input is not None else {})
            if json_mode and block.get("name") == JSON_TOOL:
                texts.append(arguments)
            else:
                tool_calls.append(
                    {
                        "id": block.get("id"),
                        "type": "function",
                        "function": {"name": block.get("name"), "arguments": arguments},
                    }
                )
        elif kind == "thinking":
            thinking = block.get("thinking")
            if isinstance(thinking, str):
                reasoning.append(thinking)
            thinking_blocks.append(block)
        elif kind == "redacted_thinking":
            thinking_blocks.append(block)
        # Server-tool blocks (web search and the like) have no OpenAI counterpart.
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not tool_calls else None,
        "refusal": None,
    }
    if tool_calls:
        message["tool_calls"] = tool_calls
    if thinking_blocks:
        message["reasoning_content"] = "".join(reasoning)
        message["thinking_blocks"] = thinking_blocks
    usage = usage_from_anthropic(body.get("usage"))
    if usage is None:
        generated = [*reasoning, *texts, *(call["function"]["arguments"] for call in tool_calls)]
        usage = estimate_usage(request, "".join(generated))
    completion: ChatChunk = {
        "id": body.get("id") or f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": public_model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": _finish_reason(body.get("stop_reason"), json_mode),
            }
        ],
        "usage": usage.to_openai(),
    }
    return ChatResult(completion=completion, usage=usage)


def _finish_reason(stop_reason: Any, json_mode: bool) -> str:
    if json_mode and stop_reason == "tool_use":
        return "stop"  # the forced JSON tool is the answer, not a call for the client to make
    return FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


# -- Errors (pure) --------------------------------------------------------------------------------


def translate_upstream_error(
    status: int,
    body: bytes,
    headers: Mapping[str, str],
    *,
    provider: str,
    secrets: tuple[str, ...] = (),
) -> TollgateError:
    """Anthropic's non-2xx answer as Tollgate's error: the OpenAI-compatible family's table
    (``openai_compat.translate_upstream_error``) plus Anthropic's own signals.

    An exhausted Anthropic account (402 ``billing_error``, a 400 about the credit balance, a 429
    for a spend limit) is a gateway failure (502 ``upstream_quota_exceeded``), never the caller's
    400 or 429. 529 ``overloaded_error`` is a 502 ``upstream_overloaded``.
    """
    error_type, message, detail_code = _anthropic_error_fields(body)
    if status == 529 or (status >= 500 and error_type == "overloaded_error"):
        return UpstreamError(
            f"The provider '{provider}' is overloaded; retry later.", code="upstream_overloaded"
        )
    out_of_credit = (
        status == 402
        or error_type == "billing_error"
        or (status == 400 and message is not None and "credit balance" in message.lower())
        or (status == 429 and detail_code == "enforced_spend_limit_reached")
    )
    if out_of_credit:
        return UpstreamError(
            f"The provider account for '{provider}' has run out of credit or hit its spend limit.",
            code="upstream_quota_exceeded",
        )
    return translate_http_error(status, body, headers, provider=provider, secrets=secrets)


def _anthropic_error_fields(body: bytes) -> tuple[str | None, str | None, str | None]:
    """The ``error.type``, ``error.message`` and ``error.details.error_code`` of an error body."""
    try:
        parsed = _loads(body)
    except (ValueError, UnicodeDecodeError):
        return None, None, None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if not isinstance(error, dict):
        return None, None, None
    details = error.get("details")
    detail_code = details.get("error_code") if isinstance(details, dict) else None
    error_type, message = error.get("type"), error.get("message")
    return (
        error_type if isinstance(error_type, str) else None,
        message if isinstance(message, str) else None,
        detail_code if isinstance(detail_code, str) else None,
    )


def _reported_error(error: Any, prefix: str, secrets: tuple[str, ...] = ()) -> UpstreamError:
    """An Anthropic error object sent with a 200 or as a stream's ``error`` event."""
    code = (
        "upstream_overloaded" if isinstance(error, dict) and error.get("type") == "overloaded_error" else None
    )
    message = error.get("message") if isinstance(error, dict) else error
    if isinstance(message, str) and message:
        return UpstreamError(f"{prefix}: {redact(truncate_message(message), secrets)}", code=code)
    return UpstreamError(f"{prefix}.", code=code)


# -- Streaming: Anthropic events -> OpenAI chunks (stateful, one per stream) ----------------------


class AnthropicStreamTranslator:
    """Turns one Anthropic event stream into OpenAI ``chat.completion.chunk`` dicts.

    Feed it each event's decoded JSON in order; ``feed`` returns the chunk it stands for, or None
    (``ping``, ``content_block_stop``, empty pieces, event types Anthropic adds later). After
    ``message_stop`` (``done``), ``usage_chunk()`` is the final ``choices: []`` chunk::

        translator = AnthropicStreamTranslator("team/claude", request)
        for event in events:
            if (chunk := translator.feed(event)) is not None:
                yield chunk
        yield translator.usage_chunk()
    """

    __slots__ = (
        "_counts",
        "_created",
        "_finished",
        "_id",
        "_json_blocks",
        "_json_mode",
        "_model",
        "_output_counted",
        "_prefix",
        "_request",
        "_secrets",
        "_texts",
        "_tools",
        "done",
    )

    def __init__(
        self,
        public_model: str,
        request: ChatRequest,
        *,
        provider: str = "anthropic",
        secrets: tuple[str, ...] = (),
    ) -> None:
        self._model = public_model
        self._request = request
        self._json_mode = uses_json_tool(request)
        self._prefix = f"The provider '{provider}' failed mid-stream"
        self._secrets = secrets
        self._id = f"chatcmpl-{uuid.uuid4().hex}"  # replaced by the message id at message_start
        self._created = int(time.time())
        self._tools: dict[int, int] = {}  # content block index -> OpenAI tool call index
        self._json_blocks: set[int] = set()  # blocks of the forced JSON tool: their input is content
        self._counts: dict[str, Any] = {}  # the latest of each usage count: they are cumulative
        self._output_counted = False  # whether a message_delta reported output tokens
        self._finished = False  # whether the finish chunk went out
        self._texts: list[str] = []  # generated text, for an estimate should usage never come
        self.done = False

    def feed(self, event: dict[str, Any]) -> ChatChunk | None:
        kind = event.get("type")
        if kind == "content_block_delta":  # the hot path first
            return self._content_delta(event)
        if kind == "content_block_start":
            return self._block_start(event)
        if kind == "message_start":
            message = event.get("message")
            if isinstance(message, dict):
                if isinstance(message.get("id"), str):
                    self._id = message["id"]
                self._take_usage(message.get("usage"))
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "message_delta":
            usage = event.get("usage")
            self._take_usage(usage)
            if isinstance(usage, dict) and "output_tokens" in usage:
                self._output_counted = True
            delta = event.get("delta")
            stop_reason = delta.get("stop_reason") if isinstance(delta, dict) else None
            if stop_reason and not self._finished:
                self._finished = True
                return self._chunk({}, _finish_reason(stop_reason, self._json_mode))
            return None
        if kind == "message_stop":
            self.done = True
            if not self._finished:
                self._finished = True
                return self._chunk({}, "stop")
            return None
        if kind == "error":
            raise _reported_error(event.get("error"), self._prefix, self._secrets)
        return None

    def _content_delta(self, event: dict[str, Any]) -> ChatChunk | None:
        delta = event.get("delta")
        if not isinstance(delta, dict):
            return None
        kind = delta.get("type")
        if kind == "text_delta":
            text = delta.get("text")
            if not text or type(text) is not str:
                return None
            self._texts.append(text)
            return self._chunk({"content": text})
        if kind == "input_json_delta":
            piece = delta.get("partial_json")
            if not piece or type(piece) is not str:
                return None
            self._texts.append(piece)
            index = event.get("index")
            if index in self._json_blocks:
                return self._chunk({"content": piece})
            tool = self._tools.get(index) if isinstance(index, int) else None
            if tool is None:
                return None
            return self._chunk({"tool_calls": [{"index": tool, "function": {"arguments": piece}}]})
        if kind == "thinking_delta":
            thinking = delta.get("thinking")
            if not thinking or type(thinking) is not str:
                return None
            self._texts.append(thinking)
            return self._chunk({"reasoning_content": thinking})
        if kind == "signature_delta":
            signature = delta.get("signature")
            if not isinstance(signature, str):
                return None
            return self._chunk(
                {"thinking_blocks": [{"type": "thinking", "thinking": "", "signature": signature}]}
            )
        return None  # citations and delta types added later have no OpenAI counterpart

    def _block_start(self, event: dict[str, Any]) -> ChatChunk | None:
        block = event.get("content_block")
        index = event.get("index")
        if not isinstance(block, dict) or not isinstance(index, int):
            return None
        kind = block.get("type")
        if kind == "tool_use":
            tool_input = block.get("input")
            arguments = _encode_json(tool_input) if tool_input else ""
            if self._json_mode and block.get("name") == JSON_TOOL:
                self._json_blocks.add(index)
                return self._chunk({"content": arguments}) if arguments else None
            tool = self._tools[index] = len(self._tools)
            call = {
                "index": tool,
                "id": block.get("id"),
                "type": "function",
                "function": {"name": block.get("name"), "arguments": arguments},
            }
            return self._chunk({"tool_calls": [call]})
        if kind == "text":
            text = block.get("text")
            if text and isinstance(text, str):
                self._texts.append(text)
                return self._chunk({"content": text})
            return None
        if kind == "thinking":
            thinking = block.get("thinking")
            if thinking and isinstance(thinking, str):
                self._texts.append(thinking)
                return self._chunk({"reasoning_content": thinking})
            return None
        if kind == "redacted_thinking":
            return self._chunk({"thinking_blocks": [block]})
        return None

    def _take_usage(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        counts = self._counts
        for key in _USAGE_KEYS:
            value = usage.get(key)
            if value is not None:
                counts[key] = value  # cumulative: a later count replaces an earlier one
        details = usage.get("output_tokens_details")
        if details is not None:
            counts["output_tokens_details"] = details

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> ChatChunk:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }

    def usage_chunk(self) -> ChatChunk:
        """The final ``choices: []`` chunk with the provider's usage, or an estimate (marked) for
        the counts the provider did not give.
        """
        chunk = self._chunk({})
        chunk["choices"] = []
        counts = self._counts
        if "input_tokens" in counts and self._output_counted:
            chunk["usage"] = _usage(counts).to_openai()
            return chunk
        # message_start's output count is a placeholder; only a message_delta's is the real one.
        provider = _usage(counts)
        usage = Usage(
            prompt_tokens=provider.prompt_tokens
            if "input_tokens" in counts
            else estimate_prompt_tokens(self._request),
            completion_tokens=provider.completion_tokens
            if self._output_counted
            else estimate_tokens("".join(self._texts)),
            cached_tokens=provider.cached_tokens,
            cache_write_tokens=provider.cache_write_tokens,
        )
        chunk["usage"] = usage.to_openai()
        chunk[USAGE_SOURCE_MARKER] = "estimated"
        return chunk


# -- Transport ------------------------------------------------------------------------------------


class AnthropicProvider:
    """One configured Anthropic provider. Holds no per-request state.

    ``base_url`` is the API root, as in Anthropic's SDKs (``https://api.anthropic.com``); one that
    already ends in ``/v1`` is accepted too.
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
        base = base_url.rstrip("/")
        self._url = f"{base}/messages" if base.endswith("/v1") else f"{base}/v1/messages"
        self._secrets: tuple[str, ...] = (api_key,) if api_key else ()
        self._read_timeout = read_timeout
        common = {"Content-Type": "application/json", "anthropic-version": ANTHROPIC_VERSION}
        if api_key:
            common["x-api-key"] = api_key
        self._headers = {**common, "Accept": "application/json"}
        # Streams ask for no compression: a compressing proxy would hold events back to fill blocks.
        self._stream_headers = {**common, "Accept": "text/event-stream", "Accept-Encoding": "identity"}

    @property
    def name(self) -> str:
        return self._name

    @property
    def capabilities(self) -> frozenset[Capability]:
        return self._preset.capabilities

    def __repr__(self) -> str:  # never shows the key
        return f"AnthropicProvider(name={self._name!r})"

    async def chat(self, request: ChatRequest, upstream_model: str) -> ChatResult:
        body = build_messages_body(request, upstream_model, stream=False)
        async with self._http.post(
            self._url,
            _encode_json(body).encode(),
            headers=self._headers,
            provider=self._name,
            read_timeout=self._read_timeout,
        ) as response:
            if not 200 <= response.status < 300:
                raise await self._error(response)
            raw = await response.read()
        try:
            answer = _loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise UpstreamError(f"The provider '{self._name}' sent a malformed response.") from None
        return parse_message(answer, request.model, request, secrets=self._secrets)

    async def stream(self, request: ChatRequest, upstream_model: str) -> AsyncIterator[ChatChunk]:
        body = build_messages_body(request, upstream_model, stream=True)
        translator = AnthropicStreamTranslator(
            request.model, request, provider=self._name, secrets=self._secrets
        )
        feed = translator.feed
        async with self._http.post(
            self._url,
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
            while not translator.done:
                raw = await content.readany()
                for event in decoder.feed(raw) if raw else decoder.close():
                    if not event.data:
                        continue
                    chunk = feed(self._decode_event(event.data, event.event))
                    if chunk is not None:
                        yield chunk
                    if translator.done:
                        break
                if not raw:
                    break
            if translator.done:
                await drain_response(response)
        if not translator.done:
            raise UpstreamError(
                f"The provider '{self._name}' stream ended early.", code="upstream_disconnected"
            )
        yield translator.usage_chunk()

    def _decode_event(self, data: str, event: str) -> dict[str, Any]:
        try:
            payload = _loads(data)
        except ValueError:
            raise UpstreamError(f"The provider '{self._name}' sent a malformed stream event.") from None
        if type(payload) is not dict:
            raise UpstreamError(f"The provider '{self._name}' sent a malformed stream event.")
        if event == "error" and payload.get("type") != "error":
            return {"type": "error", "error": payload.get("error", payload)}
        return payload

    async def embed(self, request: EmbeddingRequest, upstream_model: str) -> EmbeddingResult:
        raise InvalidRequestError(
            f"The provider '{self._name}' (Anthropic) offers no embeddings.",
            param="model",
            code="unsupported_model",
        )

    async def image(self, request: ImageRequest, upstream_model: str) -> ImageResult:
        raise InvalidRequestError(
            f"The provider '{self._name}' (Anthropic) offers no image generation.",
            param="model",
            code="unsupported_model",
        )

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
            return _reported_error(
                parsed["error"], f"The provider '{self._name}' reported an error", self._secrets
            )
        return UpstreamError(f"The provider '{self._name}' did not answer with an event stream.")
