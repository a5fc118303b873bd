"""``tollgate``: the admin CLI, for a local (``make dev``) or a deployed Tollgate.

    export TOLLGATE_URL=http://127.0.0.1:8080 TOLLGATE_ADMIN_KEY=tga-...
    tollgate tenants create --id acme --name Acme
    tollgate keys create --tenant acme --name prod --models fake/echo
    tollgate credits grant acme 10 --idempotency-key topup-1
    tollgate providers set-key openai --api-key-env OPENAI_API_KEY
    tollgate audit list --verify

It prints the admin API's JSON; an API error goes to stderr as the API's error object, with exit
status 1 (2 for a usage or connection problem). The credential is an admin key, an OIDC ID token or
the bootstrap key (``--key`` or ``TOLLGATE_ADMIN_KEY``). Provider credentials are read from an
environment variable or stdin, never from the command line, where ``ps`` would show them. Standard
library only (argparse and urllib), so the CLI adds no dependency.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any, TextIO

DEFAULT_URL = "http://127.0.0.1:8080"
TIMEOUT_SECONDS = 60.0
ROLES = ("owner", "admin", "viewer", "tenant_admin")


class CliError(Exception):
    """A problem with the command itself (exit status 2)."""


class ApiError(Exception):
    """The API answered with an error (exit status 1)."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body


class AdminClient:
    """The admin API over urllib: JSON in, JSON out, the credential as a bearer token."""

    def __init__(self, base_url: str, credential: str, *, allow_http: bool = False) -> None:
        base = base_url.rstrip("/").removesuffix("/v1")
        parts = urllib.parse.urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CliError(f"not an http(s) URL: {base_url!r}")
        if parts.scheme == "http" and not allow_http and not _is_loopback(parts.hostname):
            raise CliError(
                "refusing to send an admin credential over plain http; use https (or --allow-http)"
            )
        self.base = base
        self._credential = credential

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, **query: Any) -> Any:
        params = {name: _query_value(value) for name, value in query.items() if value is not None}
        url = f"{self.base}/admin/v1{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)  # noqa: S310  # scheme checked
        request.add_header("Authorization", f"Bearer {self._credential}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310
                raw = response.read()
        except urllib.error.HTTPError as error:
            raise ApiError(error.code, error.read().decode("utf-8", "replace")) from None
        except (urllib.error.URLError, OSError) as error:
            raise CliError(f"cannot reach {self.base}: {getattr(error, 'reason', error)}") from None
        return json.loads(raw) if raw else None

    def pages(self, path: str, *, everything: bool, **query: Any) -> Any:
        """One page, or with ``everything`` every page's ``data`` joined."""
        first = self.call("GET", path, **query)
        if not everything:
            return first
        data = list(first["data"])
        cursor = first.get("next_cursor")
        while cursor:
            page = self.call("GET", path, **{**query, "cursor": cursor})
            data.extend(page["data"])
            cursor = page.get("next_cursor")
        return {"data": data, "next_cursor": None}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _segment(value: str) -> str:
    """A path segment; model names keep their slashes (``/models/{model:path}``)."""
    return urllib.parse.quote(value, safe="/:@+")


def _models(text: str | None) -> list[str] | None:
    return [name.strip() for name in text.split(",") if name.strip()] if text else None


def _prices(text: str | None) -> dict[str, str] | None:
    """``input=0.15,output=0.60`` as a price sheet."""
    if not text:
        return None
    sheet: dict[str, str] = {}
    for pair in text.split(","):
        name, sep, value = pair.partition("=")
        if not sep:
            raise CliError(f"prices are name=value pairs, e.g. input=0.15,output=0.60 (got {pair!r})")
        sheet[name.strip()] = value.strip()
    return sheet


def _secret(args: argparse.Namespace, stdin: TextIO) -> str | None:
    if args.api_key_env:
        value = os.environ.get(args.api_key_env)
        if not value:
            raise CliError(f"environment variable {args.api_key_env} is not set")
        return value
    if args.api_key_stdin:
        value = stdin.readline().strip()
        if not value:
            raise CliError("no API key on stdin")
        return value
    return None


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not None}


# -- commands -----------------------------------------------------------------------------------

Handler = Callable[[AdminClient, argparse.Namespace, TextIO], Any]


