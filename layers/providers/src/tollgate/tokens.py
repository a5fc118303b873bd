"""Token estimates, for when a provider gives no usage (a dropped stream, a provider that omits it).

Deliberately simple and deterministic: about four characters per token, at least one per word,
the rule of thumb OpenAI documents for English. An estimate is always labelled as one
(``usage_source = "estimated"`` or ``"partial"``) and is never zero for non-empty text.
"""

from __future__ import annotations

from tollgate.schemas.openai import ChatRequest

#: Tokens each message costs for its role and framing, as in OpenAI's chat format.
MESSAGE_OVERHEAD_TOKENS = 3


def estimate_tokens(text: str) -> int:
    if not text:
        return 0
    return max(len(text.split()), (len(text) + 3) // 4)


def estimate_prompt_tokens(request: ChatRequest) -> int:
    return sum(estimate_tokens(message.text()) + MESSAGE_OVERHEAD_TOKENS for message in request.messages)
