"""Token estimates, for when a provider gives no usage (a dropped stream, a provider that omits it).

Deliberately simple and deterministic: about four characters per token, at least one per word,
the rule of thumb OpenAI documents for English. An estimate is always labelled as one
(``usage_source = "estimated"`` or ``"partial"``) and is never zero for non-empty text.
"""

from __future__ import annotations

import json

from tollgate.schemas.openai import ChatRequest

#: Tokens each message costs for its role and framing, as in OpenAI's chat format.
MESSAGE_OVERHEAD_TOKENS = 3


def estimate_tokens(text: str) -> int:
    if not text:
        return 0
    return max(len(text.split()), (len(text) + 3) // 4)


def estimate_prompt_tokens(request: ChatRequest) -> int:
    return sum(estimate_tokens(message.text()) + MESSAGE_OVERHEAD_TOKENS for message in request.messages)


#: Tokens an image input may cost at most, for worst-case holds (providers charge ~85 to ~1,600).
IMAGE_TOKEN_BOUND = 2_000


def prompt_token_bound(request: ChatRequest) -> int:
    """An upper bound on the prompt's tokens, for holding the worst case before a request runs.

    Byte-level BPE tokenizers emit at most one token per UTF-8 byte, so the byte count bounds the
    text; each image counts ``IMAGE_TOKEN_BOUND``; tool definitions count their JSON bytes.
    """
    total = 0
    for message in request.messages:
        total += len(message.text().encode()) + MESSAGE_OVERHEAD_TOKENS
        if isinstance(message.content, list):
            total += IMAGE_TOKEN_BOUND * sum(1 for part in message.content if part.type != "text")
        if message.tool_calls:
            total += len(json.dumps(message.tool_calls).encode())
    if request.tools:
        total += len(json.dumps(request.tools).encode())
    return total


def embedding_token_bound(inputs: str | list[str] | list[int] | list[list[int]]) -> int:
    """An upper bound on an embedding request's tokens (token-id inputs count exactly)."""
    if isinstance(inputs, str):
        return max(len(inputs.encode()), 1)
    total = 0
    for item in inputs:
        if isinstance(item, str):
            total += max(len(item.encode()), 1)
        elif isinstance(item, list):
            total += len(item)
        else:
            total += 1
    return total
