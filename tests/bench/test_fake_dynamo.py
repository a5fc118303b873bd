"""The benchmark's in-memory DynamoDB (``bench.fake_dynamo``) answers exactly as moto's DynamoDB.

Tollgate's own code runs a credit-mode scenario on the fake (prices, a tenant, credits, keys with
rate limits, completions and streams, an idempotent replay, refusals for credits and rate limits,
the sweeper); every DynamoDB call it makes is recorded, then replayed against moto, and each answer
(items, returned attributes, error codes, cancellation reasons) and the final tables must match.
"""

from __future__ import annotations

import copy
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from bench import topology
from bench.fake_dynamo import FakeDynamoDB, tollgate_tables
from bench.fake_secrets import FakeSecretsManager

pytestmark = pytest.mark.usefixtures("bench_env")


@pytest.fixture
def bench_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from bench.serve import bench_environment
    from tollgate.settings import get_settings

    for name, value in bench_environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TOLLGATE_ENABLE_FAKE_PROVIDER", "true")
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    monkeypatch.setenv("TOLLGATE_LEDGER_TRANSPORT", "boto")  # every call through the recorded client
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


class Recorder:
    """Wraps a client; records each call, its arguments and its outcome."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.exceptions = inner.exceptions
        self.calls: list[tuple[str, dict[str, Any], str, dict[str, Any]]] = []

    def __getattr__(self, operation: str) -> Any:
        function = getattr(self.inner, operation)

        def call(**arguments: Any) -> Any:
            recorded = copy.deepcopy(arguments)
            try:
                answer = function(**arguments)
            except ClientError as error:
                self.calls.append(
                    (operation, recorded, error.response["Error"]["Code"], copy.deepcopy(error.response))
                )
                raise
            self.calls.append((operation, recorded, "ok", copy.deepcopy(answer)))
            return answer

        return call


def services_on(dynamodb: Any) -> Any:
    from tollgate.container import Services
    from tollgate.settings import Settings
    from tollgate.store.secrets import SecretStore

    settings = Settings.from_environment()
    services = Services(settings)
    services.dynamodb = dynamodb
    services.secrets = SecretStore(
        FakeSecretsManager({settings.pepper_secret: "pepper", settings.admin_key_secret: topology.ADMIN_KEY}),  # type: ignore[arg-type]
        pepper_secret=settings.pepper_secret,
        admin_key_secret=settings.admin_key_secret,
        provider_prefix=settings.provider_secret_prefix,
        kms_key_id=settings.kms_key_id,
        max_age=settings.cache_ttl_seconds,
    )
    return services


def table_names() -> dict[str, str]:
    from tollgate.store.schema import ALL_TABLES

    return {table.logical_name: os.environ[table.env_var] for table in ALL_TABLES}


def run_scenario(services: Any) -> None:
    """Credit mode through the public and admin HTTP APIs, then the sweeper."""
    from starlette.testclient import TestClient

    from tollgate.api.apps import local_app

    admin = {"Authorization": f"Bearer {topology.ADMIN_KEY}"}
    with TestClient(local_app(services), raise_server_exceptions=True) as client:
        price = {"cost": {"input": "1", "output": "2"}, "margin_bps": 5000}
        assert client.put("/admin/v1/models/fake%2Fecho/prices", json=price, headers=admin).status_code < 300
        assert (
            client.post("/admin/v1/tenants", json={"id": "acme", "name": "Acme"}, headers=admin).status_code
            == 201
        )
        credit = {"amount": "0.01", "idempotency_key": "first-topup"}
        assert client.post("/admin/v1/tenants/acme/credits", json=credit, headers=admin).status_code < 300
        assert (
            client.post("/admin/v1/tenants/acme/credits", json=credit, headers=admin).status_code < 300
        )  # replay
        issued = client.post(
            "/admin/v1/keys", json={"tenant_id": "acme", "name": "k", "limits": {"rpm": 6}}, headers=admin
        )
        assert issued.status_code == 201, issued.text
        bearer = {"Authorization": f"Bearer {issued.json()['key']}"}
        body = {
            "model": "fake/echo",
            "messages": [{"role": "user", "content": "one two three"}],
            "max_tokens": 200,
        }
        statuses = [
            client.post("/v1/chat/completions", json=body, headers=bearer).status_code for _ in range(2)
        ]
        stream = {**body, "stream": True, "stream_options": {"include_usage": True}}
        statuses.append(client.post("/v1/chat/completions", json=stream, headers=bearer).status_code)
        replay = {**bearer, "Idempotency-Key": "same-request"}
        statuses += [
            client.post("/v1/chat/completions", json=body, headers=replay).status_code for _ in range(2)
        ]
        huge = {**body, "max_tokens": 100_000}
        statuses.append(client.post("/v1/chat/completions", json=huge, headers=bearer).status_code)  # 402
        statuses += [
            client.post("/v1/chat/completions", json=body, headers=bearer).status_code for _ in range(2)
        ]
        assert 200 in statuses and 402 in statuses and 429 in statuses, statuses
        assert client.get("/admin/v1/tenants/acme/ledger", headers=admin).status_code == 200
    services.billing.sweep(now_ms=2**41)


def normalised(answer: dict[str, Any]) -> dict[str, Any]:
    """The parts of an answer Tollgate reads."""
    keep = {
        key: answer[key]
        for key in ("Item", "Attributes", "Items", "Count", "LastEvaluatedKey")
        if key in answer
    }
    if "CancellationReasons" in answer:
        keep["CancellationReasons"] = [reason.get("Code") for reason in answer["CancellationReasons"]]
    return keep


def scan(client: Any, table: str) -> list[dict[str, Any]]:
    items, arguments = [], {"TableName": table}
    while True:
        page = client.scan(**arguments)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            return sorted(items, key=lambda item: (item["pk"]["S"], item.get("sk", {}).get("S", "")))
        arguments["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def test_every_call_tollgate_makes_is_answered_as_moto_answers_it(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeDynamoDB()
    tollgate_tables(fake, table_names())
    recorder = Recorder(fake)
    run_scenario(services_on(recorder))
    operations = {operation for operation, *_ in recorder.calls}
    assert {"get_item", "put_item", "update_item", "query", "transact_write_items"} <= operations
    assert any(outcome == "ConditionalCheckFailedException" for _, _, outcome, _ in recorder.calls)
    assert any(outcome == "TransactionCanceledException" for _, _, outcome, _ in recorder.calls)

    import boto3
    from moto import mock_aws

    from tollgate.local.bootstrap import create_table
    from tollgate.store.schema import ALL_TABLES

    for name, value in {
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        moto = boto3.client("dynamodb", region_name="us-east-1")
        for table in ALL_TABLES:
            create_table(moto, os.environ[table.env_var], table)
        for index, (operation, arguments, outcome, answer) in enumerate(recorder.calls):
            try:
                expected: dict[str, Any] = getattr(moto, operation)(**arguments)
                expected_outcome = "ok"
            except ClientError as error:
                expected, expected_outcome = error.response, error.response["Error"]["Code"]
            where = f"call {index}: {operation}({arguments})"
            assert outcome == expected_outcome, where
            assert normalised(answer) == normalised(expected), where
        for table in ALL_TABLES:
            name = os.environ[table.env_var]
            assert [dict(item) for item in fake.dump(name)] == scan(moto, name), name


def test_arguments_handed_over_change_no_answer_and_no_item() -> None:
    """``call_inline`` (the benchmark's hot path) stores the caller's values instead of copies: for
    every call of the scenario, in order, it answers and leaves the tables as the copying call does."""
    fake = FakeDynamoDB()
    tollgate_tables(fake, table_names())
    recorder = Recorder(fake)
    run_scenario(services_on(recorder))
    copying, handed = FakeDynamoDB(), FakeDynamoDB()
    for client in (copying, handed):
        tollgate_tables(client, table_names())

    def outcome(call: Any, *arguments: Any, **keywords: Any) -> tuple[str, dict[str, Any]]:
        try:
            return "ok", call(*arguments, **keywords)
        except ClientError as error:
            return error.response["Error"]["Code"], error.response

    for index, (operation, arguments, _, _) in enumerate(recorder.calls):
        by_copy = outcome(getattr(copying, operation), **copy.deepcopy(arguments))
        by_hand = outcome(handed.call_inline, operation, copy.deepcopy(arguments))
        assert by_copy == by_hand, f"call {index}: {operation}"
    for name in table_names().values():
        assert copying.dump(name) == handed.dump(name), name
    assert copying.dump(os.environ["TOLLGATE_USAGE_TABLE"]), "the scenario wrote usage records"


def test_conditional_holds_never_overdraw_under_concurrency() -> None:
    from tests.support.records import credit_hold
    from tollgate.store.ledger import AccountRef, DynamoLedger

    fake = FakeDynamoDB()
    tollgate_tables(fake, table_names())
    ledger = DynamoLedger(
        fake,
        os.environ["TOLLGATE_LEDGER_TABLE"],
        usage_table=os.environ["TOLLGATE_USAGE_TABLE"],
        usage_retention_days=1,
    )  # type: ignore[arg-type]
    ledger.credit("acme", 7_000, kind="topup", idempotency_key="k", now_ms=1)
    admitted: list[str] = []
    refused: list[str] = []
    barrier = threading.Barrier(20)

    def hold(number: int) -> None:
        request = credit_hold(f"r{number}", 1_000)
        barrier.wait()
        try:
            ledger.hold_account(AccountRef.credits("acme"), request, now_ms=1)
            admitted.append(request.request_id)
        except Exception:
            refused.append(request.request_id)

    threads = [threading.Thread(target=hold, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(admitted) == 7 and len(refused) == 13
    assert ledger.account("acme").available_micros == 0


def test_unused_expression_values_are_refused_as_dynamodb_refuses_them() -> None:
    fake = FakeDynamoDB()
    fake.add_table("t", "pk", "sk")
    with pytest.raises(ClientError) as raised:
        fake.update_item(
            TableName="t",
            Key={"pk": {"S": "a"}, "sk": {"S": "b"}},
            UpdateExpression="SET x = :one",
            ExpressionAttributeValues={":one": {"N": "1"}, ":two": {"N": "2"}},
        )
    assert raised.value.response["Error"]["Code"] == "ValidationException"