def _providers(client: AdminClient, args: argparse.Namespace, stdin: TextIO) -> Any:
    if args.action == "list":
        return client.pages("/providers", everything=args.all, limit=args.limit, cursor=args.cursor)
    path = f"/providers/{_segment(args.name)}"
    if args.action == "get":
        return client.call("GET", path)
    if args.action == "set-key":
        secret = _secret(args, stdin)
        if secret is None:
            raise CliError("give --api-key-env VAR or --api-key-stdin")
        return client.call("PUT", f"{path}/credential", {"api_key": secret})
    body = _drop_none(
        {
            "type": args.type,
            "base_url": args.base_url,
            "region": args.region,
            "timeout_seconds": args.timeout_seconds,
            "api_key": _secret(args, stdin),
            "enabled": not args.disabled,
        }
    )
    return client.call("PUT", path, body)


def _models_command(client: AdminClient, args: argparse.Namespace, stdin: TextIO) -> Any:
    if args.action == "list":
        return client.pages("/models", everything=args.all, limit=args.limit, cursor=args.cursor)
    path = f"/models/{_segment(args.model)}"
    if args.action == "get":
        return client.call("GET", path)
    if args.action == "delete":
        return client.call("DELETE", path)
    if args.action == "put":
        return client.call("PUT", path, {"provider": args.provider, "upstream_model": args.upstream_model})
    if args.action == "prices":
        return client.pages(f"{path}/prices", everything=True)
    body = _drop_none(
        {
            "cost": _prices(args.cost),
            "sell": _prices(args.sell),
            "margin_bps": args.margin_bps,
            "effective_at": args.effective_at,
            "force": args.force or None,
        }
    )
    return client.call("PUT", f"{path}/prices", body)


def _tenants(client: AdminClient, args: argparse.Namespace, stdin: TextIO) -> Any:
    if args.action == "list":
        return client.pages("/tenants", everything=args.all, limit=args.limit, cursor=args.cursor)
    if args.action == "create":
        return client.call("POST", "/tenants", _drop_none({"id": args.id, "name": args.name}))
    path = f"/tenants/{_segment(args.tenant_id)}"
    if args.action == "get":
        return client.call("GET", path)
    return client.call("PATCH", path, _drop_none({"name": args.name}))


def _keys(client: AdminClient, args: argparse.Namespace, stdin: TextIO) -> Any:
    if args.action == "list":
        return client.pages(
            "/keys", everything=args.all, tenant_id=args.tenant, limit=args.limit, cursor=args.cursor
        )
    if args.action == "create":
        limits = _drop_none({"rpm": args.rpm, "tpm": args.tpm, "max_concurrency": args.max_concurrency})
        budget = {"amount": args.budget, "period": args.budget_period} if args.budget else None
        body = _drop_none(
            {
                "tenant_id": args.tenant,
                "name": args.name,
                "scope": "admin" if args.admin_role else None,
                "role": args.admin_role,
                "allowed_models": _models(args.models),
                "expires_at": args.expires_at,
                "budget": budget,
                "limits": limits or None,
            }
        )
        return client.call("POST", "/keys", body)
    path = f"/keys/{_segment(args.key_id)}"
    if args.action == "get":
        return client.call("GET", path)
    if args.action == "revoke":
        return client.call("DELETE", path)
    if args.action == "update":
        return client.call("PATCH", path, _key_changes(args))
    return client.call("POST", f"{path}/rotate", {"grace_seconds": args.grace_seconds})


