"""Each function: Python 3.13 on arm64, the shared layer, JSON logs, X-Ray, and the runtime's settings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from infra.functions import LAMBDA_WEB_ADAPTER_VERSION
from tollgate.settings import Settings

if TYPE_CHECKING:
    from tests.infra.conftest import Synthesized

FUNCTIONS = ["stream", "gateway", "admin", "rollup"]

# Every setting without a default must come from the stack, or the runtime fails at cold start.
REQUIRED_SETTINGS_ENV = sorted(
    f"TOLLGATE_{name.upper()}" for name, field in Settings.model_fields.items() if field.is_required()
)


def _env(function: dict[str, Any]) -> dict[str, Any]:
    variables: dict[str, Any] = function["Properties"]["Environment"]["Variables"]
    return variables


def test_the_runtime_has_required_settings_to_check() -> None:
    assert "TOLLGATE_CATALOG_TABLE" in REQUIRED_SETTINGS_ENV


@pytest.mark.parametrize("name", FUNCTIONS)
def test_function_platform(function_resources: dict[str, Any], name: str) -> None:
    props = function_resources[name]["Properties"]

    assert props["Runtime"] == "python3.13"
    assert props["Architectures"] == ["arm64"]
    assert props["TracingConfig"] == {"Mode": "Active"}


@pytest.mark.parametrize("name", FUNCTIONS)
def test_function_logs_json_to_its_own_group_with_retention(
    synthesized: Synthesized,
    service_functions: dict[str, Any],
    function_resources: dict[str, Any],
    resources: dict[str, Any],
    name: str,
) -> None:
    logging = function_resources[name]["Properties"]["LoggingConfig"]
    log_group_id = synthesized.logical_id(service_functions[name].log_group)

    assert logging["LogFormat"] == "JSON"
    assert logging["ApplicationLogLevel"] == "INFO"
    assert logging["LogGroup"] == {"Ref": log_group_id}
    assert resources[log_group_id]["Properties"]["RetentionInDays"] > 0


@pytest.mark.parametrize("name", FUNCTIONS)
def test_function_uses_the_shared_layer(
    synthesized: Synthesized, function_resources: dict[str, Any], name: str
) -> None:
    layer_ref = {"Ref": synthesized.logical_id(synthesized.stack.layer.layer)}

    assert layer_ref in function_resources[name]["Properties"]["Layers"]


@pytest.mark.parametrize("name", FUNCTIONS)
def test_function_environment_satisfies_the_runtime_settings(
    function_resources: dict[str, Any], name: str
) -> None:
    env = _env(function_resources[name])

    assert sorted(k for k in env if k in REQUIRED_SETTINGS_ENV) == REQUIRED_SETTINGS_ENV
    assert env["POWERTOOLS_SERVICE_NAME"] == "tollgate"
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == "Tollgate"
    assert env["LOG_LEVEL"] == "INFO"


@pytest.mark.parametrize(
    ("name", "handler", "timeout"),
    [("gateway", "handler.handler", 29), ("admin", "handler.handler", 29)],
)
def test_buffered_functions_run_mangum_handlers(
    function_resources: dict[str, Any], name: str, handler: str, timeout: int
) -> None:
    props = function_resources[name]["Properties"]

    assert props["Handler"] == handler
    assert props["Timeout"] == timeout
    assert len(props["Layers"]) == 1, "only the shared layer: no web adapter on buffered functions"
    assert "AWS_LAMBDA_EXEC_WRAPPER" not in _env(function_resources[name])


def test_stream_function_runs_uvicorn_under_the_web_adapter(function_resources: dict[str, Any]) -> None:
    props = function_resources["stream"]["Properties"]
    env = _env(function_resources["stream"])

    assert props["Handler"] == "run.sh"
    assert props["Timeout"] == 15 * 60
    assert env["AWS_LAMBDA_EXEC_WRAPPER"] == "/opt/bootstrap"
    assert env["AWS_LWA_INVOKE_MODE"] == "response_stream"
    assert env["AWS_LWA_PORT"] == "8080"
    assert env["AWS_LWA_READINESS_CHECK_PATH"] == "/healthz"


def test_stream_function_pins_the_arm64_web_adapter_layer(function_resources: dict[str, Any]) -> None:
    layers = function_resources["stream"]["Properties"]["Layers"]
    adapter_arn = {
        "Fn::Join": [
            "",
            [
                "arn:",
                {"Ref": "AWS::Partition"},
                ":lambda:",
                {"Ref": "AWS::Region"},
                f":753240598075:layer:LambdaAdapterLayerArm64:{LAMBDA_WEB_ADAPTER_VERSION}",
            ],
        ]
    }

    assert adapter_arn in layers
    assert len(layers) == 2


def test_rollup_function_runs_the_sweep_handler(function_resources: dict[str, Any]) -> None:
    props = function_resources["rollup"]["Properties"]

    assert props["Handler"] == "handler.handler"
    assert props["Timeout"] == 5 * 60
    assert props["MemorySize"] == 512
    assert len(props["Layers"]) == 1, "only the shared layer: the sweep is a plain handler"
    assert "AWS_LAMBDA_EXEC_WRAPPER" not in _env(function_resources["rollup"])


def test_reserved_concurrency_is_left_to_the_account_by_default(function_resources: dict[str, Any]) -> None:
    """The rollup too: its sweep is idempotent, so overlapping runs need no reserved concurrency of 1."""
    for name, function in function_resources.items():
        assert "ReservedConcurrentExecutions" not in function["Properties"], name


def test_operator_settings_from_context_reach_every_function(cdk_context: Any, tmp_path: Any) -> None:
    """``cdk deploy -c tollgate:billing_mode=credits ...``: each value on every function, validated."""
    import aws_cdk as cdk

    from app import STACK_NAME, build_app

    context = {
        **cdk_context(),
        "tollgate:billing_mode": "credits",
        "tollgate:starter_credits": "5",
        "tollgate:usage_retention_days": 30,
    }
    app = build_app(cdk.App(context=context, outdir=str(tmp_path)))
    template = app.synth(skip_validation=True).get_stack_by_name(STACK_NAME).template
    functions = [
        resource
        for resource in template["Resources"].values()
        if resource["Type"] == "AWS::Lambda::Function" and "TOLLGATE_LEDGER_TABLE" in _env(resource)
    ]

    assert len(functions) == len(FUNCTIONS)
    for function in functions:
        env = _env(function)
        assert env["TOLLGATE_BILLING_MODE"] == "credits"
        assert env["TOLLGATE_STARTER_CREDITS"] == "5"
        assert env["TOLLGATE_USAGE_RETENTION_DAYS"] == "30"


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("tollgate:biling_mode", "credits", "no setting 'biling_mode'"),
        ("tollgate:billing_mode", "free", "billing_mode"),
        ("tollgate:usage_retention_days", "0", "usage_retention_days"),
        ("tollgate:ledger_table", "mine", "the stack sets TOLLGATE_LEDGER_TABLE itself"),
        ("tollgate:oidc_issuer", "https://login.example.com", "the stack sets TOLLGATE_OIDC_ISSUER itself"),
    ],
)
def test_a_bad_operator_setting_fails_the_synth(key: str, value: str, problem: str) -> None:
    import aws_cdk as cdk

    from infra.operator_settings import OperatorSettingsError, operator_settings

    app = cdk.App(context={key: value})
    stack_owned = {"TOLLGATE_LEDGER_TABLE": "t", "TOLLGATE_OIDC_ISSUER": "${Token[TOKEN.1]}"}
    with pytest.raises(OperatorSettingsError, match=problem):
        operator_settings(app, stack_owned=stack_owned)
