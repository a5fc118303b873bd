"""Monitoring: a dashboard, the alarms that need a human, and a dead-letter queue for the rollup.

The metric names the dashboard and alarms read in the ``Tollgate`` namespace are checked against
what ``tollgate.telemetry`` actually emits, so a renamed metric cannot leave a graph silently empty.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Template

from app import STACK_NAME, build_app
from tollgate import telemetry
from tollgate.store.records import UsageRecord
from tollgate.store.schema import ALL_TABLES

if TYPE_CHECKING:
    from tests.infra.conftest import Synthesized


def _of_type(resources: dict[str, Any], cfn_type: str) -> dict[str, dict[str, Any]]:
    return {k: r for k, r in resources.items() if r["Type"] == cfn_type}


def _render(value: Any) -> str:
    """A CloudFormation string (``Fn::Join`` of literals and references) as plain text."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(_render(part) for part in parts)
    if "Ref" in value:
        return f"REF({value['Ref']})"
    if "Fn::GetAtt" in value:
        return f"GETATT({'.'.join(value['Fn::GetAtt'])})"
    raise AssertionError(f"unexpected intrinsic {value}")


@pytest.fixture(scope="module")
def dashboard(resources: dict[str, Any]) -> dict[str, Any]:
    (board,) = _of_type(resources, "AWS::CloudWatch::Dashboard").values()
    body: dict[str, Any] = json.loads(_render(board["Properties"]["DashboardBody"]))
    return body


@pytest.fixture(scope="module")
def alarms(synthesized: Synthesized) -> dict[str, dict[str, Any]]:
    """``{construct id: AWS::CloudWatch::Alarm properties}``."""
    return {
        name: synthesized.resource(alarm)["Properties"]
        for name, alarm in synthesized.stack.monitoring.alarms.items()
    }


def _emitted_metric_names() -> set[str]:
    record = UsageRecord(
        request_id="req-1",
        tenant_id="acme",
        key_id="k1",
        model="m",
        provider="p",
        endpoint="chat.completions",
        stream=True,
        status=200,
        usage_source="provider",
        latency_ms=1,
        ttfb_ms=1,
        created_at_ms=time.time_ns() // 1_000_000,
    )
    return set(telemetry.request_metrics(record).metric_set)


def _tollgate_metrics(metric_lines: list[list[Any]]) -> set[str]:
    return {line[1] for line in metric_lines if isinstance(line[0], str) and line[0] == telemetry.NAMESPACE}


def _searched_metrics(metric_lines: list[list[Any]]) -> set[str]:
    found = set()
    for line in metric_lines:
        expression = line[-1].get("expression", "") if isinstance(line[-1], dict) else ""
        if expression.startswith("SEARCH("):
            found.add(expression.split('MetricName="')[1].split('"')[0])
    return found


# -- the dashboard --------------------------------------------------------------------------------


def test_the_dashboard_shows_traffic_latency_errors_tokens_cost_throttles_and_lambda(
    dashboard: dict[str, Any],
) -> None:
    titles = [widget["properties"]["title"] for widget in dashboard["widgets"]]

    assert titles == [
        "Traffic",
        "Errors",
        "Latency p50 / p99 (ms)",
        "Errors by provider",
        "Tokens",
        "Cost and charges",
        "Throttles",
        "Lambda duration p99 (ms) and concurrency",
        "Scheduled run (sweeper and rollup)",
        "Alarms",
    ]


def test_every_tollgate_metric_the_dashboard_reads_is_one_the_gateway_emits(
    dashboard: dict[str, Any],
) -> None:
    lines = [line for widget in dashboard["widgets"] for line in widget["properties"].get("metrics", [])]
    read = _tollgate_metrics(lines) | _searched_metrics(lines)

    assert read <= _emitted_metric_names()
    assert {"Requests", "Errors", "UpstreamErrors", "Latency", "TimeToFirstByte", "PromptTokens"} <= read
    assert {"CompletionTokens", "CostMicros", "ChargedMicros"} <= read


def test_latency_is_graphed_at_p50_and_p99(dashboard: dict[str, Any]) -> None:
    (latency,) = [w for w in dashboard["widgets"] if w["properties"]["title"].startswith("Latency")]
    stats = {(line[1], line[-1]["stat"]) for line in latency["properties"]["metrics"]}

    assert stats == {
        ("Latency", "p50"),
        ("Latency", "p99"),
        ("TimeToFirstByte", "p50"),
        ("TimeToFirstByte", "p99"),
    }


