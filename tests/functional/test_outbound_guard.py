"""The outbound URL guard, through every path that reaches a provider: the admin API at save time, and
each adapter family (OpenAI-compatible, Anthropic, Gemini, Bedrock) at connect time, after DNS.

Upstreams here are "traps": loopback HTTP servers that record every request they receive, so each
test can assert who was contacted, and that a provider key never reached a host that is not the
provider's (a redirect is refused, never followed).
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.functional.conftest import bearer
from tests.unit.test_url_guard import ALWAYS_REFUSED, LOOPBACK, PRIVATE, StaticResolver
from tollgate.store.records import ProviderRecord

CANARY = "sk-outbound-canary-0123456789abcdef"
#: (provider type, a model of it) for each adapter family that speaks HTTP to an admin-set URL.
FAMILIES = {
    "openai_compatible": "gpt-trap",
    "anthropic": "claude-trap",
    "gemini": "gemini-trap",
    "bedrock": "anthropic.claude-trap",
}
METADATA = ["http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/latest/meta-data/"]


class Trap:
    """A loopback HTTP server that records every request and answers as told (200 ``{}`` by default)."""

    def __init__(self, *, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        trap = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                trap.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                payload = b"{}"
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_port
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def url(self, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}"

    def saw_key(self) -> bool:
        return CANARY in json.dumps([{**r, "body": r["body"].decode("latin-1")} for r in self.requests])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(autouse=True)
def own_botocore_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bedrock's process-wide botocore session caches the credentials it first resolves: give these
    tests their own, so the moto credentials here never reach another test's Bedrock client."""
    from tollgate.providers import bedrock

    monkeypatch.setattr(bedrock, "_session", None)


@pytest.fixture
def trap() -> Iterator[Trap]:
    server = Trap()
    yield server
    server.close()


def strict_services(settings: Any, **http: Any) -> Any:
    """Services as deployed: no loopback, no private upstreams (``http`` overrides its client)."""
    from tollgate.container import Services
    from tollgate.providers.http import HttpClient
    from tollgate.settings import Settings

    strict = Settings.model_validate(
        {**settings.model_dump(), "allow_loopback_upstreams": False, "allow_private_upstreams": False}
    )
    services = Services(strict)
    if http:
        services.__dict__["http"] = HttpClient(allow_loopback=False, allow_private=False, **http)
    return services


def app_client(services: Any) -> Any:
    from starlette.testclient import TestClient

    from tollgate.api.apps import local_app

    return TestClient(local_app(services), raise_server_exceptions=False)


def chat(client: Any, key: str, model: str, **extra: Any) -> Any:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, **extra}
    return client.post("/v1/chat/completions", json=body, headers=bearer(key))


def register(services: Any, name: str, kind: str, base_url: str) -> None:
    """A provider record written straight to the catalog, as if saved under a looser policy."""
    secret_id = services.secrets.put_provider_key(name, CANARY)
    record = ProviderRecord(
        name=name,
        type=kind,
        base_url=base_url,
        region="us-east-1",
        secret_id=secret_id,
        created_at=0,
        updated_at=0,
    )
    services.catalog.put_provider(record)
    services.registry.forget()


# -- at save time -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [*FAMILIES, "ollama"])
def test_refused_base_urls_are_refused_when_saved_for_every_provider_type(
    settings, admin_headers, kind
) -> None:
    with app_client(strict_services(settings)) as client:
        answers = {
            url: client.put(
                "/admin/v1/providers/target",
                json={"type": kind, "base_url": url, "api_key": CANARY, "region": "us-east-1"},
                headers=admin_headers,
            )
            for url in [*ALWAYS_REFUSED, *LOOPBACK, *PRIVATE]
        }
        assert client.get("/admin/v1/providers/target", headers=admin_headers).status_code == 404

    wrong = {url: response.status_code for url, response in answers.items() if response.status_code != 400}
    assert wrong == {}
    assert {response.json()["error"]["param"] for response in answers.values()} == {"base_url"}
    assert not [url for url, response in answers.items() if CANARY in response.text]


@pytest.mark.parametrize("kind", FAMILIES)
def test_metadata_endpoints_are_refused_even_where_loopback_and_private_are_allowed(
    client, admin_headers, kind
) -> None:
    for url in METADATA:
        response = client.put(
            "/admin/v1/providers/target",
            json={"type": kind, "base_url": url, "api_key": CANARY, "region": "us-east-1"},
            headers=admin_headers,
        )
        assert response.status_code == 400, url


