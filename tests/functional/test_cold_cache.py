"""A cold process that receives many requests at once reads each key, route and price once.

Concurrent cache misses share one load (``TTLCache.load``); before, each of 100 simultaneous first
requests read the key, the route, the prices and the tenant itself (a thundering herd on DynamoDB
that matters wherever one process serves many requests: ``make dev``, containers).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx

from tollgate.api.apps import local_app
from tollgate.container import Services
from tollgate.store.catalog import DynamoCatalog

CHAT = {"model": "fake/echo", "messages": [{"role": "user", "content": "Hi"}]}


def test_concurrent_first_requests_share_each_lookup(settings, tenant_key, monkeypatch):  # type: ignore[no-untyped-def]
    reads: Counter[str] = Counter()
    for name in ("get_key", "get_route", "prices", "get_tenant", "get_provider"):
        original = getattr(DynamoCatalog, name)

        def counted(self: DynamoCatalog, *args: Any, _name: str = name, _original: Any = original) -> Any:
            reads[_name] += 1
            return _original(self, *args)

        monkeypatch.setattr(DynamoCatalog, name, counted)

    cold = Services(settings)  # a new process: nothing cached

    async def burst() -> list[int]:
        transport = httpx.ASGITransport(app=local_app(cold))
        headers = {"Authorization": f"Bearer {tenant_key}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://tollgate") as http:
            answers = await asyncio.gather(
                *(http.post("/v1/chat/completions", json=CHAT, headers=headers) for _ in range(100))
            )
        await cold.aclose()
        return [answer.status_code for answer in answers]

    assert asyncio.run(burst()) == [200] * 100
    assert reads["get_key"] == 1
    assert all(count <= 1 for count in reads.values()), reads