def test_errors_by_provider_search_the_provider_dimension(dashboard: dict[str, Any]) -> None:
    (widget,) = [w for w in dashboard["widgets"] if w["properties"]["title"] == "Errors by provider"]
    expressions = [line[-1]["expression"] for line in widget["properties"]["metrics"]]

    assert expressions == [
        "SEARCH('{Tollgate,provider} MetricName=\"UpstreamErrors\"', 'Sum', 300)",
        "SEARCH('{Tollgate,provider} MetricName=\"Errors\"', 'Sum', 300)",
    ]


def test_throttles_cover_every_function_and_every_table(
    dashboard: dict[str, Any], synthesized: Synthesized, service_functions: dict[str, Any]
) -> None:
    (widget,) = [w for w in dashboard["widgets"] if w["properties"]["title"] == "Throttles"]
    lines = widget["properties"]["metrics"]
    throttled_functions = {line[3] for line in lines if line[:2] == ["AWS/Lambda", "Throttles"]}
    throttled_tables = {line[3] for line in lines if line[0] == "AWS/DynamoDB"}

    assert throttled_functions == {
        f"REF({synthesized.logical_id(fn.function)})" for fn in service_functions.values()
    }
    assert throttled_tables == {
        f"REF({synthesized.logical_id(synthesized.stack.tables.table(schema))})" for schema in ALL_TABLES
    }


def test_lambda_duration_and_concurrency_of_every_function(dashboard: dict[str, Any]) -> None:
    (widget,) = [w for w in dashboard["widgets"] if w["properties"]["title"].startswith("Lambda duration")]
    lines = widget["properties"]["metrics"]

    assert (
        sum(1 for line in lines if line[:2] == ["AWS/Lambda", "Duration"] and line[-1]["stat"] == "p99") == 4
    )
    assert sum(1 for line in lines if line[:2] == ["AWS/Lambda", "ConcurrentExecutions"]) == 4


# -- alarms ---------------------------------------------------------------------------------------


