"""Anthropic's Messages API, served by Tollgate: what Claude Code and the ``anthropic`` SDK speak.

``POST /v1/messages`` runs through the same chat service as ``/v1/chat/completions``: the request
is translated into Tollgate's internal (OpenAI) shape, any provider answers it, and the answer is
translated back. Translation is pure functions; the stream encoder keeps the little state one
stream needs::

    chat_request = messages_to_chat(request)                        # MessagesRequest -> ChatRequest
    message = completion_to_message(completion, usage, request.model)  # chat.completion -> message
    encoder = AnthropicStreamEncoder(request.model, input_tokens=...)  # chunks -> Anthropic SSE

Anthropic-only details ride in the OpenAI shape under the names other gateways use, so that an
Anthropic upstream gets them back (see ``tollgate.providers.anthropic``): ``cache_control`` on
content parts, tools and tool messages; ``is_error`` on tool messages; ``thinking_blocks`` (with
their signatures) on assistant messages; ``thinking`` and ``top_k`` as top-level extras.
``metadata.user_id`` becomes OpenAI's ``user``.

Not translated, and refused with a 400 rather than dropped: server tools (web search, code
execution...), and content blocks with no OpenAI counterpart (``search_result``, ``container_upload``,
Files API sources).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tollgate.errors import InvalidRequestError
from tollgate.schemas.openai import ChatRequest
from tollgate.sse import encode_event

if TYPE_CHECKING:
    from tollgate.errors import TollgateError
    from tollgate.providers.base import Usage
    from tollgate.schemas.openai import ChatChunk

__all__ = [
    "STOP_REASONS",
    "AnthropicStreamEncoder",
    "MessageParam",
    "MessagesRequest",
    "anthropic_error_body",
    "anthropic_error_type",
    "anthropic_usage",
    "completion_to_message",
    "messages_to_chat",
]

#: OpenAI's ``finish_reason`` as Anthropic's ``stop_reason``.
STOP_REASONS: Final[Mapping[str, str]] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

#: Keys of OpenAI's ``usage`` with an Anthropic counterpart; others (Tollgate's cost) pass on as is.
_OPENAI_USAGE_KEYS: Final = frozenset(
    {
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "prompt_tokens_details",
        "completion_tokens_details",
    }
)
_ERROR_TYPES: Final[Mapping[int, str]] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_encode_json = json.JSONEncoder(separators=(",", ":")).encode
_loads = json.loads


# -- The request schema ---------------------------------------------------------------------------


class MessageParam(BaseModel):
    """One conversation turn. Content blocks stay dicts: they are translated once, field by field."""

    model_config = ConfigDict(extra="allow")

    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]


class MessagesRequest(BaseModel):
    """``POST /v1/messages``. Unknown top-level fields are accepted and not passed on."""

    model_config = ConfigDict(extra="allow")

    model: Annotated[str, Field(min_length=1, max_length=256)]
    messages: Annotated[list[MessageParam], Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=1)]
    system: str | list[dict[str, Any]] | None = None
    stream: bool = False
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None
    stop_sequences: list[str] | None = None
    temperature: Annotated[float | None, Field(ge=0, le=1)] = None
    top_p: Annotated[float | None, Field(ge=0, le=1)] = None
    top_k: Annotated[int | None, Field(ge=0)] = None
    metadata: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None


# -- Anthropic request -> Tollgate's ChatRequest (pure) -------------------------------------------


def messages_to_chat(request: MessagesRequest) -> ChatRequest:
    """The chat request a Messages API request stands for. A stream always asks for usage.

    >>> request = MessagesRequest(model="fake/echo", max_tokens=64, system="Be brief.",
    ...                           messages=[{"role": "user", "content": "Hi"}])
    >>> messages_to_chat(request).model_dump(exclude_none=True)["messages"]
    [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'Hi'}]
    """
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": _system_content(request.system)})
    for position, message in enumerate(request.messages):
        if message.role == "user":
            messages.extend(_user_messages(message.content, f"messages.{position}.content"))
        else:
            messages.append(_assistant_message(message.content, f"messages.{position}.content"))
    body: dict[str, Any] = {
        "model": request.model,
        "messages": messages,
        "max_tokens": request.max_tokens,
        "stream": request.stream,
    }
    if request.stream:
        body["stream_options"] = {"include_usage": True}
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.top_k is not None:
        body["top_k"] = request.top_k
    if request.stop_sequences:
        body["stop"] = request.stop_sequences
    if request.thinking is not None:
        body["thinking"] = request.thinking
    user_id = (request.metadata or {}).get("user_id")
    if isinstance(user_id, str) and user_id:
        body["user"] = user_id
    if request.tools:
        body["tools"] = _tools(request.tools)
    if request.tool_choice is not None:
        body["tool_choice"], parallel = _tool_choice(request.tool_choice)
        if parallel is False:
            body["parallel_tool_calls"] = False
    try:
        return ChatRequest.model_validate(body)
    except ValidationError as exc:  # what the translation produced breaks a chat rule (an empty text...)
        problem = exc.errors()[0]
        raise InvalidRequestError(f"The request cannot be served: {problem.get('msg', 'invalid')}.") from None


def _system_content(system: str | list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    if isinstance(system, str):
        return system
    parts = []
    for index, block in enumerate(system):
        if block.get("type") != "text":
            raise InvalidRequestError("System blocks must be text.", param=f"system.{index}.type")
        parts.append(_text_part(block, f"system.{index}"))
    return parts


def _text_part(block: dict[str, Any], param: str) -> dict[str, Any]:
    text = block.get("text")
    if not isinstance(text, str):
        raise InvalidRequestError("A text block needs a 'text' string.", param=f"{param}.text")
    return _with_cache_control({"type": "text", "text": text}, block)


def _with_cache_control(target: dict[str, Any], block: dict[str, Any]) -> dict[str, Any]:
    if block.get("cache_control") is not None:
        target["cache_control"] = block["cache_control"]
    return target


def _compact(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """One plain text part as a string, as OpenAI clients usually write it."""
    if len(parts) == 1 and len(parts[0]) == 2 and parts[0]["type"] == "text":
        text: str = parts[0]["text"]
        return text
    return parts


def _user_messages(content: str | list[dict[str, Any]], param: str) -> list[dict[str, Any]]:
    """A user turn as OpenAI messages: a ``tool`` message per ``tool_result``, then the rest."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    messages: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for index, block in enumerate(content):
        where = f"{param}.{index}"
        kind = block.get("type")
        if kind == "tool_result":
            messages.append(_tool_message(block, where))
        else:
            parts.append(_media_part(block, where, "user messages"))
    if parts:
        messages.append({"role": "user", "content": _compact(parts)})
    return messages


