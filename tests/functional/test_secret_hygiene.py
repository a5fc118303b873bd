"""Canary secrets never leak: not into logs, tables, responses or audit entries.

A session exercises the admin and public APIs the way operators and clients do, errors included,
with canary values for every kind of secret: provider credentials (stored, rotated, refused, echoed
back by a misbehaving upstream), hub keys (issued, rotated, revoked, mistyped), the bootstrap admin
key, the hub-key pepper, and an OIDC sign-in token. Then every table is scanned, every captured log
line and every response read, and the audit log listed. A hub key appears exactly once: in the
response that issued it (or rotated it).
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.conftest import ADMIN_KEY
from tests.functional.conftest import bearer
from tests.support.openai_upstream import OpenAIUpstream, UpstreamScript

PROVIDER_KEY = f"sk-canary-provider-{secrets.token_hex(12)}"
ROTATED_PROVIDER_KEY = f"sk-canary-rotated-{secrets.token_hex(12)}"
ECHOED_PROVIDER_KEY = f"sk-canary-echoed-{secrets.token_hex(12)}"


class EchoingUpstream:
    """A provider that puts the credential it was sent into its error message, as some do."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                presented = self.headers.get("Authorization", "")
                body = json.dumps(
                    {
                        "error": {
                            "message": f"Incorrect API key provided: {presented}",
                            "type": "invalid_request_error",
                        }
                    }
                ).encode()
                self.send_response(400)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._server.server_port}/v1"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def echoing() -> Iterator[EchoingUpstream]:
    server = EchoingUpstream()
    yield server
    server.close()


@pytest.fixture
def verbose_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Everything Tollgate logs, at DEBUG. botocore's own DEBUG output prints request parameters (a
    Secrets Manager value among them); Tollgate never turns it on (Lambda logs at INFO), so the AWS
    SDK's loggers stay at INFO here, like in a deployment."""
    from tollgate.observability import logger

    for noisy in ("botocore", "boto3", "urllib3", "moto", "s3transfer"):
        caplog.set_level(logging.INFO, logger=noisy)
    caplog.set_level(logging.DEBUG, logger=logger.name)  # the stdlib logger behind Powertools' Logger
    caplog.set_level(logging.DEBUG)  # last: it also sets the capturing handler's level
    return caplog


