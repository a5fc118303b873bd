"""A pytest plugin that runs the repository's own tests with ``FakeDynamoDB`` in place of moto's
DynamoDB (Secrets Manager and KMS stay on moto). It validates the fake: the ledger, billing and
chat tests exercise every expression form and conditional path Tollgate relies on.

    uv run pytest -p bench.fake_dynamo_plugin tests/functional/test_ledger_faults.py \\
        tests/functional/test_billing.py -q

A test whose tables were not created in the fake fails, so the swap cannot silently not happen.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.fake_dynamo import FakeDynamoDB


@pytest.fixture(autouse=True)
def fake_dynamodb(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDynamoDB]:
    import tollgate.container as container
    import tollgate.local.bootstrap as bootstrap

    fake = FakeDynamoDB()
    real = container.aws_client

    def aws_client(service: str) -> object:
        return fake if service == "dynamodb" else real(service)

    monkeypatch.setattr(container, "aws_client", aws_client)
    monkeypatch.setattr(bootstrap, "aws_client", aws_client)
    yield fake
    if "settings" in request.fixturenames and not fake.table_names():
        pytest.fail("the test bootstrapped Tollgate's tables, but not in the fake DynamoDB")
