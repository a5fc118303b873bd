"""What a request's metering costs, apart from the rest of the request: Tollgate's code, then the fake.

One request's metering, as ``ChatService.begin`` and ``ChatCall.complete`` run it (``Meter.admit``
with its price lookup and hold, ``Meter.quote``, ``Meter.settle`` with the
usage record, the settlement transaction and the metrics line), in a tight loop on the event loop,
over the benchmark's services (``bench.serve.build_services``), two ways:

* ``fake``: the ledger's calls go to the in-memory DynamoDB, as in the benchmark's server;
* ``instant``: they go to a transport that answers at once with what DynamoDB answers those two
  calls (the hold's old balance; an empty transaction result), so what remains is Tollgate's own
  code. The difference is the fake's.

Prints one JSON line (microseconds per request, the best of five passes).

    python -m bench.metering_cost --requests 3000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from typing import Any

#: DynamoDB's answer to the hold's ``UpdateItem`` (``UPDATED_OLD``) and to the settlement's
#: ``TransactWriteItems``.
HOLD_ANSWER = {
    "Attributes": {"available": {"N": "1000000000000"}, "held": {"N": "0"}, "updated_at": {"N": "1"}}
}


class InstantTransport:
    """The ledger's transport answering at once: no DynamoDB at all, not even a fake one."""

    async def call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        return HOLD_ANSWER if operation == "UpdateItem" else {}

    async def close(self) -> None:
        return None


async def _per_request(services: Any, requests: int, passes: int) -> float:
    from bench import topology
    from tollgate.billing import Demand
    from tollgate.metering import Meter
    from tollgate.providers.base import Usage

    principal = await services.keys.authenticate(topology.BENCH_KEY)
    usage = Usage(prompt_tokens=14, completion_tokens=9)
    demand = Demand(prompt_tokens=40, output_tokens=topology.MAX_TOKENS)
    deployment = (await services.registry.resolve("bench-l0")).primary
    number = 0

    async def one() -> None:
        nonlocal number
        number += 1
        meter = Meter(
            services.billing, principal, f"req_{number:024x}", model="bench-l0", endpoint="chat.completions"
        )
        meter.deployment = deployment
        await meter.admit(demand)
        bill = meter.quote(usage)
        if meter.admission is None or meter.admission.hold is None:
            raise RuntimeError("the metering loop held nothing: it would measure nothing")
        await meter.settle(status=200, usage=usage, bill=bill)

    for _ in range(max(10, requests // 10)):
        await one()
    best = float("inf")
    for _ in range(passes):
        started = time.perf_counter()
        for _ in range(requests):
            await one()
        best = min(best, (time.perf_counter() - started) / requests * 1e6)
    return best


def measure(requests: int, passes: int = 5) -> dict[str, Any]:
    from bench import serve

    results: dict[str, Any] = {"requests": requests, "passes": passes}
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):  # the EMF lines
        services = serve.build_services("http://127.0.0.1:9/v1")
        results["fake_us"] = asyncio.run(_per_request(services, requests, passes))
        services.ledger._transport = InstantTransport()  # the ledger Services built, given another transport
        results["instant_us"] = asyncio.run(_per_request(services, requests, passes))
    results["fake_share_us"] = results["fake_us"] - results["instant_us"]
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--passes", type=int, default=5)
    options = parser.parse_args(argv)
    print(json.dumps(measure(options.requests, options.passes)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