def test_canaries_appear_nowhere(  # one session, then every place is searched
    oidc_client, oidc_services, issuer, echoing, verbose_logs, capfd
) -> None:
    client, services = oidc_client, oidc_services
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    responses: list[Any] = []
    issued: dict[str, list[Any]] = {}  # key -> the responses that legitimately showed it

    def call(method: str, path: str, *, issuing: bool = False, **kwargs: Any) -> Any:
        response = client.request(method, path, **kwargs)
        responses.append(response)
        if issuing and response.status_code in (200, 201):
            issued.setdefault(response.json()["key"], []).append(response)
        return response

    from tollgate.observability import logger

    logger.debug("debug-probe")
    with OpenAIUpstream.in_thread(api_key=PROVIDER_KEY, script=UpstreamScript(reply="ok")) as upstream:
        # Providers: stored, refused in bad bodies, rotated, used, failing, echoing.
        call(
            "PUT", "/admin/v1/providers/canary", headers=admin, json={"type": "nope", "api_key": PROVIDER_KEY}
        )
        call(
            "PUT",
            "/admin/v1/providers/canary",
            headers=admin,
            json={"type": "openai", "api_key": PROVIDER_KEY + "\n"},
        )
        call(
            "PUT",
            "/admin/v1/providers/canary",
            headers=admin,
            json={"type": "openai_compatible", "base_url": "http://169.254.169.254", "api_key": PROVIDER_KEY},
        )
        assert (
            call(
                "PUT",
                "/admin/v1/providers/canary",
                headers=admin,
                json={
                    "type": "openai_compatible",
                    "base_url": upstream.base_url,
                    "api_key": ROTATED_PROVIDER_KEY,
                },
            ).status_code
            == 200
        )
        assert (
            call(
                "PUT", "/admin/v1/providers/canary/credential", headers=admin, json={"api_key": PROVIDER_KEY}
            ).status_code
            == 200
        )
        call(
            "PUT",
            "/admin/v1/providers/echo",
            headers=admin,
            json={"type": "openai_compatible", "base_url": echoing.base_url, "api_key": ECHOED_PROVIDER_KEY},
        )
        call("GET", "/admin/v1/providers", headers=admin)
        call("GET", "/admin/v1/providers/canary", headers=admin)

        # Keys: issued, used, rotated with a grace, revoked, mistyped; an admin key; a sign-in token.
        call("POST", "/admin/v1/tenants", headers=admin, json={"id": "acme", "name": "Acme"})
        data_key = call(
            "POST", "/admin/v1/keys", issuing=True, headers=admin, json={"tenant_id": "acme", "name": "d"}
        ).json()
        admin_key = call(
            "POST",
            "/admin/v1/keys",
            issuing=True,
            headers=admin,
            json={"name": "a", "scope": "admin", "role": "admin"},
        ).json()
        messages = [{"role": "user", "content": "hi"}]
        assert (
            call(
                "POST",
                "/v1/chat/completions",
                headers=bearer(data_key["key"]),
                json={"model": "canary/gpt-loopback", "messages": messages},
            ).status_code
            == 200
        )
        call(
            "POST",
            "/v1/chat/completions",
            headers=bearer(data_key["key"]),
            json={"model": "canary/gpt-loopback", "messages": messages, "stream": True},
        )
        call(
            "POST",
            "/v1/chat/completions",
            headers=bearer(data_key["key"]),
            json={"model": "echo/any", "messages": messages},
        )
        upstream.script = UpstreamScript(fail_status=401)
        call(
            "POST",
            "/v1/chat/completions",
            headers=bearer(data_key["key"]),
            json={"model": "canary/gpt-loopback", "messages": messages},
        )
        rotated = call(
            "POST",
            f"/admin/v1/keys/{data_key['id']}/rotate",
            issuing=True,
            headers=bearer(admin_key["key"]),
            json={"grace_seconds": 60},
        ).json()
        call("GET", "/v1/models", headers=bearer(data_key["key"]))  # the old secret, in its grace
        call("DELETE", f"/admin/v1/keys/{data_key['id']}", headers=admin)
        call("GET", "/v1/models", headers=bearer(rotated["key"]))  # revoked now
        call("GET", "/v1/models", headers=bearer(rotated["key"][:-2] + "xx"))  # mistyped
        call("GET", "/admin/v1/tenants", headers=bearer(data_key["key"]))  # the wrong plane
        call("GET", "/v1/models", headers=bearer(admin_key["key"]))  # the wrong plane
        call(
            "GET", "/admin/v1/tenants", headers={"Authorization": f"Bearer {ADMIN_KEY}x"}
        )  # mistyped bootstrap
        token = issuer.token(sub="canary-user", groups=["tollgate-admin"])
        call("GET", "/admin/v1/tenants", headers=bearer(token))
        call("GET", "/admin/v1/tenants", headers=bearer(issuer.token(aud="other", sub="canary-user")))
        call("GET", "/v1/models", headers=bearer(token))
        assert upstream.requests and upstream.requests[0].headers["Authorization"] == f"Bearer {PROVIDER_KEY}"

    audit = call("GET", "/admin/v1/audit?limit=1000", headers=admin).json()["data"]
    assert len(audit) > 10
    pepper = services.secrets.pepper().decode()
    hub_secrets = {key for key in issued} | {key.split("-", 2)[2] for key in issued}
    canaries = {
        "provider key": PROVIDER_KEY,
        "rotated provider key": ROTATED_PROVIDER_KEY,
        "echoed provider key": ECHOED_PROVIDER_KEY,
        "bootstrap admin key": ADMIN_KEY,
        "pepper": pepper,
        "sign-in token": token,
        "sign-in token signature": token.rsplit(".", 1)[1],
        **{f"hub key {n}": value for n, value in enumerate(sorted(hub_secrets))},
    }

    tables = {}
    for name in services.dynamodb.list_tables()["TableNames"]:
        tables[name] = json.dumps(services.dynamodb.scan(TableName=name)["Items"])
    captured = capfd.readouterr()
    logs = (
        captured.out
        + captured.err
        + "\n".join(
            record.getMessage() + json.dumps(record.__dict__, default=str) for record in verbose_logs.records
        )
    )

    assert len(tables) >= 4 and all(tables.values())
    assert "audit entry appended" in logs, "Tollgate's own log lines were captured"
    assert "debug-probe" in logs, "...down to DEBUG"
    leaks: list[str] = []
    for label, value in canaries.items():
        for table, text in tables.items():
            if value in text:
                leaks.append(f"{label} in table {table}")
        if value in logs:
            leaks.append(f"{label} in the logs")
        if value in json.dumps(audit):
            leaks.append(f"{label} in the audit log")
        for response in responses:
            if (
                value in response.text
                and response not in issued.get(value, [])
                and not any(value in key and response in shown for key, shown in issued.items())
            ):
                leaks.append(
                    f"{label} in the response to {response.request.method} {response.request.url.path}"
                )
    assert leaks == []
    # Each hub key was shown exactly once, where it was issued.
    assert all(len(shown) == 1 for shown in issued.values())
