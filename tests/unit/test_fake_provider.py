from __future__ import annotations

import asyncio

import pytest

from tollgate.errors import ModelNotFoundError
from tollgate.providers.fake import FakeProvider
from tollgate.schemas.openai import ChatRequest


def request(text: str, **extra: object) -> ChatRequest:
    return ChatRequest.model_validate(
        {"model": "fake/echo", "messages": [{"role": "user", "content": text}], **extra}
    )


async def collect(provider: FakeProvider, chat: ChatRequest) -> list[dict]:  # type: ignore[type-arg]
    return [chunk async for chunk in provider.stream(chat, "echo")]


def test_chat_and_stream_agree():
    provider = FakeProvider()
    chat = request("the same words both ways")

    completion = asyncio.run(provider.chat(chat, "echo")).completion
    chunks = asyncio.run(collect(provider, chat))

    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert streamed == completion["choices"][0]["message"]["content"]
    assert chunks[-1]["usage"] == completion["usage"]


def test_max_tokens_truncates_with_length_finish():
    result = asyncio.run(FakeProvider().chat(request("one two three four five six", max_tokens=3), "echo"))

    assert result.completion["choices"][0]["finish_reason"] == "length"
    assert result.usage.completion_tokens <= 3


def test_unknown_fake_model_is_404():
    with pytest.raises(ModelNotFoundError):
        asyncio.run(FakeProvider().chat(request("x"), "gpt-5"))