def _media_part(block: dict[str, Any], param: str, where: str) -> dict[str, Any]:
    """A text, image or document block as an OpenAI content part."""
    kind = block.get("type")
    if kind == "text":
        return _text_part(block, param)
    if kind == "image":
        source = block.get("source")
        if not isinstance(source, dict):
            raise InvalidRequestError("An image block needs a 'source'.", param=f"{param}.source")
        if source.get("type") == "base64":
            url = _data_url(source, f"{param}.source")
        elif source.get("type") == "url" and isinstance(source.get("url"), str):
            url = source["url"]
        else:
            raise InvalidRequestError("Image sources must be base64 or url.", param=f"{param}.source.type")
        return _with_cache_control({"type": "image_url", "image_url": {"url": url}}, block)
    if kind == "document":
        source = block.get("source")
        if isinstance(source, dict) and source.get("type") == "base64":
            title = block.get("title")
            file = {
                "file_data": _data_url(source, f"{param}.source"),
                "filename": title if isinstance(title, str) and title else "document.pdf",
            }
            return _with_cache_control({"type": "file", "file": file}, block)
        if isinstance(source, dict) and source.get("type") == "text" and isinstance(source.get("data"), str):
            return _with_cache_control({"type": "text", "text": source["data"]}, block)
        raise InvalidRequestError("Document sources must be base64 or text.", param=f"{param}.source.type")
    raise InvalidRequestError(
        f"Content blocks of type '{kind}' are not supported in {where}.", param=f"{param}.type"
    )


def _data_url(source: dict[str, Any], param: str) -> str:
    media_type, data = source.get("media_type"), source.get("data")
    if not isinstance(media_type, str) or not media_type or not isinstance(data, str) or not data:
        raise InvalidRequestError("A base64 source needs 'media_type' and 'data'.", param=param)
    return f"data:{media_type};base64,{data}"


