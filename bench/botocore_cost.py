"""What the fake DynamoDB leaves out: the DynamoDB client's own CPU per call on the hot path.

Tollgate's ledger makes the two calls of a credit-mode request (the hold's ``UpdateItem`` and the
settlement's ``TransactWriteItems``) three ways, each timed per call (median):

* ``botocore``: through a real boto3 client whose ``before-send`` hook answers at once with a
  canned response (validation, serialisation, SigV4 signing and parsing run; no network). This
  was the hot path until the ledger got its own transport, and is still the sweeper's path.
* ``http``: the transport the request path uses (``tollgate.store.dynamo_http.HttpDynamo``: JSON,
  SigV4, a keep-alive HTTP/1.1 POST) against a loopback endpoint in another process (pinned to the other
  core) that answers at once; ``cpu_us`` is this process's CPU per call, network syscalls included.
  The same endpoint is then called through boto3 (``boto3_over_loopback_*``), as the request path
  did before, for a like-for-like comparison of CPU per call.
* ``fake``: the in-memory fake, the way the benchmark's server calls it: the ledger's event-loop
  methods through ``InlineTransport`` (``call_inline``).

Prints one JSON line (microseconds per call).

    python -m bench.botocore_cost --calls 2000
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body


def botocore_client(answers: dict[str, bytes]) -> Any:
    import boto3
    from botocore.awsrequest import AWSResponse

    client = boto3.session.Session().client(
        "dynamodb",
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        endpoint_url="http://127.0.0.1:9",
    )

    def answer(request: Any, **_: Any) -> AWSResponse:
        target = request.headers.get("X-Amz-Target", b"")
        operation = (target.decode() if isinstance(target, bytes) else target).rsplit(".", 1)[-1]
        headers = {"x-amzn-RequestId": "bench", "Content-Type": "application/x-amz-json-1.0"}
        return AWSResponse(request.url, 200, headers, _Raw(answers.get(operation, b"{}")))

    client.meta.events.register("before-send.dynamodb", answer)
    return client


def measure(calls: int) -> dict[str, Any]:
    from bench.fake_dynamo import FakeDynamoDB, InlineTransport, tollgate_sinks
    from tollgate.store.ledger import AccountRef, DynamoLedger, Hold, Settlement
    from tollgate.store.records import UsageRecord

    def holds() -> Iterator[Hold]:
        number = 0
        while True:
            number += 1
            yield Hold(
                request_id=f"req_{number:024x}",
                tenant_id="bench",
                key_id="0123456789abcdef",
                model="bench-l0",
                amount_micros=70,
                created_at_ms=1_795_000_000_000,
                expires_at_ms=1_795_001_200_000,
                accounts=(AccountRef.credits("bench"),),
                provider="mock",
                upstream_model="lat0",
                cost_micros=12,
            )

    def settlement(hold: Hold) -> Settlement:
        usage = UsageRecord(
            request_id=hold.request_id,
            tenant_id=hold.tenant_id,
            key_id=hold.key_id,
            model=hold.model,
            provider="mock",
            upstream_model="lat0",
            endpoint="chat.completions",
            stream=False,
            status=200,
            prompt_tokens=12,
            completion_tokens=8,
            usage_source="provider",
            latency_ms=1,
            ttfb_ms=1,
            created_at_ms=hold.created_at_ms,
            cost_micros=7,
            charged_micros=9,
        )
        return Settlement(hold=hold, charge_micros=9, usage=usage, entry=True)

    def timed(ledger: DynamoLedger, prepare: Callable[[], None]) -> dict[str, float]:
        prepare()
        source = holds()
        hold_times, settle_times = [], []
        for _ in range(calls):
            hold = next(source)
            started = time.perf_counter()
            ledger.hold_account(hold.accounts[0], hold, now_ms=hold.created_at_ms)
            hold_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            ledger.settle(settlement(hold))
            settle_times.append(time.perf_counter() - started)
        return medians(hold_times, settle_times)

    answers = {"UpdateItem": json.dumps({"Attributes": {"available": {"N": "999999"}}}).encode()}
    real = DynamoLedger(
        botocore_client(answers), "bench-ledger", usage_table="bench-usage", usage_retention_days=90
    )
    fake_client = FakeDynamoDB(sink_rule=tollgate_sinks, sink_limit=1000)

    def tables() -> None:
        fake_client.add_table("bench-ledger", "pk", "sk", [("accounts", "account_shard", "pk")])
        fake_client.add_table("bench-usage", "pk", "sk")
        fake_client.put_item(
            TableName="bench-ledger",
            Item={
                "pk": {"S": "TENANT#bench"},
                "sk": {"S": "ACCOUNT"},
                "available": {"N": str(10**15)},
                "held": {"N": "0"},
                "charged_total": {"N": "0"},
            },
        )

    def timed_on_loop(ledger: DynamoLedger, prepare: Callable[[], None]) -> dict[str, float]:
        """``timed``, through the ledger's event-loop methods, as the server calls them."""
        import asyncio

        prepare()
        return medians(*asyncio.run(timed_async(ledger, holds(), settlement, calls)))

    fake = DynamoLedger(
        fake_client,  # type: ignore[arg-type]
        "bench-ledger",
        usage_table="bench-usage",
        usage_retention_days=90,
        transport=InlineTransport(fake_client),
    )
    return {
        "calls": calls,
        "botocore": timed(real, lambda: None),
        "http": timed_http(calls, holds(), settlement, answers),
        "fake": timed_on_loop(fake, tables),
    }


