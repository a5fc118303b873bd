"""Per-invoke cost of the Mangum path: the gateway function's app (``gateway_app``) under
``Mangum(app, lifespan="off")``, exactly as ``functions/gateway/handler.py`` builds it, fed a
stored API Gateway REST event (``bench/events/apigw_rest_get_models.json``: ``GET /v1/models``
with the bench key), on the in-memory fakes. Prints one JSON line.

    python -m bench.mangum_bench --invokes 3000
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

EVENT = Path(__file__).with_name("events") / "apigw_rest_get_models.json"


class LambdaContext:
    """The attributes Mangum and Powertools read from a Lambda context."""

    function_name = "tollgate-gateway"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:tollgate-gateway"
    memory_limit_in_mb = 1024
    aws_request_id = "bench-request"
    log_group_name = "/aws/lambda/tollgate-gateway"
    log_stream_name = "bench"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 30_000


def measure(invokes: int, warmup: int) -> dict[str, Any]:
    from mangum import Mangum

    from bench.serve import build_services
    from tollgate.api.apps import gateway_app

    services = build_services("http://127.0.0.1:9/v1")
    handler = Mangum(gateway_app(services), lifespan="off")
    event = json.loads(EVENT.read_text())
    context = LambdaContext()
    first = handler(event, context)
    if first["statusCode"] != 200:
        raise SystemExit(f"the stored event did not succeed: {first}")
    models = json.loads(first["body"])["data"]
    for _ in range(warmup):
        handler(event, context)
    dynamodb = services.bench_fakes["dynamodb"]
    before = dynamodb.snapshot()
    samples = []
    for _ in range(invokes):
        started = time.perf_counter()
        response = handler(event, context)
        samples.append(time.perf_counter() - started)
        if response["statusCode"] != 200:
            raise SystemExit(f"an invocation failed: {response}")
    after = dynamodb.snapshot()
    samples.sort()
    calls = {op: (after.get(op, 0) - before.get(op, 0)) / invokes for op in after if ":" not in op}
    return {
        "invokes": invokes,
        "median_us": statistics.median(samples) * 1e6,
        "p90_us": samples[int(0.90 * len(samples))] * 1e6,
        "p99_us": samples[int(0.99 * len(samples))] * 1e6,
        "mean_us": statistics.fmean(samples) * 1e6,
        "models_listed": len(models),
        "dynamodb_calls_per_invoke": {op: n for op, n in calls.items() if n},
    }


def floor(invokes: int, warmup: int) -> dict[str, Any]:
    """The same event through a bare FastAPI app (one route, a static body) under Mangum: what the
    framework and the adapter cost before Tollgate does anything."""
    from fastapi import FastAPI
    from mangum import Mangum

    app = FastAPI()
    body = {
        "object": "list",
        "data": [
            {"id": f"m{name}", "object": "model", "created": 0, "owned_by": "mock"} for name in range(4)
        ],
    }

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return body

    handler = Mangum(app, lifespan="off")
    event = json.loads(EVENT.read_text())
    context = LambdaContext()
    for _ in range(warmup):
        handler(event, context)
    samples = []
    for _ in range(invokes):
        started = time.perf_counter()
        handler(event, context)
        samples.append(time.perf_counter() - started)
    samples.sort()
    return {"median_us": statistics.median(samples) * 1e6, "p99_us": samples[int(0.99 * len(samples))] * 1e6}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invokes", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=300)
    options = parser.parse_args(argv)
    result = measure(options.invokes, options.warmup)
    result["bare_fastapi"] = floor(options.invokes, options.warmup)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
