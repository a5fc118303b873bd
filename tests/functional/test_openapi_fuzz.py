"""Schemathesis against Tollgate's own OpenAPI documents, in-process on moto: the public API (the
stream and gateway apps, as deployed) and the admin API (the admin app).

Every operation gets cases that fit its schema (positive) and cases that do not (negative), spread
evenly over the operations. Every answer must be:

* never a 5xx;
* a documented status with a documented content type, and a body that matches the documented schema:
  errors included, so every error is OpenAI's error object (Anthropic's on ``/v1/messages``);
* for negative cases, a rejection (4xx); for requests without credentials, a 401.

At least ``MINIMUM_CASES`` cases run in total, with a fixed seed (``derandomize``), so a failure
reproduces. Checks left out, and why, are listed in ``EXCLUDED_CHECKS``; no operation is left out
(operations whose cases cost most get fewer of them: ``EXAMPLES_FOR_COSTLY``).

While working on one operation: ``TOLLGATE_FUZZ_ONLY=<part of its label>`` runs only matching
operations, ``TOLLGATE_FUZZ_EXAMPLES=<n>`` sets the cases per operation (the total assertion then
fails, so neither can pass unnoticed), and ``pytest -s`` prints the tally and the slowest operations.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation.modes import GenerationMode

from tests.conftest import ADMIN_KEY

MINIMUM_CASES = 5000
#: Cases per operation and generation mode; operations with a small input space run out sooner.
EXAMPLES_PER_OPERATION = int(os.environ.get("TOLLGATE_FUZZ_EXAMPLES", "100"))
ONLY = os.environ.get("TOLLGATE_FUZZ_ONLY")
#: Operations whose every case costs far more on moto than the rest get fewer, so the whole run stays
#: within a few minutes on two cores: rollup scans (analytics), hold-and-settle transactions (chat,
#: messages), and a log that grows with every denied attempt the fuzzing itself causes (audit).
EXAMPLES_FOR_COSTLY = {
    "GET /admin/v1/analytics": 10,
    "GET /admin/v1/analytics/reconcile": 20,
    "GET /admin/v1/audit": 40,
    "POST /v1/chat/completions": 40,
    "POST /v1/messages": 40,
}

EXCLUDED_CHECKS: dict[str, str] = {
    # Schemathesis' ``positive_data_acceptance`` expects every schema-valid request to succeed. Many
    # cannot: a valid-looking tenant id that does not exist is a 404, a valid price in the past a 400,
    # a model that no provider serves a 404. Those answers are still checked for their status, content
    # type and error shape by the conformance checks above.
    "positive_data_acceptance": "schema-valid requests may name objects that do not exist",
}
# (``max_response_time`` is not configured: performance claims live in bench/, not in tests.)


@dataclass
class Tally:
    cases: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    without_invalid_input: set[str] = field(default_factory=set)


@pytest.fixture(scope="module")
def deployment() -> Iterator[dict[str, Any]]:
    """moto, the resources the stack creates, the three deployed apps, and a tenant with a data key."""
    from moto import mock_aws

    from tollgate.api.admin import admin_routes
    from tollgate.api.analytics import analytics_routes
    from tollgate.api.apps import admin_app, create_app, gateway_app, stream_app
    from tollgate.api.messages import messages_routes
    from tollgate.api.public import chat_routes, health_routes, models_routes
    from tollgate.container import Services
    from tollgate.local.bootstrap import bootstrap
    from tollgate.settings import Settings

    with pytest.MonkeyPatch.context() as env, mock_aws():
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
        }.items():
            env.setenv(name, value)
        env.delenv("AWS_ENDPOINT_URL", raising=False)
        resources = bootstrap("tollgate-fuzz", admin_key=ADMIN_KEY)
        for name, value in resources.environment().items():
            env.setenv(name, value)
        env.setenv("TOLLGATE_ENABLE_FAKE_PROVIDER", "true")
        env.setenv("TOLLGATE_LEDGER_TRANSPORT", "boto")  # in-process moto intercepts botocore only
        services = Services(Settings.from_environment())
        from tollgate.admin.schemas import KeyIn, TenantIn

        services.admin.create_tenant(TenantIn(id="acme", name="Acme"))
        data_key = services.admin.issue_key(KeyIn(tenant_id="acme", name="fuzz")).key
        # The functions serve no document of their own (they load no framework): theirs is the one
        # FastAPI makes of the same route tables.
        stream_routes = [chat_routes, messages_routes, health_routes]
        gateway_routes = [models_routes, health_routes]
        admin_tables = [admin_routes, analytics_routes, health_routes]
        yield {
            "apps": {
                "stream": (stream_app(services), create_app(stream_routes, title="s", services=services)),
                "gateway": (gateway_app(services), create_app(gateway_routes, title="g", services=services)),
                "admin": (admin_app(services), create_app(admin_tables, title="a", services=services)),
            },
            "tokens": {"stream": data_key, "gateway": data_key, "admin": ADMIN_KEY},
        }


def _checks() -> tuple[list[Callable[..., Any]], list[Callable[..., Any]]]:
    """(every built-in check, the excluded ones); the test asserts the exclusions are real names."""
    from schemathesis.checks import CHECKS, load_all_checks

    load_all_checks()
    every = list(CHECKS.get_all())
    return every, [check for check in every if check.__name__ in EXCLUDED_CHECKS]


def _load(app: Any, documented_by: Any, token: str) -> Any:
    """The app's document (served by ``documented_by`` when the app serves none), with the credential
    applied the way the document declares it (bearer), so that cases which deliberately leave it out
    (negative headers, ``ignored_auth``) go without."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", documented_by)
    schema.app = app
    # HTTP clients send headers an API does not declare (User-Agent, SDK telemetry such as
    # X-Stainless-*), and OpenAI-compatible APIs ignore query parameters they do not define. An
    # undeclared parameter is therefore not invalid input, and is not generated as such.
    schema.config.generation.update(allow_extra_parameters=False, with_security_parameters=False)

    @schema.auth()
    class Bearer:
        def get(self, case: Any, context: Any) -> str:
            return token

        def set(self, case: Any, data: str, context: Any) -> None:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}

    return schema


