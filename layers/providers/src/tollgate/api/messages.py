"""The Anthropic-compatible data plane: ``POST /v1/messages`` (stream app).

The same chat service as ``/v1/chat/completions``, in Anthropic's wire format: the request is
translated into a chat request, the answer back into a message (or Anthropic's event stream).
Errors on this route are rendered in Anthropic's shape by ``tollgate.api.errors``.
"""

from __future__ import annotations

import json

from starlette.responses import Response

from tollgate.api.caller import Caller
from tollgate.api.public import SSE_HEADERS
from tollgate.api.routes import RouteTable
from tollgate.api.streaming import EventStream
from tollgate.messages import AnthropicStreamEncoder, MessagesRequest, completion_to_message, messages_to_chat
from tollgate.tokens import estimate_prompt_tokens

messages_routes = RouteTable("messages")

_encode_json = json.JSONEncoder(separators=(",", ":")).encode


@messages_routes.post("/v1/messages", operation_id="createMessage", response_model=None)
async def create_message(
    body: MessagesRequest,
    caller: Caller,
) -> Response:
    chat_request = messages_to_chat(body)
    call = await caller.services.chat.begin(
        caller.principal, chat_request, caller.request_id, endpoint="messages", deadline=caller.deadline
    )
    if body.stream:
        encoder = AnthropicStreamEncoder(body.model, input_tokens=estimate_prompt_tokens(chat_request))
        events = await call.open_stream(encoder)
        return EventStream(events, headers=SSE_HEADERS)
    completion = json.loads(await call.complete())
    if call.usage is None:  # complete() always sets it; a guard for the type checker
        raise RuntimeError("a completed chat call has no usage")
    message = completion_to_message(completion, call.usage, body.model)
    return Response(_encode_json(message), media_type="application/json", headers=call.headers())
