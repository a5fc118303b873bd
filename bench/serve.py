"""The bench-only launcher: Tollgate's local app (``tollgate.api.apps.local_app``) under uvicorn
(uvloop, httptools, one worker, no access log), with DynamoDB and Secrets Manager replaced by
in-memory fakes, in credit mode, with priced models routed to the mock upstream.

    python -m bench.serve --port 8101 --upstream http://127.0.0.1:8100/v1 --ready-file out/tg.json

No production code hook: it builds ``tollgate.container.Services`` and sets its cached ``dynamodb``
and ``secrets`` attributes before serving. Everything else is Tollgate's own code. Configuration
goes through ``AdminService`` (provider, routes, prices, tenant, credits), as the admin API would;
the bench key is registered directly in the catalog so that its value is fixed
(``bench.topology.BENCH_KEY``).

``SIGUSR1`` writes the fakes' call counters (and the process's RSS and the cycle collector's passes
per generation) to ``--stats-file``: that is how the harness counts DynamoDB round trips per request
without any extra route in the app.
By default the process also holds real (idle) botocore clients for DynamoDB and Secrets Manager,
as a deployed function does, so its RSS is not flattered by the fakes.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Any

from bench import topology

#: Settings the fakes stand behind; AWS_ENDPOINT_URL points at a closed loopback port, so an
#: AWS call that was not faked fails at once instead of leaving the machine.
#: Table names come from ``tollgate.store.schema`` (``table_environment``).
ENVIRONMENT = {
    "TOLLGATE_PEPPER_SECRET": "bench/pepper",
    "TOLLGATE_ADMIN_KEY_SECRET": "bench/admin-key",
    "TOLLGATE_PROVIDER_SECRET_PREFIX": "bench/providers/",
    "TOLLGATE_KMS_KEY_ID": "bench-kms-key",
    "TOLLGATE_BILLING_MODE": "credits",
    "TOLLGATE_ALLOW_LOOPBACK_UPSTREAMS": "true",
    "POWERTOOLS_LOG_LEVEL": "WARNING",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
}


def table_environment() -> dict[str, str]:
    """``TOLLGATE_<TABLE>_TABLE`` for every table the schema declares: ``bench-<logical name>``."""
    from tollgate.store.schema import ALL_TABLES

    return {table.env_var: f"bench-{table.logical_name.lower()}" for table in ALL_TABLES}


def bench_environment() -> dict[str, str]:
    """Every variable Tollgate's settings need in the benchmark (dummy values, no network)."""
    return {**table_environment(), **ENVIRONMENT}


def rss_kib(pid: int | str = "self") -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in KiB."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0])
    return values


def build_services(upstream: str, *, ddb_latency: float = 0.0, sink_limit: int | None = 1000) -> Any:
    """``Services`` over the fakes, configured for the benchmark. Returns it with ``.bench_fakes``."""
    for name, value in bench_environment().items():
        os.environ.setdefault(name, value)
    from bench.fake_dynamo import FakeDynamoDB, InlineTransport, tollgate_sinks, tollgate_tables
    from bench.fake_secrets import FakeSecretsManager
    from tollgate.container import Services
    from tollgate.settings import Settings, get_settings
    from tollgate.store.schema import ALL_TABLES
    from tollgate.store.secrets import SecretStore

    get_settings.cache_clear()
    settings = Settings.from_environment()
    services = Services(settings)
    dynamodb = FakeDynamoDB(sink_rule=tollgate_sinks, sink_limit=sink_limit, latency=ddb_latency)
    tollgate_tables(dynamodb, {table.logical_name: os.environ[table.env_var] for table in ALL_TABLES})
    secretsmanager = FakeSecretsManager(
        {settings.pepper_secret: secrets.token_urlsafe(32), settings.admin_key_secret: topology.ADMIN_KEY}
    )
    services.dynamodb = dynamodb  # the cached_property's slot: Services never builds a real client
    services.ledger_transport = InlineTransport(dynamodb)  # the hot path's two writes, on the loop
    services.secrets = SecretStore(
        secretsmanager,  # type: ignore[arg-type]
        pepper_secret=settings.pepper_secret,
        admin_key_secret=settings.admin_key_secret,
        provider_prefix=settings.provider_secret_prefix,
        kms_key_id=settings.kms_key_id,
        max_age=settings.cache_ttl_seconds,
    )
    services.bench_fakes = {"dynamodb": dynamodb, "secretsmanager": secretsmanager}
    configure(services, upstream)
    return services