def _tool_message(block: dict[str, Any], param: str) -> dict[str, Any]:
    tool_use_id = block.get("tool_use_id")
    if not isinstance(tool_use_id, str) or not tool_use_id:
        raise InvalidRequestError("A tool_result needs its 'tool_use_id'.", param=f"{param}.tool_use_id")
    content = block.get("content")
    message: dict[str, Any] = {"role": "tool", "tool_call_id": tool_use_id, "content": ""}
    if isinstance(content, str):
        message["content"] = content
    elif isinstance(content, list):
        parts = [_media_part(item, f"{param}.content.{i}", "tool results") for i, item in enumerate(content)]
        message["content"] = _compact(parts) if parts else ""
    elif content is not None:
        raise InvalidRequestError("tool_result content must be a string or blocks.", param=f"{param}.content")
    if block.get("is_error") is True:
        message["is_error"] = True
    return _with_cache_control(message, block)


def _assistant_message(content: str | list[dict[str, Any]], param: str) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    parts: list[dict[str, Any]] = []
    tool_calls: list[dict[str, Any]] = []
    thinking: list[dict[str, Any]] = []
    for index, block in enumerate(content):
        where = f"{param}.{index}"
        kind = block.get("type")
        if kind == "text":
            parts.append(_text_part(block, where))
        elif kind == "tool_use":
            tool_calls.append(_tool_call(block, where))
        elif kind == "thinking" or kind == "redacted_thinking":
            thinking.append(block)
        else:
            raise InvalidRequestError(
                f"Content blocks of type '{kind}' are not supported in assistant messages.",
                param=f"{where}.type",
            )
    message: dict[str, Any] = {"role": "assistant", "content": _compact(parts) if parts else None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    if thinking:
        message["thinking_blocks"] = thinking
    return message


def _tool_call(block: dict[str, Any], param: str) -> dict[str, Any]:
    call_id, name, tool_input = block.get("id"), block.get("name"), block.get("input", {})
    if not isinstance(call_id, str) or not call_id:
        raise InvalidRequestError("A tool_use block needs an 'id'.", param=f"{param}.id")
    if not isinstance(name, str) or not name:
        raise InvalidRequestError("A tool_use block needs a 'name'.", param=f"{param}.name")
    if not isinstance(tool_input, dict):
        raise InvalidRequestError("A tool_use block's 'input' must be an object.", param=f"{param}.input")
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": _encode_json(tool_input)},
    }


def _tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    translated = []
    for index, tool in enumerate(tools):
        kind = tool.get("type")
        if kind not in (None, "custom"):
            raise InvalidRequestError(
                f"Server tools such as '{kind}' are not supported; Tollgate passes on custom tools only.",
                param=f"tools.{index}.type",
            )
        name, schema = tool.get("name"), tool.get("input_schema")
        if not isinstance(name, str) or not name:
            raise InvalidRequestError("Every tool needs a 'name'.", param=f"tools.{index}.name")
        if not isinstance(schema, dict):
            raise InvalidRequestError(
                "Every tool needs an 'input_schema'.", param=f"tools.{index}.input_schema"
            )
        function: dict[str, Any] = {"name": name, "parameters": schema}
        description = tool.get("description")
        if isinstance(description, str) and description:
            function["description"] = description
        translated.append(_with_cache_control({"type": "function", "function": function}, tool))
    return translated


def _tool_choice(choice: dict[str, Any]) -> tuple[str | dict[str, Any], bool | None]:
    """Anthropic's ``tool_choice`` as OpenAI's, and ``parallel_tool_calls`` when it is set."""
    kind = choice.get("type")
    parallel = False if choice.get("disable_parallel_tool_use") is True else None
    if kind == "auto":
        return "auto", parallel
    if kind == "any":
        return "required", parallel
    if kind == "none":
        return "none", None
    if kind == "tool" and isinstance(name := choice.get("name"), str) and name:
        return {"type": "function", "function": {"name": name}}, parallel
    raise InvalidRequestError(
        "tool_choice type must be 'auto', 'any', 'tool' (with a name) or 'none'.", param="tool_choice"
    )


# -- Tollgate's chat.completion -> Anthropic message (pure) ---------------------------------------


def anthropic_usage(usage: Usage) -> dict[str, Any]:
    """Tollgate's usage in Anthropic's terms: ``input_tokens`` excludes the cached prompt tokens."""
    return {
        "input_tokens": max(0, usage.prompt_tokens - usage.cached_tokens - usage.cache_write_tokens),
        "output_tokens": usage.completion_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
    }


def _usage_extras(openai_usage: Any) -> dict[str, Any]:
    """What Tollgate added to an OpenAI ``usage`` (the cost, the balance), to pass on."""
    if not isinstance(openai_usage, dict):
        return {}
    return {key: value for key, value in openai_usage.items() if key not in _OPENAI_USAGE_KEYS}


