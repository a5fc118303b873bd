"""``make dev``: Tollgate on 127.0.0.1:${TOLLGATE_PORT:-8080}, with moto's server standing in for AWS.

moto listens on a free port (or ``TOLLGATE_MOTO_PORT``) and is reached only through
``AWS_ENDPOINT_URL``, exactly as a real endpoint would be, so two instances (and the tests) can run
side by side. Providers whose usual environment variables are set are registered at start.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import secrets
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tollgate.providers.presets import PRESETS

if TYPE_CHECKING:
    from tollgate.container import Services

DEFAULT_PORT = 8080
LOCAL_TENANT = "local"


@dataclass(frozen=True, slots=True)
class LocalConfig:
    host: str
    port: int
    moto_port: int
    aws_endpoint: str | None
    admin_key: str
    prefix: str

    @classmethod
    def from_environment(cls, argv: list[str] | None = None) -> LocalConfig:
        parser = argparse.ArgumentParser(prog="tollgate-dev", description=__doc__)
        parser.add_argument("--port", type=int, default=int(os.environ.get("TOLLGATE_PORT", DEFAULT_PORT)))
        parser.add_argument("--moto-port", type=int, default=int(os.environ.get("TOLLGATE_MOTO_PORT", 0)))
        parser.add_argument(
            "--aws-endpoint",
            default=os.environ.get("TOLLGATE_AWS_ENDPOINT"),
            help="Use this running moto server (shared with another instance) instead of starting one",
        )
        options = parser.parse_args(argv)
        admin_key = os.environ.get("TOLLGATE_ADMIN_KEY") or f"tga-{secrets.token_urlsafe(24)}"
        return cls(
            host="127.0.0.1",
            port=options.port,
            moto_port=options.moto_port,
            aws_endpoint=options.aws_endpoint,
            admin_key=admin_key,
            prefix="tollgate-local",
        )


def start_moto(port: int) -> str:
    """Starts moto's server in a daemon thread on loopback; returns its endpoint URL.

    The server handles one request at a time. DynamoDB applies each conditional write and
    transaction atomically; moto does not lock its in-memory tables, so serving requests one by
    one is what keeps its conditional semantics exact under concurrent clients.
    """
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access line per AWS call is noise here
    app = DomainDispatcherApplication(create_backend_app)
    server = make_server("127.0.0.1", port, app, threaded=False, request_handler=MotoRequestHandler)
    threading.Thread(target=server.serve_forever, name="moto", daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}"


def aws_environment(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",  # moto accepts anything; no real credential exists here
        "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        "AWS_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        "TOLLGATE_ENABLE_FAKE_PROVIDER": "true",
        "TOLLGATE_ALLOW_LOOPBACK_UPSTREAMS": "true",
        "TOLLGATE_STARTER_CREDITS": os.environ.get("TOLLGATE_STARTER_CREDITS", "5"),
        "POWERTOOLS_LOG_LEVEL": os.environ.get("POWERTOOLS_LOG_LEVEL", "WARNING"),
        # Request metrics are CloudWatch EMF lines on stdout: noise in a terminal, so off unless asked for.
        "POWERTOOLS_METRICS_DISABLED": os.environ.get("POWERTOOLS_METRICS_DISABLED", "true"),
    }


def env_providers(environ: dict[str, str]) -> dict[str, dict[str, str]]:
    """Provider bodies for ``PUT /admin/v1/providers/{name}`` from the usual variables."""
    found: dict[str, dict[str, str]] = {}
    for preset in PRESETS.values():
        if preset.key_env and environ.get(preset.key_env):
            found[preset.type] = {"type": preset.type, "api_key": environ[preset.key_env]}
    host = environ.get("OLLAMA_HOST")
    if host:
        base = host if "://" in host else f"http://{host}"
        found["ollama"] = {"type": "ollama", "base_url": f"{base.rstrip('/')}/v1"}
    return found


#: Prices local mode gives the fake models, so credit mode works out of the box (per 1M tokens).
FAKE_PRICES = {
    "fake/echo": {"cost": {"input": "0", "output": "0"}, "sell": {"input": "1.00", "output": "2.00"}},
    "fake/embed": {"cost": {"embedding": "0"}, "sell": {"embedding": "0.10"}},
    "fake/image": {"cost": {"image": "0"}, "sell": {"image": "0.02"}},
}


def prepare(config: LocalConfig) -> tuple[str, Services]:
    """Starts moto, creates the resources, registers providers and prices; returns a demo key."""
    from tollgate.admin.schemas import KeyIn, PriceIn, ProviderIn, TenantIn
    from tollgate.container import Services
    from tollgate.errors import ConflictError
    from tollgate.local.bootstrap import apply_environment, bootstrap
    from tollgate.settings import Settings, get_settings

    endpoint = config.aws_endpoint or start_moto(config.moto_port)
    os.environ.update(aws_environment(endpoint))
    resources = bootstrap(config.prefix, admin_key=config.admin_key)
    apply_environment(resources)
    get_settings.cache_clear()
    services = Services(Settings.from_environment())
    for name, body in env_providers(dict(os.environ)).items():
        services.admin.put_provider(name, ProviderIn.model_validate(body))
    for model, price in FAKE_PRICES.items():
        if not services.catalog.prices(model):
            services.admin.put_price(model, PriceIn.model_validate(price))
    with contextlib.suppress(ConflictError):  # the tenant survives from an earlier start
        services.admin.create_tenant(TenantIn(id=LOCAL_TENANT, name="Local development"))
    return services.admin.issue_key(KeyIn(tenant_id=LOCAL_TENANT, name="make dev")).key, services


def run_sweeper(services: Services, every_seconds: float) -> threading.Thread:
    """What the scheduled function does in AWS: settle abandoned holds, expire starter credits, and
    roll usage up into the analytics buckets (``tollgate.scheduled``)."""
    from tollgate.scheduled import run_scheduled

    def loop() -> None:
        while True:
            time.sleep(every_seconds)
            try:
                run_scheduled(services)
            except Exception:  # a failed run is retried on the next tick (both jobs are idempotent)
                logging.getLogger("tollgate").exception("scheduled run failed")

    thread = threading.Thread(target=loop, name="sweeper", daemon=True)
    thread.start()
    return thread


def banner(config: LocalConfig, demo_key: str) -> str:
    base = f"http://{config.host}:{config.port}"
    real = ", ".join(sorted(env_providers(dict(os.environ))))
    providers = f"fake, {real}" if real else "fake (set OPENAI_API_KEY, OLLAMA_HOST... to add real ones)"
    mode = os.environ.get("TOLLGATE_BILLING_MODE", "enterprise")
    return f"""
