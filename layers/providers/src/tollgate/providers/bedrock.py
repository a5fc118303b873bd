"""Amazon Bedrock: chat through the Converse API (streamed with ConverseStream), embeddings and
images through InvokeModel. Credentials are whatever botocore resolves (the function's IAM role,
or the environment); a provider's ``base_url`` only overrides the endpoint.

Translation is pure functions (``build_converse_request``, ``parse_converse_response``,
``ConverseStreamTranslator``, ``usage_from_bedrock``, ``finish_reason``, ``embedding_bodies``,
``parse_embedding_answers``, ``build_image_body``, ``parse_image_answer``,
``translate_bedrock_error``); ``BedrockProvider`` adds the transport: one low-level botocore
``bedrock-runtime`` client per adapter, created on first use (never at import), with Tollgate's
timeouts and no botocore retries, since Tollgate retries itself.

OpenAI → Converse:

* ``system`` and ``developer`` messages → ``system``; consecutive messages of one role are merged,
  as Converse wants roles to alternate; ``tool`` messages → ``toolResult`` blocks of one user turn;
  assistant ``tool_calls`` → ``toolUse`` blocks (arguments parsed from their JSON string);
* images: ``data:`` URLs → image bytes, format from the MIME type (png, jpeg, gif, webp). Converse
  cannot fetch ``http(s)`` URLs: those are a 400;
* ``tools`` → ``toolConfig.tools``; ``tool_choice`` ``auto`` / ``required`` / a named function →
  ``auto`` / ``any`` / ``tool``. Converse has no ``none``: the tools are then left out, unless the
  conversation already holds tool calls (Bedrock requires ``toolConfig`` then), when they are sent
  without a choice;
* ``max_completion_tokens`` or ``max_tokens`` → ``maxTokens``; ``temperature``, ``top_p`` →
  ``temperature``, ``topP``; ``stop`` → ``stopSequences``; ``n`` above 1 is a 400;
* ``response_format``: ``json_schema`` → ``outputConfig.textFormat`` (Bedrock's structured output; a
  model without it refuses with a 400). ``json_object`` is a 400: Converse has no schema-less JSON
  mode, and a prompt asking for JSON would promise what nothing enforces;
* vendor extras go only under ``additional_model_request_fields`` (an object), passed as
  ``additionalModelRequestFields``, for example Claude's
  ``{"thinking": {"type": "enabled", "budget_tokens": 2048}}``. OpenAI fields Converse has no
  equivalent for (``seed``, penalties, ``logprobs``, ``user``...) are ignored.

Converse → OpenAI: text, ``tool_calls`` (arguments as a JSON string), ``reasoningContent`` →
``reasoning_content``; stop reasons map to ``stop`` / ``length`` / ``tool_calls`` /
``content_filter``. Bedrock counts cached prompt tokens apart, so ``prompt_tokens`` =
``inputTokens`` + ``cacheReadInputTokens`` + ``cacheWriteInputTokens``.

Threads. botocore blocks, so every Bedrock call runs on a short-lived daemon thread of its own,
never on the event loop's default executor: a model call or a silent stream can hold a thread
for minutes, and the default executor (``min(32, cpus + 4)`` threads) also serves the DynamoDB
reads every request needs. A stream's thread iterates botocore's ``EventStream`` and hands events
over through a small bounded buffer, waking the loop only when the consumer waits; closing the
stream (a client disconnect) shuts its socket down, so the thread ends at once, even mid-stall.

Endpoints follow botocore's precedence: the provider's ``base_url``, then
``AWS_ENDPOINT_URL_BEDROCK_RUNTIME``, then ``AWS_ENDPOINT_URL``, then the regional endpoint.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextvars
import json
import re
import socket
import struct
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import suppress
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar

from tollgate.errors import (
    InvalidRequestError,
    RateLimitError,
    ServiceUnavailableError,
    TollgateError,
    UpstreamError,
    UpstreamRejectedError,
    UpstreamTimeoutError,
)
from tollgate.providers.base import (
    USAGE_SOURCE_MARKER,
    Capability,
    ChatResult,
    EmbeddingResult,
    ImageResult,
    Usage,
)
from tollgate.providers.presets import PRESETS
from tollgate.tokens import estimate_prompt_tokens, estimate_tokens

if TYPE_CHECKING:
    from tollgate.schemas.openai import ChatChunk, ChatMessage, ChatRequest, EmbeddingRequest, ImageRequest

__all__ = [
    "CALL_THREAD_NAME",
    "EXTRA_FIELDS",
    "MESSAGE_LIMIT",
    "STREAM_THREAD_NAME",
    "BedrockProvider",
    "ConverseStreamTranslator",
    "build_converse_request",
    "build_image_body",
    "embedding_bodies",
    "embedding_family",
    "finish_reason",
    "is_image_model",
    "parse_converse_response",
    "parse_embedding_answers",
    "parse_image_answer",
    "translate_bedrock_error",
    "usage_from_bedrock",
]

#: Longest upstream error message passed on to the caller.
MESSAGE_LIMIT: Final = 500
#: Events a stream's thread may read ahead of its consumer.
STREAM_BUFFER: Final = 16
#: Titan embeds one text per call, and Cohere at most 96 per call: calls run this many at a time.
EMBEDDING_CONCURRENCY: Final = 8
COHERE_BATCH: Final = 96
#: Names of the threads Bedrock calls run on (a test checks that a closed stream's thread ends).
CALL_THREAD_NAME: Final = "tollgate-bedrock-call"
STREAM_THREAD_NAME: Final = "tollgate-bedrock-stream"
#: The extra chat field whose object becomes Converse's ``additionalModelRequestFields``.
EXTRA_FIELDS: Final = "additional_model_request_fields"

_FINISH_REASONS: Final = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}
_IMAGE_FORMATS: Final = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}
_IMAGE_QUALITY: Final = {
    "hd": "premium",
    "high": "premium",
    "standard": "standard",
    "medium": "standard",
    "low": "standard",
}
_IMAGE_SIZE: Final = re.compile(r"(\d{1,5})x(\d{1,5})")
_MAX_IMAGE_SIDE: Final = 4096
_DATA_URL: Final = re.compile(r"data:([\w.+-]+/[\w.+-]+)?((?:;[^;,]*)*),(.*)", re.DOTALL)
# AWS access key ids and SigV4 fragments: never echoed to a caller, whatever an upstream says.
_SECRET_PATTERNS: Final = re.compile(
    r"\b(?:AKIA|ASIA|AIDA|AROA)[A-Z0-9]{12,}\b|(?:Credential|Signature|X-Amz-Security-Token|SignedHeaders)=[^\s,]+",
)
_encode_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

T = TypeVar("T")
EmbeddingFamily = Literal["titan", "cohere"]


# -- Chat translation (pure) -----------------------------------------------------------------


def build_converse_request(request: ChatRequest, upstream_model: str) -> dict[str, Any]:
    """The keyword arguments of ``converse`` / ``converse_stream`` for an OpenAI chat request.

    >>> from tollgate.schemas.openai import ChatRequest
    >>> system, user = {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}
    >>> kwargs = build_converse_request(ChatRequest(model="b/m", messages=[system, user]), "m")
    >>> kwargs["system"], kwargs["messages"]
    ([{'text': 'Be brief.'}], [{'role': 'user', 'content': [{'text': 'Hi'}]}])
    """
    if request.n is not None and request.n > 1:
        raise InvalidRequestError("Bedrock returns one choice per request; n must be 1.", param="n")
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    has_tool_blocks = False
    for index, message in enumerate(request.messages):
        role = message.role
        if role in ("system", "developer"):
            system.extend({"text": text} for text in _system_texts(message, index) if text)
            continue
        if role == "user":
            bedrock_role, blocks = "user", _content_blocks(message, index)
        elif role == "assistant":
            bedrock_role, blocks = "assistant", _assistant_blocks(message, index)
        elif role == "tool":
            bedrock_role, blocks = "user", [_tool_result(message, index)]
        else:
            raise InvalidRequestError(
                f"Bedrock does not support messages with role '{role}'; use 'tool'.",
                param=f"messages[{index}].role",
            )
        if not blocks:
            continue  # an empty message says nothing, and Converse refuses empty content
        has_tool_blocks = has_tool_blocks or any("toolUse" in b or "toolResult" in b for b in blocks)
        if messages and messages[-1]["role"] == bedrock_role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": bedrock_role, "content": blocks})
    kwargs: dict[str, Any] = {"modelId": upstream_model, "messages": messages}
    if system:
        kwargs["system"] = system
    inference = _inference_config(request)
    if inference:
        kwargs["inferenceConfig"] = inference
    tool_config = _tool_config(request, has_tool_blocks)
    if tool_config is not None:
        kwargs["toolConfig"] = tool_config
    output_config = _output_config(request.response_format)
    if output_config is not None:
        kwargs["outputConfig"] = output_config
    extra = (request.model_extra or {}).get(EXTRA_FIELDS)
    if extra is not None:
        if not isinstance(extra, dict):
            raise InvalidRequestError(f"{EXTRA_FIELDS} must be an object.", param=EXTRA_FIELDS)
        if extra:
            kwargs["additionalModelRequestFields"] = extra
    return kwargs


def _inference_config(request: ChatRequest) -> dict[str, Any]:
    inference: dict[str, Any] = {}
    if request.output_limit is not None:
        inference["maxTokens"] = request.output_limit
    if request.temperature is not None:
        inference["temperature"] = request.temperature
    if request.top_p is not None:
        inference["topP"] = request.top_p
    stops = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    if stops:
        inference["stopSequences"] = stops
    return inference


def _parts(message: ChatMessage) -> list[tuple[str, Any]]:
    """A message's content as (type, part) pairs; a plain string is one text part."""
    content = message.content
    if content is None:
        return []
    if isinstance(content, str):
        return [("text", content)]
    return [(part.type, part) for part in content]


