"""Shared fixtures: moto for AWS, the resources the stack would create, and the apps over them."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

ADMIN_KEY = "tga-test-admin-key-0123456789"
_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """In-process moto: every boto3 client created inside talks to moto's in-memory backends."""
    from moto import mock_aws

    for name, value in _AWS_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    # moto in-process intercepts botocore only: the ledger's hot path goes through boto3 here. The
    # default transport (DynamoDB's JSON API over ``tollgate/http1.py``) is exercised against moto's
    # server by the end-to-end tests and tests/functional/test_dynamo_http.py.
    monkeypatch.setenv("TOLLGATE_LEDGER_TRANSPORT", "boto")
    with mock_aws():
        yield


@pytest.fixture
def settings(aws: None, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    from tollgate.local.bootstrap import bootstrap
    from tollgate.settings import Settings, get_settings

    resources = bootstrap("tollgate-test", admin_key=ADMIN_KEY)
    for name, value in resources.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TOLLGATE_ENABLE_FAKE_PROVIDER", "true")
    monkeypatch.setenv("TOLLGATE_ALLOW_LOOPBACK_UPSTREAMS", "true")
    get_settings.cache_clear()
    yield Settings.from_environment()
    get_settings.cache_clear()


@pytest.fixture
def services(settings):  # type: ignore[no-untyped-def]
    from tollgate.container import Services

    return Services(settings)


@pytest.fixture
def client(services):  # type: ignore[no-untyped-def]
    """The all-in-one local app, driven in-process by Starlette's TestClient."""
    from starlette.testclient import TestClient

    from tollgate.api.apps import local_app

    with TestClient(local_app(services), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
def tenant_key(client, admin_headers) -> str:  # type: ignore[no-untyped-def]
    """A data-plane key of a fresh tenant 'acme', issued through the admin API."""
    created = client.post("/admin/v1/tenants", json={"id": "acme", "name": "Acme"}, headers=admin_headers)
    assert created.status_code == 201, created.text
    issued = client.post("/admin/v1/keys", json={"tenant_id": "acme", "name": "test"}, headers=admin_headers)
    assert issued.status_code == 201, issued.text
    key: str = issued.json()["key"]
    return key


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