def _run_operation(operation: Any, mode: GenerationMode, tally: Tally) -> None:
    label = f"{operation.label} [{mode.value}]"
    every, excluded = _checks()
    # Every check, not only the ones enabled by default, minus the exclusions above.
    checks = [check for check in every if check not in excluded]

    @settings(
        max_examples=EXAMPLES_FOR_COSTLY.get(operation.label, EXAMPLES_PER_OPERATION),
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def exercise(case: Any) -> None:
        tally.cases[label] += 1
        response = case.call()
        tally.statuses[response.status_code] += 1
        case.validate_response(response, checks=checks)

    began = time.monotonic()
    try:
        exercise()
    except Unsatisfiable:
        # No invalid request exists for an operation without parameters or body (credentials are
        # checked by ``ignored_auth`` on every positive case); the test asserts which ones these are.
        tally.without_invalid_input.add(operation.label)
    except (Exception, BaseExceptionGroup) as failure:  # every operation runs; failures are reported together
        tally.failures.append(f"{label}: {str(failure)[:3000]}")
    tally.seconds[label] = time.monotonic() - began


@pytest.mark.slow
def test_every_operation_conforms_to_its_documented_schema(deployment: dict[str, Any]) -> None:
    _, excluded = _checks()
    assert {check.__name__ for check in excluded} == set(EXCLUDED_CHECKS)
    tally = Tally()
    started = time.monotonic()
    operations = 0
    for name, (app, documented_by) in deployment["apps"].items():
        schema = _load(app, documented_by, deployment["tokens"][name])
        # Reads first: what the fuzzing writes (tenants, keys, denied attempts in the audit log) makes
        # every later listing on moto slower, not more thorough.
        ordered = sorted(
            (result.ok() for result in schema.get_all_operations()), key=lambda op: op.method != "get"
        )
        for operation in ordered:
            if ONLY and ONLY not in operation.label:
                continue
            operations += 1
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                _run_operation(operation, mode, tally)
    elapsed = time.monotonic() - started
    total = sum(tally.cases.values())
    print(
        f"\nschemathesis: {total} cases over {operations} operations in {elapsed:.0f} s; statuses {dict(tally.statuses)}"
    )

    slowest = sorted(tally.seconds.items(), key=lambda item: -item[1])[:12]
    print("slowest:", [(label, round(seconds, 1), tally.cases[label]) for label, seconds in slowest])
    for failure in tally.failures:
        print("FAILURE", failure)
    assert tally.failures == []
    assert tally.without_invalid_input == {"GET /v1/models"}
    assert tally.statuses.keys().isdisjoint(range(500, 600))
    assert total >= MINIMUM_CASES, tally.cases