def _key_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The PATCH body of ``keys update``: options given set a field, ``--no-...`` / ``--all-models``
    remove one (null), and everything else is left out, so it stays as it is."""
    changes: dict[str, Any] = _drop_none(
        {"name": args.name, "allowed_models": _models(args.models), "expires_at": args.expires_at}
    )
    if args.budget:
        changes["budget"] = {"amount": args.budget, "period": args.budget_period}
    limits = _drop_none({"rpm": args.rpm, "tpm": args.tpm, "max_concurrency": args.max_concurrency})
    if limits:
        changes["limits"] = limits
    for flag, name in (
        ("all_models", "allowed_models"),
        ("no_expiry", "expires_at"),
        ("no_budget", "budget"),
        ("no_limits", "limits"),
    ):
        if getattr(args, flag):
            if name in changes:
                raise CliError(f"--{flag.replace('_', '-')} contradicts another option")
            changes[name] = None
    if not changes:
        raise CliError("give at least one change")
    return changes


def _credits(client: AdminClient, args: argparse.Namespace, stdin: TextIO) -> Any:
    path = f"/tenants/{_segment(args.tenant_id)}"
    if args.action == "grant":
        body = _drop_none(
            {
                "amount": args.amount,
                "idempotency_key": args.idempotency_key,
                "kind": args.kind,
                "note": args.note,
            }
        )
        return client.call("POST", f"{path}/credits", body)
    if args.action == "balance":
        return client.call("GET", f"{path}/balance")
    return client.pages(f"{path}/ledger", everything=args.all, limit=args.limit, cursor=args.cursor)


def _usage(client: AdminClient, args: argparse.Namespace, stdin: TextIO) -> Any:
    return client.pages(
        "/usage",
        everything=args.all,
        tenant_id=args.tenant,
        key_id=args.key_id,
        since=args.since,
        until=args.until,
        limit=args.limit,
        cursor=args.cursor,
    )


def _audit(client: AdminClient, args: argparse.Namespace, stdin: TextIO) -> Any:
    if args.action == "get":
        return client.call("GET", f"/audit/{args.seq}")
    if args.action == "verify":
        return client.call("GET", "/audit", limit=1, verify=True)["verification"]
    return client.pages(
        "/audit",
        everything=args.all,
        tenant_id=args.tenant,
        actor=args.actor,
        action=args.event,
        outcome=args.outcome,
        since=args.since,
        until=args.until,
        limit=args.limit,
        cursor=args.cursor,
    )


# -- the parser ---------------------------------------------------------------------------------


def _paging(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=int, default=100, help="items per page (1-1000)")
    parser.add_argument("--cursor", help="the next_cursor of a previous page")
    parser.add_argument("--all", action="store_true", help="follow every page")


def _api_key_source(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--api-key-env", metavar="VAR", help="read the provider's API key from this variable")
    source.add_argument("--api-key-stdin", action="store_true", help="read the provider's API key from stdin")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tollgate",
        description="Tollgate's admin CLI: providers, models, tenants, keys, credits, usage and audit.",
        epilog="Environment: TOLLGATE_URL (default http://127.0.0.1:8080), TOLLGATE_ADMIN_KEY.",
    )
    parser.add_argument(
        "--url", default=os.environ.get("TOLLGATE_URL", DEFAULT_URL), help="Tollgate's base URL"
    )
    parser.add_argument(
        "--key", default=os.environ.get("TOLLGATE_ADMIN_KEY"), help="admin key or OIDC ID token"
    )
    parser.add_argument("--allow-http", action="store_true", help="allow plain http to a non-loopback host")
    resources = parser.add_subparsers(dest="resource", required=True, metavar="RESOURCE")

    providers = resources.add_parser("providers", help="upstream providers (credentials are write-only)")
    actions = providers.add_subparsers(dest="action", required=True)
    _paging(actions.add_parser("list", help="list providers, credentials masked"))
    actions.add_parser("get").add_argument("name")
    put = actions.add_parser("put", help="create or update a provider")
    put.add_argument("name")
    put.add_argument("--type", required=True, help="openai, anthropic, gemini, bedrock, ollama, ...")
    put.add_argument("--base-url")
    put.add_argument("--region")
    put.add_argument("--timeout-seconds", type=int)
    put.add_argument("--disabled", action="store_true")
    _api_key_source(put)
    set_key = actions.add_parser("set-key", help="rotate a provider's credential (write-only)")
    set_key.add_argument("name")
    _api_key_source(set_key)
    providers.set_defaults(handler=_providers)

    models = resources.add_parser("models", help="model routes and prices")
    actions = models.add_subparsers(dest="action", required=True)
    _paging(actions.add_parser("list"))
    for name in ("get", "delete", "prices"):
        actions.add_parser(name).add_argument("model")
    put = actions.add_parser("put", help="route a public model name to a provider's model")
    put.add_argument("model")
    put.add_argument("--provider", required=True)
    put.add_argument("--upstream-model", required=True)
    price = actions.add_parser("set-price", help="add an effective-dated price (per 1M tokens / per image)")
    price.add_argument("model")
    price.add_argument("--cost", required=True, help="e.g. input=0.15,output=0.60")
    price.add_argument("--sell", help="explicit selling prices, same form")
    price.add_argument("--margin-bps", type=int, help="selling price = cost x (1 + bps/10000)")
    price.add_argument("--effective-at", help="ISO 8601 time (default now)")
    price.add_argument("--force", action="store_true", help="allow selling below cost")
    models.set_defaults(handler=_models_command)

    tenants = resources.add_parser("tenants", help="tenants")
    actions = tenants.add_subparsers(dest="action", required=True)
    _paging(actions.add_parser("list"))
    actions.add_parser("get").add_argument("tenant_id")
    create = actions.add_parser("create")
    create.add_argument("--id")
    create.add_argument("--name", required=True)
    update = actions.add_parser("update")
    update.add_argument("tenant_id")
    update.add_argument("--name")
    tenants.set_defaults(handler=_tenants)

    keys = resources.add_parser("keys", help="hub keys: data-plane and admin")
    actions = keys.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="a tenant's keys, or without --tenant the global admin keys")
    listing.add_argument("--tenant")
    _paging(listing)
    for name in ("get", "revoke"):
        actions.add_parser(name).add_argument("key_id")
    create = actions.add_parser("create", help="issue a key (shown once)")
    create.add_argument("--name", required=True)
    create.add_argument("--tenant", help="the tenant (data-plane and tenant_admin keys)")
    create.add_argument("--admin-role", choices=ROLES, help="issue an admin key with this role")
    create.add_argument("--models", help="comma-separated models the key may use")
    create.add_argument("--expires-at", type=int, help="epoch seconds")
    create.add_argument("--budget", help="spend cap per period, e.g. 25.00")
    create.add_argument("--budget-period", choices=("day", "week", "month"), default="month")
    create.add_argument("--rpm", type=int)
    create.add_argument("--tpm", type=int)
    create.add_argument("--max-concurrency", type=int)
    update = actions.add_parser(
        "update", help="change a key's name, models, expiry, budget or limits (options left out stay)"
    )
    update.add_argument("key_id")
    update.add_argument("--name")
    update.add_argument("--models", help="comma-separated models the key may use")
    update.add_argument("--all-models", action="store_true", help="let the key use every model")
    update.add_argument("--expires-at", type=int, help="epoch seconds")
    update.add_argument("--no-expiry", action="store_true")
    update.add_argument("--budget", help="spend cap per period, e.g. 25.00")
    update.add_argument("--budget-period", choices=("day", "week", "month"), default="month")
    update.add_argument("--no-budget", action="store_true")
    update.add_argument("--rpm", type=int)
    update.add_argument("--tpm", type=int)
    update.add_argument("--max-concurrency", type=int)
    update.add_argument("--no-limits", action="store_true")
    rotate = actions.add_parser("rotate", help="new secret, same key id; the old one works during the grace")
    rotate.add_argument("key_id")
    rotate.add_argument("--grace-seconds", type=int, default=0)
    keys.set_defaults(handler=_keys)

    credits = resources.add_parser("credits", help="prepaid credits")
    actions = credits.add_subparsers(dest="action", required=True)
    grant = actions.add_parser("grant", help="add (or with --kind adjust, remove) credits")
    grant.add_argument("tenant_id")
    grant.add_argument("amount")
    grant.add_argument("--idempotency-key", required=True, help="a repeat with the same key is a no-op")
    grant.add_argument("--kind", choices=("topup", "adjust"))
    grant.add_argument("--note")
    actions.add_parser("balance").add_argument("tenant_id")
    ledger = actions.add_parser("ledger")
    ledger.add_argument("tenant_id")
    _paging(ledger)
    credits.set_defaults(handler=_credits)

    usage = resources.add_parser("usage", help="per-request usage records")
    usage.add_argument("--tenant")
    usage.add_argument("--key-id", help="one key's records")
    usage.add_argument("--since", help="ISO 8601 (default 24 hours ago)")
    usage.add_argument("--until", help="ISO 8601 (default now)")
    _paging(usage)
    usage.set_defaults(handler=_usage)

    audit = resources.add_parser("audit", help="the hash-chained admin audit log")
    actions = audit.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="entries, newest first")
    listing.add_argument("--tenant")
    listing.add_argument("--actor")
    listing.add_argument("--event", help="an action, e.g. key.create or auth.denied")
    listing.add_argument("--outcome", choices=("ok", "denied"))
    listing.add_argument("--since")
    listing.add_argument("--until")
    _paging(listing)
    actions.add_parser("get").add_argument("seq", type=int)
    actions.add_parser("verify", help="check the whole chain; report the first broken link")
    audit.set_defaults(handler=_audit)
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    args = build_parser().parse_args(argv)
    try:
        if not args.key:
            raise CliError("no admin credential: pass --key or set TOLLGATE_ADMIN_KEY")
        client = AdminClient(args.url, args.key, allow_http=args.allow_http)
        handler: Handler = args.handler
        result = handler(client, args, stdin)
    except ApiError as error:
        print(error.body or f"HTTP {error.status}", file=stderr)
        return 1
    except CliError as error:
        print(f"tollgate: {error}", file=stderr)
        return 2
    if result is not None:
        print(json.dumps(result, indent=2, sort_keys=True), file=stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
