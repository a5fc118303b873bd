"""The reference floor: a naive FastAPI + aiohttp pass-through, served exactly like Tollgate
(uvicorn, uvloop, httptools, one worker, no access log). It parses the body, maps the model name,
forwards it with one shared ``aiohttp.ClientSession`` and relays the answer (streams chunk by
chunk). No auth, no metering, no ledger: what any gateway costs before it does anything.

    python -m bench.passthrough --port 8103 --upstream http://127.0.0.1:8100/v1
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse

from bench import topology


def create_app(upstream: str) -> FastAPI:
    app = FastAPI()
    url = f"{upstream.rstrip('/')}/chat/completions"
    headers = {"Authorization": f"Bearer {topology.UPSTREAM_KEY}", "Content-Type": "application/json"}
    state: dict[str, Any] = {}

    def session() -> aiohttp.ClientSession:
        if "session" not in state:
            state["session"] = aiohttp.ClientSession()
        return state["session"]  # type: ignore[no-any-return]

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        payload = json.loads(await request.body())
        payload["model"] = topology.MODELS.get(payload["model"], payload["model"])
        data = json.dumps(payload).encode()
        if payload.get("stream"):
            upstream_response = await session().post(url, data=data, headers=headers)

            async def relay() -> AsyncIterator[bytes]:
                try:
                    async for chunk in upstream_response.content.iter_any():
                        yield chunk
                finally:
                    upstream_response.release()

            return StreamingResponse(relay(), media_type="text/event-stream")
        async with session().post(url, data=data, headers=headers) as upstream_response:
            body = await upstream_response.read()
            return Response(body, status_code=upstream_response.status, media_type="application/json")

    @app.get("/healthz")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    options = parser.parse_args(argv)
    uvicorn.run(
        create_app(options.upstream),
        host="127.0.0.1",
        port=options.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
