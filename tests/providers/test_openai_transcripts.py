"""Recorded streams of the OpenAI-compatible family (tests/providers/transcripts/openai), replayed
byte for byte by the loopback vendor in small pieces (so events split across reads), through the
adapter: what each vendor's quirks become on Tollgate's side.

* ``keep_alive``: DeepSeek's ``: keep-alive`` comments while a request waits, and its usage on
  the finish chunk;
* ``deepseek_reasoning``: ``reasoning_content`` deltas before the answer, reasoning tokens;
* ``openrouter_processing``: ``: OPENROUTER PROCESSING`` comments, the role on every delta, a
  usage chunk with OpenRouter's ``cost``;
* ``no_usage_chunk``: a server that ignores ``stream_options``: no usage at all;
* ``stall``: a stream that stops mid-answer, then silence;
* ``openrouter_error_mid_stream``: an error reported mid-generation as a ``data:`` event.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec

import pytest

from tests.support.openai_upstream import OpenAIUpstream, UpstreamScript
from tollgate.errors import UpstreamError, UpstreamTimeoutError
from tollgate.providers.base import USAGE_SOURCE_MARKER
from tollgate.providers.http import HttpClient
from tollgate.providers.openai_compat import OpenAICompatibleProvider
from tollgate.providers.presets import PRESETS
from tollgate.routing import is_retryable
from tollgate.schemas.openai import ChatChunk, ChatRequest

P = ParamSpec("P")
TRANSCRIPTS = Path(__file__).parent / "transcripts" / "openai"
KEY = "sk-upstream-transcripts"


def async_test(test: Callable[P, Awaitable[None]]) -> Callable[P, None]:
    """Runs an async test in its own event loop (pytest-asyncio is not installed)."""

    @functools.wraps(test)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), timeout=10))

    return run


def transcript(name: str) -> bytes:
    return (TRANSCRIPTS / f"{name}.sse").read_bytes()


def request() -> ChatRequest:
    return ChatRequest.model_validate(
        {"model": "team/chat", "messages": [{"role": "user", "content": "Which is greater, 9.11 or 9.8?"}]}
    )


def text_of(chunks: list[ChatChunk], field_name: str) -> str:
    return "".join(c["choices"][0]["delta"].get(field_name) or "" for c in chunks if c["choices"])


@asynccontextmanager
async def replaying(
    name: str, preset: str, *, piece: int = 7, read_timeout: float = 5.0, stall_at_end: bool = False
) -> AsyncIterator[OpenAICompatibleProvider]:
    script = UpstreamScript(
        transcript=transcript(name), transcript_piece=piece, stall_at_end=stall_at_end, stall_seconds=5
    )
    async with OpenAIUpstream(api_key=KEY, script=script) as upstream:
        http = HttpClient(allow_loopback=True, connect_timeout=2.0, read_timeout=read_timeout)
        try:
            yield OpenAICompatibleProvider(
                preset, PRESETS[preset], upstream.base_url, KEY, http, read_timeout=read_timeout
            )
        finally:
            await http.close()


async def collect(
    provider: OpenAICompatibleProvider, received: list[ChatChunk] | None = None
) -> list[ChatChunk]:
    chunks = received if received is not None else []
    async for chunk in provider.stream(request(), "upstream-model"):
        chunks.append(chunk)
    return chunks


@dataclass(frozen=True)
class Finished:
    """A complete recorded stream and what the adapter must make of it."""

    name: str
    preset: str
    content: str
    #: Chunks with choices the recording holds (comments and the usage chunk are not among them).
    choice_chunks: int
    #: The usage the client gets, exactly (the vendor's extras kept).
    usage: dict[str, Any]
    reasoning: str = ""
    estimated: bool = False
    #: Fields of the vendor's own usage chunk that reach the client unchanged.
    kept: dict[str, Any] = field(default_factory=dict)


FINISHED = [
    Finished(
        "keep_alive",
        "deepseek",
        "Queued for a while, then answered.",
        choice_chunks=5,
        usage={
            "prompt_tokens": 14,
            "completion_tokens": 7,
            "total_tokens": 21,
            "prompt_tokens_details": {"cached_tokens": 0},
            "prompt_cache_hit_tokens": 0,
            "prompt_cache_miss_tokens": 14,
        },
    ),
    Finished(
        "deepseek_reasoning",
        "deepseek",
        "9.8 is greater.",
        reasoning="9.11 has the smaller fraction.",
        choice_chunks=7,
        usage={
            "prompt_tokens": 19,
            "completion_tokens": 42,
            "total_tokens": 61,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 35},
            "prompt_cache_hit_tokens": 0,
            "prompt_cache_miss_tokens": 19,
        },
    ),
    Finished(
        "openrouter_processing",
        "openrouter",
        "Routed through OpenRouter.",
        choice_chunks=4,
        usage={
            "prompt_tokens": 16,
            "completion_tokens": 5,
            "total_tokens": 21,
            "cost": 0.000123,
            "is_byok": False,
            "prompt_tokens_details": {"cached_tokens": 0},
            "cost_details": {"upstream_inference_cost": None},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
        kept={"provider": "Anthropic", "id": "gen-1736300000-Q1w2E3r4T5y6U7i8O9p0"},
    ),
    Finished(
        "no_usage_chunk",
        "openai_compatible",
        "No usage here.",
        choice_chunks=5,
        # Tollgate's estimate: the prompt from the request, the completion from the streamed text.
        usage={"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15},
        estimated=True,
    ),
]


@pytest.mark.parametrize("case", FINISHED, ids=[case.name for case in FINISHED])
@async_test
async def test_a_finished_recording_streams_in_order_with_its_usage_last(case: Finished) -> None:
    async with replaying(case.name, case.preset) as provider:
        chunks = await collect(provider)

    # Comments become nothing; every recorded chunk with choices is passed on, in order.
    assert [bool(c["choices"]) for c in chunks] == [True] * case.choice_chunks + [False]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert text_of(chunks, "content") == case.content
    assert text_of(chunks, "reasoning_content") == case.reasoning
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert [reason for reason in finishes if reason] == ["stop"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    # One usage, last and alone: the vendor's own, or an estimate that says so.
    final = chunks[-1]
    assert final["choices"] == []
    assert final["usage"] == case.usage
    assert final.get(USAGE_SOURCE_MARKER) == ("estimated" if case.estimated else None)
    assert all("usage" not in chunk for chunk in chunks[:-1])
    assert {chunk["model"] for chunk in chunks} == {"team/chat"}
    assert len({chunk["id"] for chunk in chunks}) == 1
    for name, value in case.kept.items():
        assert final[name] == value


@pytest.mark.parametrize("name", [case.name for case in FINISHED])
@async_test
async def test_how_a_recording_is_cut_into_reads_changes_nothing(name: str) -> None:
    preset = next(case.preset for case in FINISHED if case.name == name)
    async with replaying(name, preset, piece=1) as provider:
        bytewise = await collect(provider)
    async with replaying(name, preset, piece=1 << 16) as provider:
        whole = await collect(provider)

    def stable(chunks: list[ChatChunk]) -> list[ChatChunk]:
        return [{k: v for k, v in c.items() if k != "created"} for c in chunks]

    assert stable(bytewise) == stable(whole)


@async_test
async def test_a_recording_that_stops_mid_answer_ends_on_the_idle_timeout() -> None:
    async with replaying("stall", "openai", read_timeout=0.3, stall_at_end=True) as provider:
        started = time.perf_counter()
        received: list[ChatChunk] = []
        with pytest.raises(UpstreamTimeoutError) as caught:
            await collect(provider, received)

    # The keep-alive at the end reset the idle timer once; the silence after it did not.
    assert (caught.value.status, caught.value.code) == (504, "upstream_timeout")
    assert is_retryable(caught.value)
    assert text_of(received, "content") == "Half an"
    assert all("usage" not in chunk for chunk in received)
    assert 0.3 <= time.perf_counter() - started < 2.5


@async_test
async def test_a_recording_cut_without_a_finish_is_a_stream_that_ended_early() -> None:
    async with replaying("stall", "openai") as provider:
        received: list[ChatChunk] = []
        with pytest.raises(UpstreamError, match="ended early") as caught:
            await collect(provider, received)

    assert (caught.value.status, caught.value.code) == (502, "upstream_disconnected")
    assert text_of(received, "content") == "Half an"


@async_test
async def test_an_error_reported_mid_generation_is_an_upstream_error_after_the_text_before_it() -> None:
    async with replaying("openrouter_error_mid_stream", "openrouter") as provider:
        received: list[ChatChunk] = []
        with pytest.raises(
            UpstreamError, match="failed mid-stream: Provider disconnected unexpectedly"
        ) as caught:
            await collect(provider, received)

    assert caught.value.status == 502
    assert text_of(received, "content") == "Started"
    assert KEY not in json.dumps(caught.value.body())