def test_local_mode_allows_loopback_for_ollama(client, admin_headers, trap) -> None:
    response = client.put(
        "/admin/v1/providers/ollama",
        json={"type": "ollama", "base_url": f"{trap.url()}/v1"},
        headers=admin_headers,
    )
    assert response.status_code == 200


# -- at connect time --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", FAMILIES)
def test_a_saved_loopback_url_is_refused_when_connecting(settings, tenant_key, trap, kind) -> None:
    services = strict_services(settings)
    register(services, "trapped", kind, trap.url())

    with app_client(services) as client:
        response = chat(client, tenant_key, f"trapped/{FAMILIES[kind]}")

    assert response.status_code == 502, response.text
    assert response.json()["error"]["code"] == "upstream_address_forbidden"
    assert trap.requests == []
    assert CANARY not in response.text


@pytest.mark.parametrize("kind", FAMILIES)
def test_a_name_that_resolves_to_a_forbidden_address_is_refused_when_connecting(
    settings, tenant_key, trap, kind, monkeypatch
) -> None:
    """DNS rebinding: the name passed the save-time check; what it resolves to now is refused."""
    real_getaddrinfo = socket.getaddrinfo

    def rebinding(host: Any, *args: Any, **kwargs: Any) -> Any:  # botocore resolves through this
        return real_getaddrinfo("127.0.0.1" if host == "rebound.example" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    services = strict_services(settings, resolver=StaticResolver("127.0.0.1"))

    with app_client(services) as client:
        saved = client.put(
            "/admin/v1/providers/rebound",
            json={
                "type": kind,
                "base_url": trap.url("rebound.example"),
                "api_key": CANARY,
                "region": "us-east-1",
            },
            headers={"Authorization": "Bearer tga-test-admin-key-0123456789"},
        )
        assert saved.status_code == 200, saved.text
        response = chat(client, tenant_key, f"rebound/{FAMILIES[kind]}")

    assert response.status_code == 502, response.text
    assert response.json()["error"]["code"] == "upstream_address_forbidden"
    assert trap.requests == []


@pytest.mark.parametrize("kind", FAMILIES)
def test_a_redirect_is_refused_and_the_key_never_reaches_another_host(settings, tenant_key, kind) -> None:
    elsewhere = Trap()
    redirecting = Trap(status=307, headers={"Location": f"{elsewhere.url('localhost')}/steal"})
    try:
        from tollgate.container import Services

        services = Services(settings)  # local mode: loopback allowed, so the first hop is reached
        register(services, "redirecting", kind, redirecting.url())
        with app_client(services) as client:
            response = chat(client, tenant_key, f"redirecting/{FAMILIES[kind]}")
    finally:
        elsewhere.close()
        redirecting.close()

    assert response.status_code == 502, response.text
    assert len(redirecting.requests) >= 1  # the provider's own host was asked...
    assert elsewhere.requests == []  # ...and nothing followed it anywhere else
    assert not elsewhere.saw_key()
    assert CANARY not in response.text
    if kind != "bedrock":  # Bedrock signs with the function's AWS credentials, not a stored key
        assert redirecting.saw_key()


def test_clients_can_never_choose_the_upstream(client, admin_headers, tenant_key, trap) -> None:
    from tests.support.openai_upstream import OpenAIUpstream, UpstreamScript

    with OpenAIUpstream.in_thread(
        api_key=CANARY, script=UpstreamScript(reply="from the provider")
    ) as upstream:
        saved = client.put(
            "/admin/v1/providers/real",
            json={"type": "openai_compatible", "base_url": upstream.base_url, "api_key": CANARY},
            headers=admin_headers,
        )
        assert saved.status_code == 200
        attempts = [
            {"api_base": trap.url()},
            {"base_url": trap.url()},
            {"baseURL": trap.url()},
            {"endpoint": trap.url()},
            {"api_base": trap.url(), "extra_headers": {"Host": f"127.0.0.1:{trap.port}"}},
        ]
        answers = [chat(client, tenant_key, "real/gpt-loopback", **attempt) for attempt in attempts]
        headers = {
            **bearer(tenant_key),
            "X-Upstream-Url": trap.url(),
            "X-Forwarded-Host": f"127.0.0.1:{trap.port}",
        }
        body = {"model": "real/gpt-loopback", "messages": [{"role": "user", "content": "hi"}]}
        answers.append(client.post(f"/v1/chat/completions?base_url={trap.url()}", json=body, headers=headers))
        served = len(upstream.requests)

    assert [answer.status_code for answer in answers] == [200] * len(answers)
    assert served == len(answers)  # each went to the configured provider...
    assert trap.requests == []  # ...and never to the client's choice