def configure(services: Any, upstream: str) -> None:
    """The provider, routes, prices, tenant, credits and the bench key, as an operator would."""
    from tollgate.admin.schemas import CreditIn, PriceIn, ProviderIn, RouteIn, TenantIn
    from tollgate.keys import hash_secret
    from tollgate.store.records import KeyRecord

    admin = services.admin
    admin.put_provider(
        "mock",
        ProviderIn.model_validate({"type": "openai", "base_url": upstream, "api_key": topology.UPSTREAM_KEY}),
    )
    for public, upstream_model in topology.MODELS.items():
        admin.put_route(
            public, RouteIn.model_validate({"provider": "mock", "upstream_model": upstream_model})
        )
        admin.put_price(public, PriceIn.model_validate(topology.PRICE))
    admin.create_tenant(TenantIn.model_validate({"id": topology.TENANT, "name": "Benchmark"}))
    admin.add_credits(
        topology.TENANT,
        CreditIn.model_validate({"amount": "1000000", "idempotency_key": "bench-topup"}),
        "bench",
    )
    secret_hash = hash_secret(services.secrets.pepper(), topology.KEY_ID, topology.KEY_SECRET)
    services.catalog.create_key(
        KeyRecord(
            id=topology.KEY_ID,
            tenant_id=topology.TENANT,
            name="bench",
            secret_hash=secret_hash,
            created_at=int(time.time()),
        )
    )


def strip_metering() -> None:
    """The ablation that ``bench.run``'s ``ledger_share`` step serves beside the real thing: the same
    app with ``Meter.admit`` and ``Meter.settle`` doing nothing, so no price is read, nothing is held
    or settled, no usage record is written and no metrics line printed. The difference between the
    two servers is what the ledger and metering cost a request. A gateway like this gives its
    providers' tokens away, which is why it exists only here."""
    from tollgate.metering import Meter

    async def admit(self: Meter, demand: object, idempotency: object = None) -> None:
        return None

    async def settle(self: Meter, **_: object) -> None:
        return None

    Meter.admit = admit  # type: ignore[assignment,method-assign]
    Meter.settle = settle  # type: ignore[assignment,method-assign]


def stats(services: Any) -> dict[str, Any]:
    fakes = services.bench_fakes
    return {
        "dynamodb": fakes["dynamodb"].snapshot(),
        "secretsmanager": dict(fakes["secretsmanager"].calls),
        "sinks_dropped": fakes["dynamodb"].sinks_dropped,
        "items": fakes["dynamodb"].item_count(),
        "rss_kib": rss_kib(),
        "gc_collections": [generation["collections"] for generation in gc.get_stats()],
        "time": time.time(),
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(data, indent=2))
    temporary.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--upstream", required=True, help="the mock's base URL, e.g. http://127.0.0.1:8100/v1"
    )
    parser.add_argument("--ready-file", type=Path, required=True)
    parser.add_argument("--stats-file", type=Path, default=None)
    parser.add_argument("--ddb-latency-ms", type=float, default=0.0, help="a sleep per DynamoDB call")
    parser.add_argument("--no-aws-clients", action="store_true", help="do not hold idle botocore clients")
    parser.add_argument(
        "--without-metering",
        action="store_true",
        help="the ablation of bench.run's ledger_share step: no hold, settlement or metrics (never ships)",
    )
    options = parser.parse_args(argv)

    started = time.perf_counter()
    from tollgate.startup import cold_start

    with cold_start():  # as the stream function's entry module loads
        import uvicorn

        from tollgate.api.apps import local_app

        services = build_services(options.upstream, ddb_latency=options.ddb_latency_ms / 1000)
        idle_clients: list[Any] = []
        if not options.no_aws_clients:
            from tollgate.container import aws_client

            idle_clients = [aws_client("dynamodb"), aws_client("secretsmanager")]
        app = local_app(services)
        if options.without_metering:
            strip_metering()
    stats_file = options.stats_file or options.ready_file.with_name(options.ready_file.stem + "-stats.json")

    def dump(signum: int, frame: Any) -> None:
        write_json(stats_file, stats(services))

    signal.signal(signal.SIGUSR1, dump)
    write_json(
        options.ready_file,
        {
            "pid": os.getpid(),
            "port": options.port,
            "key": topology.BENCH_KEY,
            "admin_key": topology.ADMIN_KEY,
            "setup_seconds": time.perf_counter() - started,
            "idle_aws_clients": len(idle_clients),
            "stats_file": str(stats_file),
        },
    )
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=options.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        lifespan="on",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
