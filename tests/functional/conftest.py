"""Fixtures for the admin plane's security tests: a local OIDC issuer, an app that trusts it, and
helpers to issue admin keys of each role."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.oidc import LocalIssuer, cognito_settings, local_issuer, oidc_settings


@pytest.fixture
def issuer() -> Iterator[LocalIssuer]:
    with local_issuer() as running:
        yield running


@pytest.fixture
def oidc_services(settings, issuer):  # type: ignore[no-untyped-def]
    """Services whose admin plane also accepts ID tokens from ``issuer`` (over loopback HTTP)."""
    from tollgate.container import Services
    from tollgate.settings import Settings

    return Services(Settings.model_validate({**settings.model_dump(), **oidc_settings(issuer)}))


@pytest.fixture
def oidc_client(oidc_services):  # type: ignore[no-untyped-def]
    from starlette.testclient import TestClient

    from tollgate.api.apps import local_app

    with TestClient(local_app(oidc_services), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def cognito_client(settings, issuer):  # type: ignore[no-untyped-def]
    """The app configured as the CDK stack configures it for its Cognito user pool (``issuer``)."""
    from starlette.testclient import TestClient

    from tollgate.api.apps import local_app
    from tollgate.container import Services
    from tollgate.settings import Settings

    services = Services(Settings.model_validate({**settings.model_dump(), **cognito_settings(issuer)}))
    with TestClient(local_app(services), raise_server_exceptions=False) as test_client:
        yield test_client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def issue_key(client, admin_headers) -> Callable[..., dict[str, Any]]:  # type: ignore[no-untyped-def]
    """``issue_key(name=..., **fields)``: a key issued by the bootstrap owner; returns the 201 body."""

    def issue(headers: dict[str, str] | None = None, **body: Any) -> dict[str, Any]:
        response = client.post("/admin/v1/keys", json={"name": "k", **body}, headers=headers or admin_headers)
        assert response.status_code == 201, response.text
        issued: dict[str, Any] = response.json()
        return issued

    return issue


@pytest.fixture
def make_tenant(client, admin_headers) -> Callable[[str], dict[str, Any]]:  # type: ignore[no-untyped-def]
    def make(tenant_id: str, name: str | None = None) -> dict[str, Any]:
        response = client.post(
            "/admin/v1/tenants",
            json={"id": tenant_id, "name": name or tenant_id.title()},
            headers=admin_headers,
        )
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    return make
