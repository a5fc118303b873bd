"""The admin CLI (``tollgate``) against a live local Tollgate: the common operations, end to end."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.live import LiveServer
from tollgate.cli import main

PROVIDER_KEY = "sk-cli-canary-0123456789abcdef"


def tollgate(server: LiveServer, *argv: str, key: str | None = None, stdin: str = "") -> tuple[int, Any, str]:
    """Runs the CLI in-process: (exit status, parsed stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    status = main(
        ["--url", server.base_url, "--key", key or server.admin_key, *argv],
        stdin=io.StringIO(stdin),
        stdout=out,
        stderr=err,
    )
    return status, json.loads(out.getvalue()) if out.getvalue() else None, err.getvalue()


def test_the_cli_is_installed_with_the_project() -> None:
    script = Path(sys.executable).parent / "tollgate"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=False)  # noqa: S603

    assert result.returncode == 0
    for resource in ("providers", "models", "tenants", "keys", "credits", "usage", "audit"):
        assert resource in result.stdout
    assert (Path(sys.executable).parent / "tollgate-dev").exists()


def test_tenants_keys_credits_and_usage(live_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    status, tenant, _ = tollgate(live_server, "tenants", "create", "--id", "cli-co", "--name", "CLI Co")
    assert (status, tenant["id"]) == (0, "cli-co")
    status, key, _ = tollgate(
        live_server,
        "keys",
        "create",
        "--tenant",
        "cli-co",
        "--name",
        "prod",
        "--models",
        "fake/echo",
        "--rpm",
        "100",
    )
    assert status == 0 and key["key"].startswith("tg-") and key["allowed_models"] == ["fake/echo"]
    assert key["limits"]["rpm"] == 100

    import httpx

    chat = {"model": "fake/echo", "messages": [{"role": "user", "content": "via the CLI's key"}]}
    answer = httpx.post(
        f"{live_server.base_url}/v1/chat/completions",
        json=chat,
        headers={"Authorization": f"Bearer {key['key']}"},
    )
    assert answer.status_code == 200

    status, listing, _ = tollgate(live_server, "keys", "list", "--tenant", "cli-co", "--all")
    assert status == 0 and [k["id"] for k in listing["data"]] == [key["id"]]
    status, rotated, _ = tollgate(live_server, "keys", "rotate", key["id"], "--grace-seconds", "60")
    assert status == 0 and rotated["id"] == key["id"] and rotated["key"] != key["key"]
    status, updated, _ = tollgate(
        live_server, "keys", "update", key["id"], "--name", "prod-2", "--all-models", "--budget", "9"
    )
    assert status == 0 and (updated["name"], updated["allowed_models"]) == ("prod-2", None)
    assert updated["budget"] == {"amount": "9.000000", "period": "month"}
    assert updated["limits"]["rpm"] == 100  # left as it was
    status, updated, _ = tollgate(live_server, "keys", "update", key["id"], "--no-budget", "--no-limits")
    assert status == 0 and (updated["budget"], updated["limits"]) == (None, None)
    status, revoked, _ = tollgate(live_server, "keys", "revoke", key["id"])
    assert status == 0 and revoked["revoked_at"] is not None

    status, entry, _ = tollgate(
        live_server, "credits", "grant", "cli-co", "12.5", "--idempotency-key", "cli-1", "--note", "hello"
    )
    assert status == 0 and entry["amount"] == "12.500000"
    status, balance, _ = tollgate(live_server, "credits", "balance", "cli-co")
    assert status == 0 and balance["tenant_id"] == "cli-co"
    status, ledger, _ = tollgate(live_server, "credits", "ledger", "cli-co")
    assert status == 0 and any(item["reference"] for item in ledger["data"])

    status, usage, err = tollgate(live_server, "usage", "--tenant", "cli-co")
    assert status == 0, err
    assert [record["key_id"] for record in usage["data"]] == [key["id"]]


def test_providers_models_and_prices(live_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLI_TEST_PROVIDER_KEY", PROVIDER_KEY)
    status, provider, err = tollgate(
        live_server,
        "providers",
        "put",
        "cli-openai",
        "--type",
        "openai_compatible",
        "--base-url",
        "https://api.example.com/v1",
        "--api-key-env",
        "CLI_TEST_PROVIDER_KEY",
    )
    assert status == 0, err
    assert provider["has_api_key"] and PROVIDER_KEY not in json.dumps(provider)
    status, rotated, _ = tollgate(
        live_server,
        "providers",
        "set-key",
        "cli-openai",
        "--api-key-stdin",
        stdin="sk-cli-rotated-9876543210\n",
    )
    assert status == 0 and rotated["api_key_hint"] == "sk-...3210"
    status, providers, _ = tollgate(live_server, "providers", "list")
    assert status == 0 and "cli-openai" in [p["name"] for p in providers["data"]]

    status, route, _ = tollgate(
        live_server, "models", "put", "team/cli", "--provider", "cli-openai", "--upstream-model", "gpt-x"
    )
    assert status == 0 and route["model"] == "team/cli"
    status, price, err = tollgate(
        live_server,
        "models",
        "set-price",
        "team/cli",
        "--cost",
        "input=0.15,output=0.60",
        "--margin-bps",
        "2500",
    )
    assert status == 0, err
    assert price["sell"]["input"] == "0.187500"
    status, prices, _ = tollgate(live_server, "models", "prices", "team/cli")
    assert status == 0 and len(prices["data"]) == 1
    status, _, _ = tollgate(live_server, "models", "delete", "team/cli")
    assert status == 0


def test_admin_keys_and_the_audit_log(live_server: LiveServer) -> None:
    status, viewer, _ = tollgate(
        live_server, "keys", "create", "--name", "dashboards", "--admin-role", "viewer"
    )
    assert status == 0 and viewer["scope"] == "admin" and viewer["role"] == "viewer"

    status, tenants, _ = tollgate(live_server, "tenants", "list", key=viewer["key"])
    assert status == 0 and tenants["data"] is not None
    status, _, err = tollgate(live_server, "tenants", "create", "--name", "nope", key=viewer["key"])
    assert status == 1 and json.loads(err)["error"]["type"] == "permission_error"

    status, audit, _ = tollgate(live_server, "audit", "list", "--outcome", "denied", "--limit", "5")
    assert status == 0 and audit["data"][0]["actor"] == f"key:{viewer['id']}"
    status, verification, _ = tollgate(live_server, "audit", "verify")
    assert status == 0 and verification["verified"] is True
    status, entry, _ = tollgate(live_server, "audit", "get", str(audit["data"][0]["seq"]))
    assert status == 0 and entry["outcome"] == "denied"


def test_errors_and_misuse(live_server: LiveServer) -> None:
    status, _, err = tollgate(live_server, "keys", "get", "0000000000000000")
    assert status == 1 and json.loads(err)["error"]["type"] == "not_found_error"
    status, _, err = tollgate(live_server, "tenants", "list", key="not-the-admin-key")
    assert status == 1 and json.loads(err)["error"]["type"] == "authentication_error"

    err_stream = io.StringIO()
    assert main(["--url", live_server.base_url, "--key", "", "tenants", "list"], stderr=err_stream) == 2
    assert "TOLLGATE_ADMIN_KEY" in err_stream.getvalue()
    err_stream = io.StringIO()
    assert (
        main(["--url", "http://tollgate.example.com", "--key", "k", "tenants", "list"], stderr=err_stream)
        == 2
    )
    assert "https" in err_stream.getvalue()  # an admin credential never goes over plain http
    status, _, err = tollgate(live_server, "providers", "set-key", "cli-openai")
    assert status == 2 and "--api-key-env" in err