def medians(hold_times: list[float], settle_times: list[float]) -> dict[str, float]:
    return {
        "hold_update_item_us": statistics.median(hold_times) * 1e6,
        "settle_transact_write_items_us": statistics.median(settle_times) * 1e6,
    }


async def timed_async(
    ledger: Any, source: Iterator[Any], settlement: Callable[[Any], Any], calls: int
) -> tuple[list[float], list[float]]:
    """Each hold's and each settlement's wall time, ``calls`` of each, through the ledger's
    event-loop methods (as the server calls them)."""
    hold_times, settle_times = [], []
    for _ in range(calls):
        hold = next(source)
        started = time.perf_counter()
        await ledger.hold_account_async(hold.accounts[0], hold, now_ms=hold.created_at_ms)
        hold_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        await ledger.settle_async(settlement(hold))
        settle_times.append(time.perf_counter() - started)
    return hold_times, settle_times


def timed_http(
    calls: int, source: Iterator[Any], settlement: Callable[[Any], Any], answers: dict[str, bytes]
) -> dict[str, float]:
    """The hot path's own transport against a loopback endpoint served from another process."""
    import asyncio
    import os
    import socket
    import subprocess

    import boto3

    from bench import topology
    from tollgate.store.dynamo_http import HttpDynamo
    from tollgate.store.ledger import DynamoLedger

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [
            "taskset",
            "-c",
            str(topology.CLIENT_CORE),
            sys.executable,
            "-m",
            "bench.botocore_cost",
            "--serve",
            str(port),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "BENCH_ANSWERS": json.dumps({k: v.decode() for k, v in answers.items()})},
    )
    try:
        assert server.stdout is not None
        server.stdout.readline()  # "ready"
        session = boto3.session.Session(
            aws_access_key_id="bench", aws_secret_access_key="bench", region_name="us-east-1"
        )
        client = session.client("dynamodb", endpoint_url=f"http://127.0.0.1:{port}")
        ledger = DynamoLedger(
            client,
            "bench-ledger",
            usage_table="bench-usage",
            usage_retention_days=90,
            transport=HttpDynamo(client, session),
        )

        async def run() -> dict[str, float]:
            for _ in range(20):  # warm: the connection pool, the signer's caches
                hold = next(source)
                await ledger.hold_account_async(hold.accounts[0], hold, now_ms=hold.created_at_ms)
            cpu_started = time.process_time()
            times = await timed_async(ledger, source, settlement, calls)
            cpu = time.process_time() - cpu_started
            await ledger._transport.close()
            return {**medians(*times), "cpu_us_per_call": cpu / (2 * calls) * 1e6}

        measured = asyncio.run(run())
        # The old path over the same endpoint: boto3 (validation, serialisation, signing, urllib3,
        # parsing) with its network I/O, from a worker thread as the request path used to call it.
        threaded = DynamoLedger(client, "bench-ledger", usage_table="bench-usage", usage_retention_days=90)
        cpu_started = time.process_time()
        boto_times = []
        for _ in range(calls):
            hold = next(source)
            started = time.perf_counter()
            threaded.hold_account(hold.accounts[0], hold, now_ms=hold.created_at_ms)
            threaded.settle(settlement(hold))
            boto_times.append((time.perf_counter() - started) / 2)
        measured["boto3_over_loopback_cpu_us_per_call"] = (
            (time.process_time() - cpu_started) / (2 * calls) * 1e6
        )
        measured["boto3_over_loopback_wall_us_per_call"] = statistics.median(boto_times) * 1e6
        return measured
    finally:
        server.terminate()
        server.wait(10)


def serve(port: int) -> None:
    """A DynamoDB endpoint that answers every call at once from ``BENCH_ANSWERS``."""
    import asyncio
    import os

    from aiohttp import web

    answers = {name: body.encode() for name, body in json.loads(os.environ["BENCH_ANSWERS"]).items()}

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        operation = request.headers.get("X-Amz-Target", "").rsplit(".", 1)[-1]
        return web.Response(body=answers.get(operation, b"{}"), content_type="application/x-amz-json-1.0")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/", answer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        print("ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.serve:
        serve(options.serve)
        return 0
    print(json.dumps(measure(options.calls)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