def _system_texts(message: ChatMessage, index: int) -> list[str]:
    texts = []
    for position, (kind, part) in enumerate(_parts(message)):
        if kind != "text":
            raise InvalidRequestError(
                "System messages may hold text only.", param=f"messages[{index}].content[{position}]"
            )
        texts.append(part if isinstance(part, str) else str(getattr(part, "text", "") or ""))
    return texts


def _content_blocks(message: ChatMessage, index: int) -> list[dict[str, Any]]:
    """Text and image blocks of a user or tool message (empty text is left out)."""
    blocks: list[dict[str, Any]] = []
    for position, (kind, part) in enumerate(_parts(message)):
        param = f"messages[{index}].content[{position}]"
        if kind == "text":
            text = part if isinstance(part, str) else getattr(part, "text", None)
            if not isinstance(text, str):
                raise InvalidRequestError("A text part needs a string 'text'.", param=param)
            if text:
                blocks.append({"text": text})
        elif kind == "image_url":
            blocks.append(_image_block(getattr(part, "image_url", None), f"{param}.image_url"))
        else:
            raise InvalidRequestError(
                f"Bedrock does not support content parts of type '{kind}' here.", param=f"{param}.type"
            )
    return blocks


def _image_block(image_url: Any, param: str) -> dict[str, Any]:
    """A ``data:`` URL as a Converse image block; Converse cannot fetch other URLs."""
    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    if not isinstance(url, str) or not url:
        raise InvalidRequestError("An image part needs a 'url'.", param=param)
    if not url.startswith("data:"):
        raise InvalidRequestError(
            "Bedrock cannot fetch images from URLs; send the image inline as a base64 data: URL "
            "(data:image/png;base64,...).",
            param=param,
            code="unsupported_image_url",
        )
    match = _DATA_URL.fullmatch(url)
    if match is None or ";base64" not in match.group(2):
        raise InvalidRequestError("The image data: URL must be base64-encoded.", param=param)
    mime = (match.group(1) or "").lower()
    image_format = _IMAGE_FORMATS.get(mime)
    if image_format is None:
        raise InvalidRequestError(
            f"Bedrock accepts png, jpeg, gif and webp images, not '{mime or 'unknown'}'.", param=param
        )
    try:
        data = base64.b64decode(match.group(3), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequestError("The image data: URL is not valid base64.", param=param) from None
    if not data:
        raise InvalidRequestError("The image is empty.", param=param)
    return {"image": {"format": image_format, "source": {"bytes": data}}}


def _assistant_blocks(message: ChatMessage, index: int) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for position, (kind, part) in enumerate(_parts(message)):
        if kind == "text":
            text = part if isinstance(part, str) else getattr(part, "text", None)
            if isinstance(text, str) and text:
                blocks.append({"text": text})
        elif kind != "refusal":
            raise InvalidRequestError(
                "Assistant messages may hold text only.", param=f"messages[{index}].content[{position}]"
            )
    for position, call in enumerate(message.tool_calls or []):
        param = f"messages[{index}].tool_calls[{position}]"
        function = call.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise InvalidRequestError("A tool call needs a function with a name.", param=param)
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id:
            raise InvalidRequestError("A tool call needs an id.", param=f"{param}.id")
        arguments = function.get("arguments") or "{}"
        try:
            tool_input = json.loads(arguments) if isinstance(arguments, str) else arguments
        except ValueError:
            raise InvalidRequestError(
                "Tool call arguments must be a JSON string.", param=f"{param}.function.arguments"
            ) from None
        blocks.append({"toolUse": {"toolUseId": call_id, "name": function["name"], "input": tool_input}})
    return blocks


def _tool_result(message: ChatMessage, index: int) -> dict[str, Any]:
    if not message.tool_call_id:
        raise InvalidRequestError(
            "A tool message needs a tool_call_id.", param=f"messages[{index}].tool_call_id"
        )
    return {"toolResult": {"toolUseId": message.tool_call_id, "content": _content_blocks(message, index)}}


def _tool_config(request: ChatRequest, has_tool_blocks: bool) -> dict[str, Any] | None:
    specs: list[dict[str, Any]] = []
    for position, tool in enumerate(request.tools or []):
        function = tool.get("function")
        if tool.get("type", "function") != "function" or not isinstance(function, dict):
            raise InvalidRequestError("Bedrock supports function tools only.", param=f"tools[{position}]")
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequestError("A tool needs a name.", param=f"tools[{position}].function.name")
        schema = function.get("parameters") or {"type": "object", "properties": {}}
        spec: dict[str, Any] = {"name": name, "inputSchema": {"json": schema}}
        if isinstance(description := function.get("description"), str) and description:
            spec["description"] = description
        if function.get("strict") is True:
            spec["strict"] = True
        specs.append({"toolSpec": spec})
    if not specs:
        return None
    choice = request.tool_choice
    if choice == "none":
        return {"tools": specs} if has_tool_blocks else None
    config: dict[str, Any] = {"tools": specs}
    if choice == "auto":
        config["toolChoice"] = {"auto": {}}
    elif choice == "required":
        config["toolChoice"] = {"any": {}}
    elif isinstance(choice, dict):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if choice.get("type") != "function" or not isinstance(name, str):
            raise InvalidRequestError("tool_choice must name a function.", param="tool_choice")
        config["toolChoice"] = {"tool": {"name": name}}
    elif choice is not None:
        raise InvalidRequestError(f"Unknown tool_choice '{choice}'.", param="tool_choice")
    return config


def _output_config(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    if not response_format:
        return None
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        raise InvalidRequestError(
            "Bedrock has no schema-less JSON mode; use response_format "
            '{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}.',
            param="response_format",
            code="unsupported_response_format",
        )
    if kind != "json_schema":
        raise InvalidRequestError(f"Unknown response_format type '{kind}'.", param="response_format")
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(spec, dict) or not isinstance(schema, dict):
        raise InvalidRequestError(
            "response_format.json_schema needs a 'schema' object.", param="response_format.json_schema"
        )
    definition: dict[str, Any] = {"schema": _encode_json(schema), "name": spec.get("name") or "response"}
    if isinstance(description := spec.get("description"), str) and description:
        definition["description"] = description
    return {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": definition}}}


def finish_reason(stop_reason: Any) -> str:
    """Converse's ``stopReason`` as OpenAI's ``finish_reason`` (anything unknown is ``stop``)."""
    return _FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def usage_from_bedrock(usage: Any) -> Usage | None:
    """Converse's ``usage`` as Tollgate's, or None when there is none.

    Bedrock's ``inputTokens`` leaves out the prompt tokens read from or written to the cache;
    OpenAI's ``prompt_tokens`` includes them, with the cached ones in its details.
    """
    if not isinstance(usage, Mapping) or not ("inputTokens" in usage or "outputTokens" in usage):
        return None
    read = _tokens(usage.get("cacheReadInputTokens"))
    written = _tokens(usage.get("cacheWriteInputTokens"))
    return Usage(
        prompt_tokens=_tokens(usage.get("inputTokens")) + read + written,
        completion_tokens=_tokens(usage.get("outputTokens")),
        cached_tokens=read,
        cache_write_tokens=written,
    )


def _tokens(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _estimate(request: ChatRequest, texts: list[str]) -> Usage:
    return Usage(
        prompt_tokens=estimate_prompt_tokens(request),
        completion_tokens=estimate_tokens("".join(texts)),
        source="estimated",
    )


def _completion_id(request_id: Any) -> str:
    """``chatcmpl-`` and Bedrock's request id (so a completion can be traced in AWS), or a new id."""
    if isinstance(request_id, str) and 0 < len(request_id) <= 128 and request_id.isprintable():
        return f"chatcmpl-{request_id}"
    return f"chatcmpl-{uuid.uuid4().hex}"


def _request_id(response: Mapping[str, Any]) -> Any:
    metadata = response.get("ResponseMetadata")
    return metadata.get("RequestId") if isinstance(metadata, Mapping) else None


def parse_converse_response(response: Mapping[str, Any], request: ChatRequest) -> ChatResult:
    """A Converse answer as an OpenAI ``chat.completion`` under the public model name.

    Usage comes from the answer; when it is missing it is estimated and labelled so.
    """
    output = response.get("output")
    message = output.get("message") if isinstance(output, Mapping) else None
    content = message.get("content") if isinstance(message, Mapping) else None
    if not isinstance(content, list):
        raise UpstreamError("The provider's answer is not a Converse message.")
    texts: list[str] = []
    reasoning: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for block in content:
        if not isinstance(block, Mapping):
            continue
        if isinstance(text := block.get("text"), str):
            texts.append(text)
        elif isinstance(thought := block.get("reasoningContent"), Mapping):
            reasoning_text = thought.get("reasoningText")
            if isinstance(reasoning_text, Mapping) and isinstance(reasoning_text.get("text"), str):
                reasoning.append(reasoning_text["text"])
        elif isinstance(tool := block.get("toolUse"), Mapping):
            tool_calls.append(
                {
                    "id": tool.get("toolUseId"),
                    "type": "function",
                    "function": {"name": tool.get("name"), "arguments": _encode_json(tool.get("input", {}))},
                }
            )
    reply: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not tool_calls else None,
    }
    if reasoning:
        reply["reasoning_content"] = "".join(reasoning)
    if tool_calls:
        reply["tool_calls"] = tool_calls
    usage = usage_from_bedrock(response.get("usage"))
    if usage is None:
        arguments = [call["function"]["arguments"] for call in tool_calls]
        usage = _estimate(request, [*reasoning, *texts, *arguments])
    completion: ChatChunk = {
        "id": _completion_id(_request_id(response)),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.model,
        "choices": [
            {
                "index": 0,
                "message": reply,
                "logprobs": None,
                "finish_reason": finish_reason(response.get("stopReason")),
            }
        ],
        "usage": usage.to_openai(),
    }
    return ChatResult(completion=completion, usage=usage)


class ConverseStreamTranslator:
    """ConverseStream events → OpenAI ``chat.completion.chunk`` dicts, for one stream. Pure: no I/O.

    ``translate`` returns the chunk for an event (or None); ``final_chunk`` is the closing
    ``choices: []`` chunk with the ``metadata`` event's usage, or an estimate marked with
    ``USAGE_SOURCE_MARKER`` when the stream carried none.
    """

    def __init__(self, request: ChatRequest, *, completion_id: str | None = None) -> None:
        self._request = request
        self._id = completion_id or _completion_id(None)
        self._created = int(time.time())
        self._tool_indexes: dict[int, int] = {}  # contentBlockIndex → index in tool_calls
        self._texts: list[str] = []
        self._usage: Usage | None = None
        self._started = False
        #: Whether ``messageStop`` arrived: a stream that ends without it ended early.
        self.finished = False

    def translate(self, event: Mapping[str, Any]) -> ChatChunk | None:
        if "contentBlockDelta" in event:
            return self._delta(event["contentBlockDelta"])
        if "messageStart" in event:
            return self._chunk({}, None)
        if "contentBlockStart" in event:
            return self._block_start(event["contentBlockStart"])
        if "messageStop" in event:
            self.finished = True
            stop = event["messageStop"]
            return self._chunk(
                {}, finish_reason(stop.get("stopReason") if isinstance(stop, Mapping) else None)
            )
        if "metadata" in event:
            metadata = event["metadata"]
            usage = usage_from_bedrock(metadata.get("usage")) if isinstance(metadata, Mapping) else None
            self._usage = usage or self._usage
        return None  # contentBlockStop, and events Tollgate does not use

    def final_chunk(self) -> ChatChunk:
        final = self._frame()
        final["choices"] = []
        if self._usage is not None:
            final["usage"] = self._usage.to_openai()
        else:
            final["usage"] = _estimate(self._request, self._texts).to_openai()
            final[USAGE_SOURCE_MARKER] = "estimated"
        return final

    def _frame(self) -> ChatChunk:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._request.model,
        }

    def _chunk(self, delta: dict[str, Any], finish: str | None) -> ChatChunk:
        if not self._started:  # the first chunk carries the role, whatever event it came from
            self._started = True
            delta = {"role": "assistant", "content": "", **delta}
        chunk = self._frame()
        chunk["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        return chunk

    def _tool_index(self, block: Any) -> int:
        block_index = block if isinstance(block, int) else -1
        if block_index not in self._tool_indexes:
            self._tool_indexes[block_index] = len(self._tool_indexes)
        return self._tool_indexes[block_index]

    def _block_start(self, start_event: Any) -> ChatChunk | None:
        start = start_event.get("start") if isinstance(start_event, Mapping) else None
        tool = start.get("toolUse") if isinstance(start, Mapping) else None
        if not isinstance(tool, Mapping):
            return None
        call = {
            "index": self._tool_index(start_event.get("contentBlockIndex")),
            "id": tool.get("toolUseId"),
            "type": "function",
            "function": {"name": tool.get("name"), "arguments": ""},
        }
        return self._chunk({"tool_calls": [call]}, None)

    def _delta(self, delta_event: Any) -> ChatChunk | None:
        delta = delta_event.get("delta") if isinstance(delta_event, Mapping) else None
        if not isinstance(delta, Mapping):
            return None
        if isinstance(text := delta.get("text"), str):
            self._texts.append(text)
            return self._chunk({"content": text}, None)
        if isinstance(tool := delta.get("toolUse"), Mapping):
            arguments = tool.get("input")
            if not isinstance(arguments, str):
                return None
            self._texts.append(arguments)
            call = {
                "index": self._tool_index(delta_event.get("contentBlockIndex")),
                "function": {"arguments": arguments},
            }
            return self._chunk({"tool_calls": [call]}, None)
        if isinstance(thought := delta.get("reasoningContent"), Mapping):
            reasoning = thought.get("text")
            if isinstance(reasoning, str) and reasoning:
                self._texts.append(reasoning)
                return self._chunk({"reasoning_content": reasoning}, None)
        return None  # signatures and redacted reasoning have no OpenAI equivalent


# -- Embeddings and images translation (pure) --------------------------------------------------


def _model_family(model_id: str) -> str:
    """The model id without an ARN path or a cross-region prefix (``us.``, ``eu.``, ``global.``...)."""
    base = model_id.rsplit("/", 1)[-1]
    head, dot, rest = base.partition(".")
    return rest if dot and head not in ("amazon", "cohere") and "." in rest else base


def embedding_family(model_id: str) -> EmbeddingFamily:
    family = _model_family(model_id)
    if family.startswith("amazon.titan-embed"):
        return "titan"
    if family.startswith("cohere.embed"):
        return "cohere"
    raise InvalidRequestError(
        f"Bedrock model '{model_id}' is not a supported embedding model "
        "(amazon.titan-embed*, cohere.embed*).",
        param="model",
        code="unsupported_model",
    )


def embedding_bodies(request: EmbeddingRequest, upstream_model: str) -> list[dict[str, Any]]:
    """The InvokeModel bodies for an embeddings request: one per text for Titan, one per 96 texts
    for Cohere (``input_type``, an extra field, defaults to ``search_document``).
    """
    family = embedding_family(upstream_model)
    items = [request.input] if isinstance(request.input, str) else list(request.input)
    if not all(isinstance(item, str) for item in items):
        raise InvalidRequestError("Bedrock embedding models take text, not token ids.", param="input")
    texts: list[str] = [item for item in items if isinstance(item, str)]
    if family == "titan":
        model = _model_family(upstream_model)
        bodies = []
        for text in texts:
            body: dict[str, Any] = {"inputText": text}
            if request.dimensions is not None:
                if model.startswith("amazon.titan-embed-image"):
                    body["embeddingConfig"] = {"outputEmbeddingLength": request.dimensions}
                else:
                    body["dimensions"] = request.dimensions
            if model.startswith("amazon.titan-embed-text-v2"):
                body["normalize"] = True
            bodies.append(body)
        return bodies
    input_type = (request.model_extra or {}).get("input_type", "search_document")
    if not isinstance(input_type, str):
        raise InvalidRequestError("input_type must be a string.", param="input_type")
    bodies = []
    for start in range(0, len(texts), COHERE_BATCH):
        body = {"texts": texts[start : start + COHERE_BATCH], "input_type": input_type}
        if request.dimensions is not None:
            body["output_dimension"] = request.dimensions
        bodies.append(body)
    return bodies


def parse_embedding_answers(
    answers: list[tuple[Any, Mapping[str, str]]], request: EmbeddingRequest, upstream_model: str
) -> EmbeddingResult:
    """InvokeModel answers (decoded body, HTTP headers), in request order, as OpenAI's ``list``.

    Usage: Titan's ``inputTextTokenCount``, else Bedrock's ``x-amzn-bedrock-input-token-count``
    header; when any answer has neither, the whole request is estimated and labelled so.
    """
    family = embedding_family(upstream_model)
    vectors: list[list[float]] = []
    counts: list[int | None] = []
    for body, headers in answers:
        if not isinstance(body, Mapping):
            raise UpstreamError("The provider's answer is not an embeddings object.")
        found: Any
        if family == "titan":
            found = [body.get("embedding")]
            count = body.get("inputTextTokenCount")
        else:
            embeddings = body.get("embeddings")
            found = embeddings.get("float") if isinstance(embeddings, Mapping) else embeddings
            count = None
        if not isinstance(found, list) or not all(_is_vector(vector) for vector in found):
            raise UpstreamError("The provider's answer is not an embeddings object.")
        vectors.extend(found)
        if not (isinstance(count, int) and not isinstance(count, bool)):
            count = _header_count(headers, "x-amzn-bedrock-input-token-count")
        counts.append(count)
    texts = request.texts()
    if len(vectors) != len(texts):
        raise UpstreamError("The provider answered with a different number of embeddings.")
    if all(count is not None for count in counts):
        usage = Usage(prompt_tokens=sum(count or 0 for count in counts), completion_tokens=0)
    else:
        usage = Usage(
            prompt_tokens=sum(estimate_tokens(t) for t in texts), completion_tokens=0, source="estimated"
        )
    as_base64 = request.encoding_format == "base64"
    data = [
        {"object": "embedding", "index": index, "embedding": _base64_vector(vector) if as_base64 else vector}
        for index, vector in enumerate(vectors)
    ]
    body = {
        "object": "list",
        "data": data,
        "model": request.model,
        "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.prompt_tokens},
    }
    return EmbeddingResult(body=body, usage=usage)


def _is_vector(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(x, int | float) and not isinstance(x, bool) for x in value
    )


def _base64_vector(vector: list[float]) -> str:
    """OpenAI's ``encoding_format: base64``: little-endian float32s, base64-encoded."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def _header_count(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    return int(value) if isinstance(value, str) and value.isdigit() else None


def is_image_model(model_id: str) -> bool:
    return _model_family(model_id).startswith(("amazon.nova-canvas", "amazon.titan-image"))


def build_image_body(request: ImageRequest, upstream_model: str) -> dict[str, Any]:
    """The InvokeModel body (``TEXT_IMAGE``) of Amazon Nova Canvas and Titan Image Generator.

    ``size`` ``WxH`` → ``width``/``height`` (1024x1024 by default); ``n`` → ``numberOfImages``;
    ``quality`` ``hd``/``high`` → ``premium``; the extra field ``negative_prompt`` →
    ``negativeText``. Bedrock returns image data only, so ``response_format: url`` is a 400.
    """
    if not is_image_model(upstream_model):
        raise InvalidRequestError(
            f"Bedrock model '{upstream_model}' is not a supported image model "
            "(amazon.nova-canvas*, amazon.titan-image*).",
            param="model",
            code="unsupported_model",
        )
    if request.response_format == "url":
        raise InvalidRequestError(
            "Bedrock returns image data only; use response_format 'b64_json'.", param="response_format"
        )
    width, height = _image_size(request.size)
    config: dict[str, Any] = {"numberOfImages": request.n, "width": width, "height": height}
    if request.quality is not None and request.quality != "auto":
        quality = _IMAGE_QUALITY.get(request.quality)
        if quality is None:
            raise InvalidRequestError(f"Unknown image quality '{request.quality}'.", param="quality")
        config["quality"] = quality
    params: dict[str, Any] = {"text": request.prompt}
    negative = (request.model_extra or {}).get("negative_prompt")
    if negative is not None:
        if not isinstance(negative, str) or not negative:
            raise InvalidRequestError("negative_prompt must be a non-empty string.", param="negative_prompt")
        params["negativeText"] = negative
    return {"taskType": "TEXT_IMAGE", "textToImageParams": params, "imageGenerationConfig": config}


def _image_size(size: str | None) -> tuple[int, int]:
    if size is None or size == "auto":
        return 1024, 1024
    match = _IMAGE_SIZE.fullmatch(size)
    width, height = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    if not (0 < width <= _MAX_IMAGE_SIDE and 0 < height <= _MAX_IMAGE_SIDE):
        raise InvalidRequestError(
            f"size must be WIDTHxHEIGHT, each side at most {_MAX_IMAGE_SIDE}, such as 1024x1024.",
            param="size",
        )
    return width, height


def parse_image_answer(body: Any) -> ImageResult:
    """A Nova Canvas / Titan Image answer (``{"images": [base64...]}``) as OpenAI's images body."""
    if isinstance(body, Mapping) and isinstance(error := body.get("error"), str) and error:
        raise UpstreamRejectedError(_clean(error), status=400, code="content_filter")
    images = body.get("images") if isinstance(body, Mapping) else None
    if not isinstance(images, list) or not images or not all(isinstance(image, str) for image in images):
        raise UpstreamError("The provider's answer is not an images response.")
    data = [{"b64_json": image} for image in images]
    return ImageResult(body={"created": int(time.time()), "data": data}, images=len(data))


# -- Errors ------------------------------------------------------------------------------------

_RATE_LIMITED: Final = frozenset(
    {"throttlingexception", "servicequotaexceededexception", "toomanyrequestsexception"}
)
_AUTH_FAILED: Final = frozenset(
    {
        "accessdeniedexception",
        "unrecognizedclientexception",
        "expiredtokenexception",
        "expiredtoken",
        "invalidsignatureexception",
        "signaturedoesnotmatch",
        "incompletesignature",
        "incompletesignatureexception",
        "missingauthenticationtokenexception",
        "invalidclienttokenid",
        "unauthorizedexception",
    }
)
_FAILED: Final = frozenset(
    {
        "modelnotreadyexception",
        "serviceunavailableexception",
        "serviceunavailable",
        "internalserverexception",
        "internalfailure",
        "modelerrorexception",
        "modelstreamerrorexception",
    }
)


def translate_bedrock_error(exc: BaseException, provider: str) -> TollgateError:
    """A failed Bedrock call as Tollgate's error.

    AWS's own message is passed on only when the request itself was refused
    (``ValidationException`` 400, ``ResourceNotFoundException`` 404), truncated and with anything
    credential-like removed. A refusal of Tollgate's AWS credentials is a gateway failure (502),
    never the caller's key. Transport messages are never passed on: they name hosts and ports.
    """
    if isinstance(exc, TollgateError):
        return exc
    from botocore import exceptions as boto

    if isinstance(exc, boto.ClientError):
        return _client_error(exc, provider)
    import urllib3.exceptions as http

    # botocore raises its own ReadTimeoutError for a call; a stream being read raises urllib3's.
    if isinstance(exc, boto.ReadTimeoutError | http.ReadTimeoutError):
        return UpstreamTimeoutError(f"The provider '{provider}' did not answer in time.")
    if isinstance(exc, boto.ParamValidationError):
        return InvalidRequestError(_clean(str(exc)), code="invalid_bedrock_request")
    if isinstance(exc, boto.NoRegionError):
        return ServiceUnavailableError(
            f"Provider '{provider}' has no AWS region; set its region or AWS_REGION.",
            code="upstream_not_configured",
        )
    if isinstance(
        exc,
        boto.NoCredentialsError
        | boto.PartialCredentialsError
        | boto.CredentialRetrievalError
        | boto.TokenRetrievalError,
    ):
        return UpstreamError(
            f"Tollgate has no usable AWS credentials for '{provider}'.", code="upstream_auth_failed"
        )
    if isinstance(exc, boto.ConnectionError) and not isinstance(exc, boto.ConnectionClosedError):
        return UpstreamError(
            f"Tollgate could not connect to the provider '{provider}'.", code="upstream_unreachable"
        )
    if isinstance(exc, http.HTTPError | boto.HTTPClientError | ConnectionError):
        return UpstreamError(
            f"The connection to the provider '{provider}' was lost mid-response.",
            code="upstream_disconnected",
        )
    return UpstreamError(f"The provider '{provider}' sent an answer Tollgate could not read.")


def _client_error(exc: Any, provider: str) -> TollgateError:
    error = exc.response.get("Error") or {}
    code = str(error.get("Code") or "")
    message = error.get("Message")
    key = code.lower()
    if key in _RATE_LIMITED:
        return RateLimitError(
            f"The provider '{provider}' is rate limiting requests; retry later.", code="upstream_rate_limited"
        )
    if key in _AUTH_FAILED:
        return UpstreamError(
            f"The provider rejected Tollgate's credentials for '{provider}' ({_safe_code(code)}).",
            code="upstream_auth_failed",
        )
    if key == "validationexception":
        return UpstreamRejectedError(_passed_on(message, provider, 400), status=400)
    if key == "resourcenotfoundexception":
        return UpstreamRejectedError(_passed_on(message, provider, 404), status=404)
    if key == "modeltimeoutexception":
        return UpstreamTimeoutError(f"The provider '{provider}' timed out while running the model.")
    if key in _FAILED:
        return UpstreamError(f"The provider '{provider}' failed ({_safe_code(code)}).")
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if status in (401, 403):
        return UpstreamError(
            f"The provider rejected Tollgate's credentials for '{provider}'.", code="upstream_auth_failed"
        )
    if status == 429:
        return RateLimitError(
            f"The provider '{provider}' is rate limiting requests; retry later.", code="upstream_rate_limited"
        )
    return UpstreamError(f"The provider '{provider}' failed ({_safe_code(code) or f'HTTP {status}'}).")


def _safe_code(code: str) -> str:
    return code if len(code) <= 64 and code.replace("_", "").isalnum() else "error"


def _passed_on(message: Any, provider: str, status: int) -> str:
    if isinstance(message, str) and message.strip():
        return _clean(message)
    return f"The provider '{provider}' rejected the request (HTTP {status})."


def _clean(text: str) -> str:
    text = _SECRET_PATTERNS.sub("[redacted]", text)
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"


# -- Transport ---------------------------------------------------------------------------------

_session_lock = threading.Lock()
_session: Any = None


def _botocore_session() -> Any:
    """One botocore session per process, so service models load once; creating clients from it
    is not thread-safe, so callers hold ``_session_lock``.
    """
    global _session
    if _session is None:
        import botocore.session

        _session = botocore.session.get_session()
    return _session


def _default_url_check(url: str) -> None:
    """The least any endpoint must pass: no metadata or link-local addresses, no credentials."""
    from tollgate.providers.http import check_upstream_url

    check_upstream_url(url, allow_loopback=True, allow_private=True)


class BedrockProvider:
    """One configured Bedrock provider. Holds no per-request state.

    ``url_check`` re-checks an overridden endpoint before the client is built (the registry can
    pass its ``HttpClient.check_url``); by default only metadata and link-local addresses are refused.
    """

    def __init__(
        self,
        name: str,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 300.0,
        max_pool_connections: int = 64,
        url_check: Callable[[str], None] | None = None,
        address_check: Callable[[str, str], None] | None = None,
    ) -> None:
        self._name = name
        self._region = region
        self._endpoint_url = endpoint_url
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._max_pool_connections = max_pool_connections
        self._url_check = url_check or _default_url_check
        self._address_check = address_check
        self._capabilities = PRESETS["bedrock"].capabilities
        self._client_lock = threading.Lock()
        self._client_instance: Any = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def capabilities(self) -> frozenset[Capability]:
        return self._capabilities

    def __repr__(self) -> str:
        return f"BedrockProvider(name={self._name!r}, region={self._region!r})"

    # -- the client (called on worker threads) -------------------------------------------------

    def _client(self) -> Any:
        client = self._client_instance
        if client is not None:
            return client
        with self._client_lock:
            if self._client_instance is None:
                self._client_instance = self._new_client()
            return self._client_instance

    def _new_client(self) -> Any:
        from botocore.config import Config

        if self._endpoint_url is not None:
            try:
                self._url_check(self._endpoint_url)
            except InvalidRequestError as refused:
                raise UpstreamError(
                    f"The configured address of provider '{self._name}' is not allowed: {refused.message}.",
                    code="upstream_address_forbidden",
                ) from None
        config = Config(
            connect_timeout=self._connect_timeout,
            read_timeout=self._read_timeout,
            # total_max_attempts counts the first attempt ({"max_attempts": 1} would still retry once).
            retries={"mode": "standard", "total_max_attempts": 1},
            max_pool_connections=self._max_pool_connections,
            tcp_keepalive=True,
            user_agent_extra="tollgate",
        )
        with _session_lock:
            client = _botocore_session().create_client(
                "bedrock-runtime", region_name=self._region, endpoint_url=self._endpoint_url, config=config
            )
        if self._endpoint_url is not None and self._address_check is not None:
            # botocore resolves names itself, past the HTTP client's guarded resolver: check what an
            # admin-set endpoint resolves to before each request is sent (botocore follows no redirect).
            address_check = self._address_check

            def check_before_send(request: Any, **_: Any) -> None:
                address_check(request.url, self._name)

            client.meta.events.register("before-send.bedrock-runtime", check_before_send)
        return client

    def _converse(self, kwargs: dict[str, Any]) -> Any:
        return self._client().converse(**kwargs)

    def _converse_stream(self, kwargs: dict[str, Any]) -> Any:
        return self._client().converse_stream(**kwargs)

    def _invoke_model(self, model_id: str, body: dict[str, Any]) -> tuple[Any, Mapping[str, str]]:
        response = self._client().invoke_model(
            modelId=model_id,
            body=_encode_json(body).encode(),
            contentType="application/json",
            accept="application/json",
        )
        raw = response["body"].read()
        headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        try:
            return json.loads(raw), headers
        except (ValueError, UnicodeDecodeError):
            raise UpstreamError(f"The provider '{self._name}' sent a malformed response.") from None

    # -- the Provider protocol -----------------------------------------------------------------

    async def chat(self, request: ChatRequest, upstream_model: str) -> ChatResult:
        kwargs = build_converse_request(request, upstream_model)
        response = await self._call(self._converse, kwargs)
        return parse_converse_response(response, request)

    async def stream(self, request: ChatRequest, upstream_model: str) -> AsyncIterator[ChatChunk]:
        kwargs = build_converse_request(request, upstream_model)
        pump = _EventPump(asyncio.get_running_loop(), lambda: self._converse_stream(kwargs))
        pump.start()
        try:
            kind, value = await pump.get()
            if kind == "error":
                raise translate_bedrock_error(value, self._name)
            translator = ConverseStreamTranslator(request, completion_id=_completion_id(value))
            while True:
                kind, value = await pump.get()
                if kind == "event":
                    chunk = translator.translate(value)
                    if chunk is not None:
                        yield chunk
                elif kind == "end":
                    break
                else:
                    raise translate_bedrock_error(value, self._name)
        finally:
            pump.close()
        if not translator.finished:
            raise UpstreamError(
                f"The provider '{self._name}' stream ended early.", code="upstream_disconnected"
            )
        yield translator.final_chunk()

    async def embed(self, request: EmbeddingRequest, upstream_model: str) -> EmbeddingResult:
        bodies = embedding_bodies(request, upstream_model)
        limit = asyncio.Semaphore(EMBEDDING_CONCURRENCY)

        async def one(body: dict[str, Any]) -> tuple[Any, Mapping[str, str]]:
            async with limit:
                return await self._call(self._invoke_model, upstream_model, body)

        answers = await asyncio.gather(*(one(body) for body in bodies))
        return parse_embedding_answers(list(answers), request, upstream_model)

    async def image(self, request: ImageRequest, upstream_model: str) -> ImageResult:
        body = build_image_body(request, upstream_model)
        answer, _ = await self._call(self._invoke_model, upstream_model, body)
        return parse_image_answer(answer)

    async def _call(self, function: Callable[..., T], *args: Any) -> T:
        """Runs a blocking botocore call on its own daemon thread; its error, translated."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        context = contextvars.copy_context()

        def run() -> None:
            try:
                result = context.run(function, *args)
            except BaseException as exc:  # handed to the loop, which raises it
                _hand_over(loop, future, None, exc)
            else:
                _hand_over(loop, future, result, None)

        threading.Thread(target=run, name=CALL_THREAD_NAME, daemon=True).start()
        try:
            return await future
        except Exception as exc:
            raise translate_bedrock_error(exc, self._name) from None


def _hand_over(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], result: Any, exc: BaseException | None
) -> None:
    def settle() -> None:
        if future.done():  # the caller was cancelled
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)

    with suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
        loop.call_soon_threadsafe(settle)


class _EventPump:
    """Runs one ConverseStream on its own daemon thread and hands its events to the event loop.

    Items are ``("open", request id)``, then ``("event", event)``..., then ``("end", None)``; or
    ``("error", exception)`` at any point. The thread reads at most ``STREAM_BUFFER`` events ahead
    of the consumer, and wakes the loop only when the consumer is waiting for one.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, open_stream: Callable[[], Any]) -> None:
        self._loop = loop
        self._open_stream = open_stream
        self._items: deque[tuple[str, Any]] = deque()
        self._lock = threading.Lock()
        self._waiter: asyncio.Future[None] | None = None
        self._room = threading.Semaphore(STREAM_BUFFER)
        self._closed = False
        self._done = False
        self._stream: Any = None
        self._thread = threading.Thread(target=self._run, name=STREAM_THREAD_NAME, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        stream = None
        try:
            response = self._open_stream()
            stream = response["stream"]
            with self._lock:
                self._stream = stream
                closed = self._closed
            if closed:
                return
            self._push(("open", _request_id(response)))
            for event in stream:
                self._room.acquire()
                if self._closed:
                    return
                self._push(("event", event))
            self._done = True
            self._push(("end", None))
        except BaseException as exc:  # handed to the consumer, which raises it
            if not self._closed:
                self._push(("error", exc))
        finally:
            self._done = True
            if stream is not None:
                with suppress(Exception):
                    stream.close()

    def _push(self, item: tuple[str, Any]) -> None:
        with self._lock:
            self._items.append(item)
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            with suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
                self._loop.call_soon_threadsafe(_wake, waiter)

    async def get(self) -> tuple[str, Any]:
        while True:
            with self._lock:
                if self._items:
                    item = self._items.popleft()
                    break
                waiter = self._waiter = self._loop.create_future()
            await waiter
        if item[0] == "event":
            self._room.release()
        return item

    def close(self) -> None:
        """Stops the thread, without blocking: at once if it waits for room, and mid-read by
        shutting its socket down. The thread closes the stream on its way out.
        """
        with self._lock:
            self._closed = True
            stream = None if self._done else self._stream
        self._room.release()
        if stream is not None:
            _shut_down(stream)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _shut_down(stream: Any) -> None:
    """Wakes a thread blocked reading a botocore ``EventStream``, from another thread.

    Only the socket is shut down (a non-blocking call): closing the stream here would wait for
    the reader's buffer lock, that is for its read to end, up to the read timeout. The reader, woken
    with an error, closes the stream itself. Only a response still holding its connection is
    touched: once urllib3 has read the body to its end, the connection is back in the pool and
    may serve another request.
    """
    raw = getattr(stream, "_raw_stream", None)
    connection = getattr(raw, "connection", None)
    sock = getattr(connection, "sock", None)
    if isinstance(sock, socket.socket):
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