Tollgate is running (local mode; AWS is moto at {os.environ["AWS_ENDPOINT_URL"]})

  Base URL     {base}/v1
  Admin key    {config.admin_key}
  Demo key     {demo_key}   (tenant '{LOCAL_TENANT}')
  Providers    {providers}
  Billing      {mode} (TOLLGATE_BILLING_MODE=credits for prepaid credits)

Try it:
  curl -s {base}/v1/chat/completions \\
    -H "Authorization: Bearer {demo_key}" -H "Content-Type: application/json" \\
    -d '{{"model": "fake/echo", "messages": [{{"role": "user", "content": "Hello"}}]}}'

Issue another key:
  curl -s {base}/admin/v1/keys -H "Authorization: Bearer {config.admin_key}" \\
    -H "Content-Type: application/json" -d '{{"tenant_id": "{LOCAL_TENANT}", "name": "my app"}}'
or with the admin CLI:
  export TOLLGATE_URL={base} TOLLGATE_ADMIN_KEY={config.admin_key}
  tollgate keys create --tenant {LOCAL_TENANT} --name "my app"

Ctrl-C stops it.
"""


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from tollgate.api.apps import local_app

    config = LocalConfig.from_environment(argv)
    demo_key, services = prepare(config)
    run_sweeper(services, float(os.environ.get("TOLLGATE_SWEEP_SECONDS", "60")))
    print(banner(config, demo_key), flush=True)
    uvicorn.run(local_app(), host=config.host, port=config.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
