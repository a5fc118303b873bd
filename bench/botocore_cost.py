"""What the fake DynamoDB leaves out: botocore's own CPU per call on Tollgate's hot path.

Tollgate's ledger makes the two calls of a credit-mode request (the hold's ``UpdateItem`` and the
settlement's ``TransactWriteItems``) through a real botocore client whose ``before-send`` hook
answers at once with a canned response: parameter validation, serialisation, SigV4 signing and
response parsing all run, the network does not. The same calls on the in-memory fake are timed
beside it. Prints one JSON line (microseconds per call, median).

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
    from bench.fake_dynamo import FakeDynamoDB, tollgate_sinks
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
        return {
            "hold_update_item_us": statistics.median(hold_times) * 1e6,
            "settle_transact_write_items_us": statistics.median(settle_times) * 1e6,
        }

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

    fake = DynamoLedger(fake_client, "bench-ledger", usage_table="bench-usage", usage_retention_days=90)  # type: ignore[arg-type]
    return {"calls": calls, "botocore": timed(real, lambda: None), "fake": timed(fake, tables)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    options = parser.parse_args(argv)
    print(json.dumps(measure(options.calls)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