def test_the_alarms_are_the_ones_that_need_a_human(alarms: dict[str, dict[str, Any]]) -> None:
    assert set(alarms) == {
        "ServerErrorRate",
        "UpstreamFailureRate",
        "LatencyP99",
        "TimeToFirstByteP99",
        *(f"{schema.logical_name}Throttles" for schema in ALL_TABLES),
        "RollupFailures",
        "RollupDeadLetters",
    }
    for properties in alarms.values():
        assert properties["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
        assert properties["TreatMissingData"] == "notBreaching"
        assert properties["AlarmDescription"].startswith("Tollgate: ")


def _stat(metrics: list[dict[str, Any]], metric_id: str) -> dict[str, Any]:
    (stat,) = [m["MetricStat"] for m in metrics if m["Id"] == metric_id]
    return stat  # type: ignore[no-any-return]


def test_the_5xx_rate_is_server_errors_over_requests_in_percent(alarms: dict[str, dict[str, Any]]) -> None:
    alarm = alarms["ServerErrorRate"]
    metrics = alarm["Metrics"]

    assert metrics[0]["Expression"] == "IF(requests > 0, 100 * errors / requests, 0)"
    assert _stat(metrics, "errors")["Metric"]["MetricName"] == "5XXError"
    assert _stat(metrics, "requests")["Metric"]["MetricName"] == "Count"
    assert {_stat(metrics, i)["Metric"]["Namespace"] for i in ("errors", "requests")} == {"AWS/ApiGateway"}
    assert alarm["Threshold"] == 5


def test_the_upstream_failure_rate_reads_the_gateways_own_totals(alarms: dict[str, dict[str, Any]]) -> None:
    metrics = alarms["UpstreamFailureRate"]["Metrics"]
    service = [{"Name": "service", "Value": telemetry.SERVICE}]

    assert _stat(metrics, "failures")["Metric"] == {
        "Dimensions": service,
        "MetricName": telemetry.UPSTREAM_ERRORS,
        "Namespace": telemetry.NAMESPACE,
    }
    assert _stat(metrics, "requests")["Metric"]["MetricName"] == telemetry.REQUESTS
    assert alarms["UpstreamFailureRate"]["Threshold"] == 10


@pytest.mark.parametrize(
    ("alarm", "metric"), [("LatencyP99", "Latency"), ("TimeToFirstByteP99", "TimeToFirstByte")]
)
def test_p99_alarms_read_extended_statistics(
    alarms: dict[str, dict[str, Any]], alarm: str, metric: str
) -> None:
    properties = alarms[alarm]

    assert (properties["Namespace"], properties["MetricName"]) == ("Tollgate", metric)
    assert properties["ExtendedStatistic"] == "p99"
    assert properties["Dimensions"] == [{"Name": "service", "Value": "tollgate"}]


@pytest.mark.parametrize("schema", ALL_TABLES, ids=lambda s: s.logical_name)
def test_each_table_has_a_throttle_alarm(
    alarms: dict[str, dict[str, Any]], synthesized: Synthesized, schema: Any
) -> None:
    metrics = alarms[f"{schema.logical_name}Throttles"]["Metrics"]
    table = {"Ref": synthesized.logical_id(synthesized.stack.tables.table(schema))}
    stats = [m["MetricStat"]["Metric"] for m in metrics if "MetricStat" in m]

    assert {stat["MetricName"] for stat in stats} == {"ReadThrottleEvents", "WriteThrottleEvents"}
    assert all(stat["Dimensions"] == [{"Name": "TableName", "Value": table}] for stat in stats)
    assert alarms[f"{schema.logical_name}Throttles"]["DatapointsToAlarm"] == 2


def test_rollup_failures_and_dead_letters_alarm(
    alarms: dict[str, dict[str, Any]], synthesized: Synthesized, service_functions: dict[str, Any]
) -> None:
    failures, dead = alarms["RollupFailures"], alarms["RollupDeadLetters"]
    queue = synthesized.logical_id(synthesized.stack.schedule.dead_letters)

    assert (failures["Namespace"], failures["MetricName"]) == ("AWS/Lambda", "Errors")
    assert failures["Dimensions"] == [
        {
            "Name": "FunctionName",
            "Value": {"Ref": synthesized.logical_id(service_functions["rollup"].function)},
        }
    ]
    assert (dead["Namespace"], dead["MetricName"]) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
    assert dead["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [queue, "QueueName"]}}]
    assert (dead["Threshold"], dead["EvaluationPeriods"]) == (1, 1)


# -- where alarms go -------------------------------------------------------------------------------


def test_every_alarm_notifies_the_topic_on_alarm_and_when_ok(
    alarms: dict[str, dict[str, Any]], synthesized: Synthesized, resources: dict[str, Any]
) -> None:
    topic = {"Ref": synthesized.logical_id(synthesized.stack.monitoring.topic)}
    every_alarm = _of_type(resources, "AWS::CloudWatch::Alarm")

    assert len(every_alarm) == len(alarms)  # no alarm outside the construct's list
    for name, properties in every_alarm.items():
        assert properties["Properties"]["AlarmActions"] == [topic], name
        assert properties["Properties"]["OKActions"] == [topic], name


def test_the_alarm_topic_is_encrypted_with_the_stacks_key_which_cloudwatch_may_use(
    synthesized: Synthesized, resources: dict[str, Any]
) -> None:
    key_id = synthesized.logical_id(synthesized.stack.secrets.key)
    (topic,) = _of_type(resources, "AWS::SNS::Topic").values()
    key_statements = resources[key_id]["Properties"]["KeyPolicy"]["Statement"]

    assert topic["Properties"]["KmsMasterKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}
    assert {
        "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
        "Effect": "Allow",
        "Principal": {"Service": "cloudwatch.amazonaws.com"},
        "Resource": "*",
        "Sid": "AllowCloudWatchAlarmsToPublishToTheAlarmTopic",
    } in key_statements


def test_the_alarm_topic_takes_tls_only_and_publishes_from_this_accounts_alarms(
    synthesized: Synthesized, resources: dict[str, Any]
) -> None:
    topic = {"Ref": synthesized.logical_id(synthesized.stack.monitoring.topic)}
    (policy,) = _of_type(resources, "AWS::SNS::TopicPolicy").values()
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    (deny,) = [s for s in statements if s["Effect"] == "Deny"]
    (allow,) = [s for s in statements if s["Effect"] == "Allow"]

    assert policy["Properties"]["Topics"] == [topic]
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert (deny["Action"], deny["Principal"], deny["Resource"]) == ("sns:Publish", "*", topic)
    assert allow["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert (allow["Action"], allow["Resource"]) == ("sns:Publish", topic)
    assert allow["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    assert ":alarm:*" in _render(allow["Condition"]["ArnLike"]["aws:SourceArn"])


def test_the_topic_arn_is_an_output_and_nobody_is_subscribed_by_default(
    synthesized: Synthesized, resources: dict[str, Any]
) -> None:
    outputs = synthesized.template.to_json()["Outputs"]

    assert outputs["AlarmTopicArn"]["Value"] == {
        "Ref": synthesized.logical_id(synthesized.stack.monitoring.topic)
    }
    assert _of_type(resources, "AWS::SNS::Subscription") == {}


def test_the_alarm_email_context_value_subscribes_an_address(
    tmp_path_factory: pytest.TempPathFactory, cdk_context: Callable[..., dict[str, Any]]
) -> None:
    context = {**cdk_context(), "alarm_email": "ops@example.com"}
    app = build_app(cdk.App(context=context, outdir=str(tmp_path_factory.mktemp("cdk.out"))))
    assembly = app.synth(skip_validation=True)
    template = Template.from_json(assembly.get_stack_by_name(STACK_NAME).template)

    (subscription,) = template.find_resources("AWS::SNS::Subscription").values()
    (topic_id,) = template.find_resources("AWS::SNS::Topic")
    assert subscription["Properties"] == {
        "Protocol": "email",
        "TopicArn": {"Ref": topic_id},
        "Endpoint": "ops@example.com",
    }


# -- the rollup's dead-letter queue ---------------------------------------------------------------


def test_the_dead_letter_queue_is_encrypted_and_tls_only(
    resources: dict[str, Any], synthesized: Synthesized
) -> None:
    queue_id = synthesized.logical_id(synthesized.stack.schedule.dead_letters)
    (queue,) = _of_type(resources, "AWS::SQS::Queue").items()
    (policy,) = _of_type(resources, "AWS::SQS::QueuePolicy").values()
    statements = policy["Properties"]["PolicyDocument"]["Statement"]

    assert queue[0] == queue_id
    assert queue[1]["Properties"]["SqsManagedSseEnabled"] is True
    assert queue[1]["Properties"]["MessageRetentionPeriod"] == 14 * 86_400
    assert {
        "Action": "sqs:*",
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        "Effect": "Deny",
        "Principal": {"AWS": "*"},
        "Resource": {"Fn::GetAtt": [queue_id, "Arn"]},
    } in statements


def test_undelivered_schedule_events_are_dead_lettered(
    resources: dict[str, Any], synthesized: Synthesized
) -> None:
    queue = {"Fn::GetAtt": [synthesized.logical_id(synthesized.stack.schedule.dead_letters), "Arn"]}
    rule = synthesized.resource(synthesized.stack.schedule.rule)["Properties"]
    (policy,) = _of_type(resources, "AWS::SQS::QueuePolicy").values()
    allows = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]

    (target,) = rule["Targets"]
    assert target["DeadLetterConfig"] == {"Arn": queue}
    (allow,) = allows
    assert allow["Principal"] == {"Service": "events.amazonaws.com"}
    assert allow["Action"] == "sqs:SendMessage"
    assert allow["Condition"] == {
        "ArnEquals": {
            "aws:SourceArn": {"Fn::GetAtt": [synthesized.logical_id(synthesized.stack.schedule.rule), "Arn"]}
        }
    }


def test_failed_runs_are_retried_once_then_dead_lettered(
    resources: dict[str, Any], synthesized: Synthesized, service_functions: dict[str, Any]
) -> None:
    (config,) = _of_type(resources, "AWS::Lambda::EventInvokeConfig").values()
    queue = {"Fn::GetAtt": [synthesized.logical_id(synthesized.stack.schedule.dead_letters), "Arn"]}

    assert config["Properties"] == {
        "FunctionName": {"Ref": synthesized.logical_id(service_functions["rollup"].function)},
        "Qualifier": "$LATEST",
        "MaximumRetryAttempts": 1,
        "MaximumEventAgeInSeconds": 300,
        "DestinationConfig": {"OnFailure": {"Destination": queue}},
    }
