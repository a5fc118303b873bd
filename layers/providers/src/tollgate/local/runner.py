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
from dataclasses import dataclass

from tollgate.providers.presets import PRESETS

DEFAULT_PORT = 8080
LOCAL_TENANT = "local"


@dataclass(frozen=True, slots=True)
class LocalConfig:
    host: str
    port: int
    moto_port: int
    admin_key: str
    prefix: str

    @classmethod
    def from_environment(cls, argv: list[str] | None = None) -> LocalConfig:
        parser = argparse.ArgumentParser(prog="tollgate-dev", description=__doc__)
        parser.add_argument("--port", type=int, default=int(os.environ.get("TOLLGATE_PORT", DEFAULT_PORT)))
        parser.add_argument("--moto-port", type=int, default=int(os.environ.get("TOLLGATE_MOTO_PORT", 0)))
        options = parser.parse_args(argv)
        admin_key = os.environ.get("TOLLGATE_ADMIN_KEY") or f"tga-{secrets.token_urlsafe(24)}"
        return cls(
            host="127.0.0.1",
            port=options.port,
            moto_port=options.moto_port,
            admin_key=admin_key,
            prefix="tollgate-local",
        )


def start_moto(port: int) -> str:
    """Starts moto's server in a daemon thread on loopback; returns its endpoint URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access line per AWS call is noise here
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    host, bound = server.get_host_and_port()
    return f"http://{host}:{bound}"


def aws_environment(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",  # moto accepts anything; no real credential exists here
        "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        "AWS_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        "TOLLGATE_ENABLE_FAKE_PROVIDER": "true",
        "TOLLGATE_ALLOW_LOOPBACK_UPSTREAMS": "true",
        "POWERTOOLS_LOG_LEVEL": os.environ.get("POWERTOOLS_LOG_LEVEL", "WARNING"),
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


def prepare(config: LocalConfig) -> str:
    """Starts moto, creates the resources, registers providers; returns a demo data-plane key."""
    from tollgate.admin.schemas import KeyIn, ProviderIn, TenantIn
    from tollgate.container import Services
    from tollgate.errors import ConflictError
    from tollgate.local.bootstrap import apply_environment, bootstrap
    from tollgate.settings import Settings, get_settings

    endpoint = start_moto(config.moto_port)
    os.environ.update(aws_environment(endpoint))
    resources = bootstrap(config.prefix, admin_key=config.admin_key)
    apply_environment(resources)
    get_settings.cache_clear()
    services = Services(Settings())
    for name, body in env_providers(dict(os.environ)).items():
        services.admin.put_provider(name, ProviderIn.model_validate(body))
    with contextlib.suppress(ConflictError):  # the tenant survives from an earlier start
        services.admin.create_tenant(TenantIn(id=LOCAL_TENANT, name="Local development"))
    return services.admin.issue_key(KeyIn(tenant_id=LOCAL_TENANT, name="make dev")).key


def banner(config: LocalConfig, demo_key: str) -> str:
    base = f"http://{config.host}:{config.port}"
    real = ", ".join(sorted(env_providers(dict(os.environ))))
    providers = f"fake, {real}" if real else "fake (set OPENAI_API_KEY, OLLAMA_HOST... to add real ones)"
    return f"""
Tollgate is running (local mode; AWS is moto at {os.environ["AWS_ENDPOINT_URL"]})

  Base URL     {base}/v1
  Admin key    {config.admin_key}
  Demo key     {demo_key}   (tenant '{LOCAL_TENANT}')
  Providers    {providers}

Try it:
  curl -s {base}/v1/chat/completions \\
    -H "Authorization: Bearer {demo_key}" -H "Content-Type: application/json" \\
    -d '{{"model": "fake/echo", "messages": [{{"role": "user", "content": "Hello"}}]}}'

Issue another key:
  curl -s {base}/admin/v1/keys -H "Authorization: Bearer {config.admin_key}" \\
    -H "Content-Type: application/json" -d '{{"tenant_id": "{LOCAL_TENANT}", "name": "my app"}}'

Ctrl-C stops it.
"""


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from tollgate.api.apps import local_app

    config = LocalConfig.from_environment(argv)
    demo_key = prepare(config)
    print(banner(config, demo_key), flush=True)
    uvicorn.run(local_app(), host=config.host, port=config.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