def completion_to_message(completion: dict[str, Any], usage: Usage, model: str) -> dict[str, Any]:
    """A finished ``chat.completion`` as an Anthropic ``message`` under the public model name.

    Thinking comes first, as Anthropic sends it: the signed ``thinking_blocks`` when the provider
    gave them, else ``reasoning_content`` as an unsigned thinking block. Tool call arguments that
    are not a JSON object (a model's malformed output) are kept whole under ``_raw_arguments``.
    """
    choices = completion.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = choice.get("message")
    message = message if isinstance(message, dict) else {}
    content: list[dict[str, Any]] = []
    thinking_blocks = message.get("thinking_blocks")
    reasoning = message.get("reasoning_content")
    if isinstance(thinking_blocks, list) and thinking_blocks:
        content.extend(block for block in thinking_blocks if isinstance(block, dict))
    elif isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = _message_text(message.get("content"))
    if text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or _tool_use_id(),
                "name": function.get("name") or "",
                "input": _tool_input(function.get("arguments")),
            }
        )
    return {
        "id": _message_id(completion.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": STOP_REASONS.get(choice.get("finish_reason") or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": {**anthropic_usage(usage), **_usage_extras(completion.get("usage"))},
    }


def _message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _tool_input(arguments: Any) -> dict[str, Any]:
    if arguments is None or arguments == "":
        return {}
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = _loads(arguments) if isinstance(arguments, str) else None
    except ValueError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {"_raw_arguments": arguments}


def _message_id(completion_id: Any) -> str:
    if isinstance(completion_id, str) and completion_id:
        return completion_id if completion_id.startswith("msg_") else f"msg_{completion_id}"
    return f"msg_{uuid.uuid4().hex}"


def _tool_use_id() -> str:
    return f"toolu_{uuid.uuid4().hex[:24]}"


# -- Errors ---------------------------------------------------------------------------------------


def anthropic_error_type(status: int) -> str:
    """Anthropic's error ``type`` for an HTTP status."""
    known = _ERROR_TYPES.get(status)
    if known is not None:
        return known
    return "api_error" if status >= 500 else "invalid_request_error"


def anthropic_error_body(error: TollgateError) -> dict[str, Any]:
    """A Tollgate error in Anthropic's shape: ``{"type": "error", "error": {"type", "message"}}``."""
    return {"type": "error", "error": {"type": anthropic_error_type(error.status), "message": error.message}}


# -- Streaming: chunks -> Anthropic SSE (one encoder per stream) ----------------------------------


def _event(name: bytes, payload: dict[str, Any]) -> bytes:
    """One named event: ``event: <type>`` then the ``data:`` line ``sse.encode_event`` writes."""
    return b"event: " + name + b"\n" + encode_event(payload)


_MESSAGE_STOP: Final = _event(b"message_stop", {"type": "message_stop"})


class AnthropicStreamEncoder:
    """``chat.StreamEncoder`` for Anthropic's SSE.

    Chunks become ``message_start`` (its ``input_tokens`` an estimate: the real count comes at
    the end), then per content block ``content_block_start``, its deltas and
    ``content_block_stop`` (thinking, text, and one ``tool_use`` block per tool call), and at the
    end ``message_delta`` (stop reason, final usage) and ``message_stop``. A late error is an
    ``error`` event with Anthropic's error body.
    """

    __slots__ = (
        "_block",
        "_block_kind",
        "_input_tokens",
        "_model",
        "_next_block",
        "_started",
        "_stop_reason",
        "_tool_blocks",
        "_usage_extras",
    )

    def __init__(self, model: str, input_tokens: int) -> None:
        self._model = model
        self._input_tokens = input_tokens
        self._started = False
        self._block = -1  # index of the open content block, -1 when none is open
        self._block_kind = ""
        self._next_block = 0
        self._tool_blocks: dict[int, int] = {}  # OpenAI tool call index -> content block index
        self._stop_reason = "end_turn"
        self._usage_extras: dict[str, Any] = {}

    def chunk(self, chunk: ChatChunk) -> bytes | None:
        out: list[bytes] = []
        if not self._started:
            out.append(self._message_start(chunk))
        choices = chunk.get("choices")
        if choices:
            choice = choices[0]
            delta = choice.get("delta")
            if delta:
                self._delta(delta, out)
            finish_reason = choice.get("finish_reason")
            if finish_reason:
                self._stop_reason = STOP_REASONS.get(finish_reason, "end_turn")
                self._close(out)
        elif "usage" in chunk:
            self._usage_extras = _usage_extras(chunk["usage"])  # the counts come with finish()
        return b"".join(out) if out else None

    def finish(self, usage: Usage) -> bytes:
        out: list[bytes] = []
        if not self._started:
            out.append(self._message_start({}))
        self._close(out)
        message_delta = {
            "type": "message_delta",
            "delta": {"stop_reason": self._stop_reason, "stop_sequence": None},
            "usage": {**anthropic_usage(usage), **self._usage_extras},
        }
        out.append(_event(b"message_delta", message_delta))
        out.append(_MESSAGE_STOP)
        return b"".join(out)

    def error(self, error: TollgateError) -> bytes:
        return _event(b"error", anthropic_error_body(error))

    def _message_start(self, chunk: ChatChunk) -> bytes:
        self._started = True
        message: dict[str, Any] = {
            "id": _message_id(chunk.get("id")),
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": self._input_tokens,
                "output_tokens": 0,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }
        return _event(b"message_start", {"type": "message_start", "message": message})

    def _delta(self, delta: dict[str, Any], out: list[bytes]) -> None:
        content = delta.get("content")
        if content and type(content) is str and len(delta) == 1:  # the hot path: text alone
            self._text(content, out)
            return
        reasoning = delta.get("reasoning_content")
        if reasoning and isinstance(reasoning, str):
            if self._block_kind != "thinking":
                self._open("thinking", {"type": "thinking", "thinking": "", "signature": ""}, out)
            out.append(self._block_delta({"type": "thinking_delta", "thinking": reasoning}))
        thinking_blocks = delta.get("thinking_blocks")
        if isinstance(thinking_blocks, list):
            self._thinking_blocks(thinking_blocks, out)
        if content and isinstance(content, str):
            self._text(content, out)
        tool_calls = delta.get("tool_calls")
        if isinstance(tool_calls, list):
            for call in tool_calls:
                if isinstance(call, dict):
                    self._tool_call(call, out)

    def _text(self, text: str, out: list[bytes]) -> None:
        if self._block_kind != "text":
            self._open("text", {"type": "text", "text": ""}, out)
        out.append(self._block_delta({"type": "text_delta", "text": text}))

    def _thinking_blocks(self, blocks: list[Any], out: list[bytes]) -> None:
        for block in blocks:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "redacted_thinking":
                self._open("redacted_thinking", block, out)
                self._close(out)
            elif block.get("type") == "thinking":
                if self._block_kind != "thinking":
                    self._open("thinking", {"type": "thinking", "thinking": "", "signature": ""}, out)
                thinking = block.get("thinking")
                if thinking and isinstance(thinking, str):
                    out.append(self._block_delta({"type": "thinking_delta", "thinking": thinking}))
                signature = block.get("signature")
                if signature and isinstance(signature, str):
                    out.append(self._block_delta({"type": "signature_delta", "signature": signature}))
                    self._close(out)  # a signature ends its block: more thinking is a new block

    def _tool_call(self, call: dict[str, Any], out: list[bytes]) -> None:
        position = call.get("index", 0)
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        block = self._tool_blocks.get(position)
        if block is None:
            tool_use: dict[str, Any] = {
                "type": "tool_use",
                "id": call.get("id") or _tool_use_id(),
                "name": function.get("name") or "",
                "input": {},
            }
            block = self._tool_blocks[position] = self._open("tool_use", tool_use, out)
        arguments = function.get("arguments")
        if arguments and isinstance(arguments, str):
            # An earlier, already closed tool block may still get arguments: clients accumulate by index.
            event = {
                "type": "content_block_delta",
                "index": block,
                "delta": {"type": "input_json_delta", "partial_json": arguments},
            }
            out.append(_event(b"content_block_delta", event))

    def _open(self, kind: str, block: dict[str, Any], out: list[bytes]) -> int:
        self._close(out)
        index = self._block = self._next_block
        self._next_block += 1
        self._block_kind = kind
        start = {"type": "content_block_start", "index": index, "content_block": block}
        out.append(_event(b"content_block_start", start))
        return index

    def _close(self, out: list[bytes]) -> None:
        if self._block >= 0:
            out.append(_event(b"content_block_stop", {"type": "content_block_stop", "index": self._block}))
            self._block = -1
            self._block_kind = ""

    def _block_delta(self, delta: dict[str, Any]) -> bytes:
        return _event(
            b"content_block_delta", {"type": "content_block_delta", "index": self._block, "delta": delta}
        )
