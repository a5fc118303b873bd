"""The ledger's hot path over DynamoDB's JSON API (``tollgate.store.dynamo_http.HttpDynamo``).

Against moto's server on loopback (the real wire protocol: JSON bodies, ``X-Amz-Target``, error
``__type``s), the same ledger operations must behave as they do through boto3: holds are
conditional and idempotent per request, settlement happens once, failures map to the same
exceptions. A small loopback server then checks what moto does not: the SigV4 signature covers
exactly the bytes and headers sent, throttling is retried with a bounded number of attempts, and
exhausted retries fail closed as a 503.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import aiohttp.web
import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.support.records import credit_hold, usage_record
from tollgate.errors import InsufficientCreditsError, ServiceUnavailableError
from tollgate.local.bootstrap import create_table
from tollgate.local.runner import start_moto
from tollgate.store.dynamo_http import HttpDynamo
from tollgate.store.ledger import AccountRef, DynamoLedger, Settlement
from tollgate.store.records import UsageRecord
from tollgate.store.schema import LEDGER, USAGE

CREDENTIALS = {
    "aws_access_key_id": "AKIDLOCAL",
    "aws_secret_access_key": "local-secret",
    "aws_session_token": "tok",
}


@pytest.fixture(scope="module")
def moto_endpoint() -> str:
    return start_moto(0)


@pytest.fixture
def boto_session() -> boto3.session.Session:
    return boto3.session.Session(region_name="us-east-1", **CREDENTIALS)


@pytest.fixture
def ledger(
    moto_endpoint: str, boto_session: boto3.session.Session, request: pytest.FixtureRequest
) -> DynamoLedger:
    client = boto_session.client("dynamodb", endpoint_url=moto_endpoint)
    suffix = request.node.name.replace("[", "-").replace("]", "")[-40:]
    ledger_table, usage_table = f"ledger-{suffix}", f"usage-{suffix}"
    create_table(client, ledger_table, LEDGER)
    create_table(client, usage_table, USAGE)
    return DynamoLedger(
        client,
        ledger_table,
        usage_table=usage_table,
        usage_retention_days=1,
        transport=HttpDynamo(client, boto_session),
    )


def usage(request_id: str) -> UsageRecord:
    return usage_record(request_id, 1_000, model="m", provider=None, latency_ms=3)


async def close(ledger: DynamoLedger) -> None:
    await ledger._transport.close()


def test_holds_are_conditional_and_idempotent_per_request(ledger: DynamoLedger) -> None:
    ledger.credit("acme", 10_000, kind="topup", idempotency_key="t1", now_ms=1)

    async def scenario() -> tuple[int | None, int | None, int | None]:
        try:
            first = await ledger.hold_account_async(
                AccountRef.credits("acme"), credit_hold("r1", 6_000), now_ms=1
            )
            again = await ledger.hold_account_async(
                AccountRef.credits("acme"), credit_hold("r1", 6_000), now_ms=1
            )
            with pytest.raises(InsufficientCreditsError):
                await ledger.hold_account_async(
                    AccountRef.credits("acme"), credit_hold("r2", 6_000), now_ms=1
                )
            third = await ledger.hold_account_async(
                AccountRef.credits("acme"), credit_hold("r3", 4_000), now_ms=1
            )
            return first, again, third
        finally:
            await close(ledger)

    first, again, third = asyncio.run(scenario())

    assert first == 4_000
    assert again == 4_000  # the same request's retry: no second hold
    assert third == 0
    account = ledger.account("acme")
    assert (account.available_micros, account.held_micros) == (0, 10_000)


def test_settlement_happens_once_and_balances(ledger: DynamoLedger) -> None:
    ledger.credit("acme", 10_000, kind="topup", idempotency_key="t1", now_ms=1)
    hold = credit_hold("r1", 6_000)
    settlement = Settlement(hold=hold, charge_micros=2_500, usage=usage("r1"), entry=True)

    async def scenario() -> tuple[bool, bool]:
        try:
            await ledger.hold_account_async(AccountRef.credits("acme"), hold, now_ms=1)
            return await ledger.settle_async(settlement), await ledger.settle_async(settlement)
        finally:
            await close(ledger)

    assert asyncio.run(scenario()) == (True, False)
    account = ledger.account("acme")
    assert (account.available_micros, account.held_micros, account.charged_micros) == (7_500, 0, 2_500)
    assert sum(entry.amount_micros for entry in ledger.all_entries("acme")) == 7_500


def test_concurrent_holds_never_overdraw(ledger: DynamoLedger) -> None:
    ledger.credit("acme", 7_000, kind="topup", idempotency_key="t1", now_ms=1)

    async def scenario() -> list[int | BaseException | None]:
        try:
            holds = [
                ledger.hold_account_async(AccountRef.credits("acme"), credit_hold(f"r{n}", 1_000), now_ms=1)
                for n in range(20)
            ]
            return await asyncio.gather(*holds, return_exceptions=True)
        finally:
            await close(ledger)

    outcomes = asyncio.run(scenario())

    assert sum(not isinstance(outcome, BaseException) for outcome in outcomes) == 7
    assert all(isinstance(o, InsufficientCreditsError) for o in outcomes if isinstance(o, BaseException))
    assert ledger.account("acme").available_micros == 0


def test_a_missing_table_fails_closed(moto_endpoint: str, boto_session: boto3.session.Session) -> None:
    client = boto_session.client("dynamodb", endpoint_url=moto_endpoint)
    ledger = DynamoLedger(
        client,
        "no-such-table",
        usage_table="nor-this",
        usage_retention_days=1,
        transport=HttpDynamo(client, boto_session),
    )

    assert refused_hold(ledger).status == 503


def refused_hold(ledger: DynamoLedger) -> ServiceUnavailableError:
    """Holds a credit through ``ledger`` (then closes it); the hold must be refused with a 503."""

    async def scenario() -> None:
        try:
            await ledger.hold_account_async(AccountRef.credits("acme"), credit_hold("r1", 1), now_ms=1)
        finally:
            await close(ledger)

    with pytest.raises(ServiceUnavailableError) as refused:
        asyncio.run(scenario())
    return refused.value


# -- what moto does not check ------------------------------------------------------------------------


class ScriptedDynamo:
    """A loopback endpoint that verifies each request's SigV4 signature as AWS would (recomputed
    from the received method, URL, headers and body) and answers from a script."""

    def __init__(self, answers: list[tuple[int, dict[str, Any]]]) -> None:
        self.answers = answers
        self.seen: list[dict[str, Any]] = []
        self.bad_signatures = 0
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def handle(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        body = await request.read()
        headers = dict(request.headers)
        self.seen.append({"target": headers.get("X-Amz-Target"), "body": json.loads(body)})
        if not self._signature_ok(request, body):
            self.bad_signatures += 1
            return aiohttp.web.json_response(
                {"__type": "InvalidSignatureException", "message": "bad"}, status=400
            )
        status, answer = self.answers.pop(0) if self.answers else (200, {})
        return aiohttp.web.Response(
            status=status, body=json.dumps(answer), content_type="application/x-amz-json-1.0"
        )

    @staticmethod
    def _signature_ok(request: aiohttp.web.Request, body: bytes) -> bool:
        authorization = request.headers["Authorization"]
        signed = authorization.split("SignedHeaders=")[1].split(",")[0].split(";")
        if not {"host", "x-amz-date", "x-amz-target", "x-amz-security-token"} <= set(signed):
            return False
        replay = AWSRequest(
            method=request.method,
            url=f"http://{request.headers['Host']}{request.path_qs}",
            data=body,
            headers={name: request.headers[name] for name in request.headers if name.lower() in signed},
        )
        credentials = Credentials(
            CREDENTIALS["aws_access_key_id"], CREDENTIALS["aws_secret_access_key"], "tok"
        )
        signer = SigV4Auth(credentials, "dynamodb", "us-east-1")
        replay.context["timestamp"] = request.headers["X-Amz-Date"]
        expected = signer.signature(signer.string_to_sign(replay, signer.canonical_request(replay)), replay)
        return authorization.endswith(f"Signature={expected}")

    def __enter__(self) -> ScriptedDynamo:
        def serve() -> None:
            loop = self._loop = asyncio.new_event_loop()
            app = aiohttp.web.Application()
            app.router.add_post("/", self.handle)
            runner = aiohttp.web.AppRunner(app)
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(aiohttp.web.TCPSite(runner, "127.0.0.1", self.port).start())
            self._ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


@pytest.fixture
def scripted_ledger(boto_session: boto3.session.Session) -> Iterator[tuple[ScriptedDynamo, DynamoLedger]]:
    throttled = (
        400,
        {"__type": "com.amazonaws.dynamodb.v20120810#ThrottlingException", "message": "slow down"},
    )
    with ScriptedDynamo([throttled, throttled]) as server:
        client = boto_session.client("dynamodb", endpoint_url=server.url)
        transport = HttpDynamo(client, boto_session, max_attempts=3, backoff_base=0.001)
        yield server, DynamoLedger(client, "t", usage_table="u", usage_retention_days=1, transport=transport)


def test_requests_are_signed_and_throttling_is_retried(
    scripted_ledger: tuple[ScriptedDynamo, DynamoLedger],
) -> None:
    server, ledger = scripted_ledger
    server.answers.append((200, {"Attributes": {"available": {"N": "42"}}}))  # the balance before

    async def scenario() -> int | None:
        try:
            return await ledger.hold_account_async(AccountRef.credits("acme"), credit_hold("r1", 1), now_ms=1)
        finally:
            await close(ledger)

    assert asyncio.run(scenario()) == 41  # after the hold of 1
    assert server.bad_signatures == 0
    assert [seen["target"] for seen in server.seen] == ["DynamoDB_20120810.UpdateItem"] * 3
    assert server.seen[0]["body"]["ConditionExpression"] == "available >= :w AND attribute_not_exists(#h)"


def test_exhausted_retries_fail_closed(scripted_ledger: tuple[ScriptedDynamo, DynamoLedger]) -> None:
    server, ledger = scripted_ledger
    server.answers.append((500, {"__type": "com.amazonaws.dynamodb.v20120810#InternalServerError"}))

    assert refused_hold(ledger).headers == {"Retry-After": "1"}
    assert len(server.seen) == 3  # the first call and two retries, never more


def test_a_settlement_retry_reuses_its_client_request_token(
    scripted_ledger: tuple[ScriptedDynamo, DynamoLedger],
) -> None:
    server, ledger = scripted_ledger
    settlement = Settlement(hold=credit_hold("r1", 10), charge_micros=5, usage=usage("r1"), entry=True)

    async def scenario() -> bool:
        try:
            return await ledger.settle_async(settlement)
        finally:
            await close(ledger)

    assert asyncio.run(scenario()) is True
    tokens = {seen["body"]["ClientRequestToken"] for seen in server.seen}
    assert len(server.seen) == 3 and len(tokens) == 1  # DynamoDB applies a token's transaction once
    assert all(seen["target"] == "DynamoDB_20120810.TransactWriteItems" for seen in server.seen)
