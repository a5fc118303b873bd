"""Monitoring: one CloudWatch dashboard and the alarms that say Tollgate needs a human.

Tollgate's own metrics come from ``tollgate.telemetry``: one EMF line per settled request in the
``Tollgate`` namespace, with dimension sets ``[service]`` (the totals alarms watch), ``[provider]``
and ``[provider, model]``; the dashboard reads the per-provider and per-model series with ``SEARCH``.
The rest are AWS's own metrics: API Gateway, Lambda, DynamoDB and the rollup's dead-letter queue.

Alarms (thresholds in ``AlarmThresholds``):

* **5xx rate**: API Gateway 5XXError / Count, in percent;
* **upstream failure rate**: requests that ended 502/504 (the provider failed) / requests;
* **p99 latency** and **p99 time to first byte** of settled requests;
* **DynamoDB throttles**: read or write throttle events, one alarm per table;
* **rollup failures**: the scheduled function's errors, and anything in its dead-letter queue.

Every alarm notifies one SNS topic when it goes into ALARM and when it is OK again. The topic is
TLS-only and encrypted with the stack's customer-managed key, whose policy lets CloudWatch use it:
CloudWatch cannot publish to a topic under the AWS-managed ``alias/aws/sns`` key, whose policy
cannot be changed. ``alarm_email`` (the ``alarm_email`` context value) subscribes an address;
subscribe anything else (a pager, a chat webhook) to the topic (its ARN is a stack output).
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.tables import TollgateTables
from tollgate import telemetry
from tollgate.store.schema import ALL_TABLES

PERIOD = Duration.minutes(5)


@dataclass(frozen=True)
class AlarmThresholds:
    server_error_percent: float = 5.0
    upstream_failure_percent: float = 10.0
    latency_p99_ms: float = 120_000.0
    ttfb_p99_ms: float = 15_000.0
    #: Throttle events per table within one period, sustained for two periods.
    dynamodb_throttles: float = 1.0


def tollgate_metric(name: str, statistic: str = "Sum", **dimensions: str) -> cloudwatch.Metric:
    """A metric from ``tollgate.telemetry``; without dimensions, the service-wide total."""
    return cloudwatch.Metric(
        namespace=telemetry.NAMESPACE,
        metric_name=name,
        dimensions_map=dimensions or {"service": telemetry.SERVICE},
        statistic=statistic,
        period=PERIOD,
    )


def search(name: str, *dimensions: str, label: str, statistic: str = "Sum") -> cloudwatch.MathExpression:
    """One series per value of ``dimensions`` (dashboards only: alarms cannot use SEARCH)."""
    schema = ",".join((telemetry.NAMESPACE, *dimensions))
    return cloudwatch.MathExpression(
        expression=f"SEARCH('{{{schema}}} MetricName=\"{name}\"', '{statistic}', 300)",
        label=label,
        period=PERIOD,
    )


class TollgateMonitoring(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        api: apigw.RestApi,
        functions: dict[str, lambda_.IFunction],
        tables: TollgateTables,
        rollup: lambda_.IFunction,
        dead_letters: sqs.IQueue,
        key: kms.IKey,
        thresholds: AlarmThresholds | None = None,
        alarm_email: str | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        limits = thresholds or AlarmThresholds()
        self.alarms: dict[str, cloudwatch.Alarm] = {}
        self.topic = self._alarm_topic(key, alarm_email)
        self._notify = actions.SnsAction(self.topic)

        requests = tollgate_metric(telemetry.REQUESTS)
        api_requests = api.metric_count(period=PERIOD, statistic="Sum")
        api_5xx = api.metric_server_error(period=PERIOD, statistic="Sum")

        self._alarm(
            "ServerErrorRate",
            cloudwatch.MathExpression(
                expression="IF(requests > 0, 100 * errors / requests, 0)",
                using_metrics={"errors": api_5xx, "requests": api_requests},
                label="5xx responses (%)",
                period=PERIOD,
            ),
            threshold=limits.server_error_percent,
            description="More than this share of API responses were 5xx (percent, 2 of 3 periods)",
        )
        self._alarm(
            "UpstreamFailureRate",
            cloudwatch.MathExpression(
                expression="IF(requests > 0, 100 * failures / requests, 0)",
                using_metrics={"failures": tollgate_metric(telemetry.UPSTREAM_ERRORS), "requests": requests},
                label="upstream failures (%)",
                period=PERIOD,
            ),
            threshold=limits.upstream_failure_percent,
            description="More than this share of requests failed at the provider (502/504, percent)",
        )
        self._alarm(
            "LatencyP99",
            tollgate_metric(telemetry.LATENCY, "p99"),
            threshold=limits.latency_p99_ms,
            description="p99 of request latency (ms, arrival to settlement) is above the threshold",
        )
        self._alarm(
            "TimeToFirstByteP99",
            tollgate_metric(telemetry.TTFB, "p99"),
            threshold=limits.ttfb_p99_ms,
            description="p99 of time to first byte (ms) is above the threshold",
        )
        throttles: list[cloudwatch.IMetric] = []
        for position, schema in enumerate(ALL_TABLES):
            table = tables.table(schema)
            # Ids are per graph: each table's pair needs its own.
            reads, writes = f"reads{position}", f"writes{position}"
            events = cloudwatch.MathExpression(
                expression=f"{reads} + {writes}",
                using_metrics={
                    reads: _table_metric(table.table_name, "ReadThrottleEvents"),
                    writes: _table_metric(table.table_name, "WriteThrottleEvents"),
                },
                label=f"{schema.logical_name} throttle events",
                period=PERIOD,
            )
            throttles.append(events)
            self._alarm(
                f"{schema.logical_name}Throttles",
                events,
                threshold=limits.dynamodb_throttles,
                datapoints=2,
                evaluation_periods=2,
                description=f"DynamoDB is throttling the {schema.logical_name.lower()} table",
            )
        self._alarm(
            "RollupFailures",
            rollup.metric_errors(period=PERIOD, statistic="Sum"),
            threshold=1,
            description="The scheduled run (hold sweeper and usage rollup) failed",
        )
        dead = dead_letters.metric_approximate_number_of_messages_visible(period=PERIOD, statistic="Maximum")
        self._alarm(
            "RollupDeadLetters",
            dead,
            threshold=1,
            datapoints=1,
            evaluation_periods=1,
            description="A scheduled run was dead-lettered: it failed after retries, or was never delivered",
        )

        self.dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            dashboard_name=f"{Stack.of(self).stack_name}-tollgate",
            default_interval=Duration.hours(6),
        )
        width = 12
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Traffic",
                left=[requests.with_(label="requests (settled)"), api_requests.with_(label="API requests")],
                width=width,
            ),
            cloudwatch.GraphWidget(
                title="Errors",
                left=[
                    tollgate_metric(telemetry.ERRORS).with_(label="errors"),
                    tollgate_metric(telemetry.UPSTREAM_ERRORS).with_(label="upstream failures"),
                    tollgate_metric(telemetry.DISCONNECTS).with_(label="client disconnects"),
                    api_5xx.with_(label="API 5xx"),
                    api.metric_client_error(period=PERIOD, statistic="Sum").with_(label="API 4xx"),
                ],
                width=width,
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Latency p50 / p99 (ms)",
                left=[
                    tollgate_metric(telemetry.LATENCY, "p50").with_(label="latency p50"),
                    tollgate_metric(telemetry.LATENCY, "p99").with_(label="latency p99"),
                    tollgate_metric(telemetry.TTFB, "p50").with_(label="first byte p50"),
                    tollgate_metric(telemetry.TTFB, "p99").with_(label="first byte p99"),
                ],
                width=width,
            ),
            cloudwatch.GraphWidget(
                title="Errors by provider",
                left=[
                    search(telemetry.UPSTREAM_ERRORS, "provider", label="upstream failures"),
                    search(telemetry.ERRORS, "provider", label="errors"),
                ],
                width=width,
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Tokens",
                left=[
                    tollgate_metric(telemetry.PROMPT_TOKENS).with_(label="prompt tokens"),
                    tollgate_metric(telemetry.COMPLETION_TOKENS).with_(label="completion tokens"),
                ],
                right=[search(telemetry.REQUESTS, "provider", "model", label="requests by model")],
                width=width,
            ),
            cloudwatch.GraphWidget(
                title="Cost and charges",
                left=[
                    cloudwatch.MathExpression(
                        expression="cost / 1000000",
                        using_metrics={"cost": tollgate_metric(telemetry.COST)},
                        label="provider cost",
                        period=PERIOD,
                    ),
                    cloudwatch.MathExpression(
                        expression="charged / 1000000",
                        using_metrics={"charged": tollgate_metric(telemetry.CHARGED)},
                        label="charged",
                        period=PERIOD,
                    ),
                ],
                width=width,
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Throttles",
                left=[
                    fn.metric_throttles(period=PERIOD, statistic="Sum").with_(label=f"{name} Lambda")
                    for name, fn in functions.items()
                ],
                right=throttles,
                width=width,
            ),
            cloudwatch.GraphWidget(
                title="Lambda duration p99 (ms) and concurrency",
                left=[
                    fn.metric_duration(period=PERIOD, statistic="p99").with_(label=f"{name} p99")
                    for name, fn in functions.items()
                ],
                right=[
                    fn.metric(
                        "ConcurrentExecutions",
                        period=PERIOD,
                        statistic="Maximum",
                        label=f"{name} concurrency",
                    )
                    for name, fn in functions.items()
                ],
                width=width,
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Scheduled run (sweeper and rollup)",
                left=[
                    rollup.metric_invocations(period=PERIOD, statistic="Sum").with_(label="runs"),
                    rollup.metric_errors(period=PERIOD, statistic="Sum").with_(label="failed runs"),
                    dead.with_(label="dead-lettered"),
                ],
                width=width,
            ),
            cloudwatch.AlarmStatusWidget(
                title="Alarms", alarms=list(self.alarms.values()), width=width, height=6
            ),
        )

    def _alarm_topic(self, key: kms.IKey, alarm_email: str | None) -> sns.Topic:
        """The topic every alarm notifies: KMS-encrypted, TLS only, published to by CloudWatch alone."""
        stack = Stack.of(self)
        # CloudWatch encrypts what it publishes with the topic's key; the AWS-managed SNS key cannot allow it.
        key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchAlarmsToPublishToTheAlarmTopic",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
            )
        )
        topic = sns.Topic(
            self,
            "Alarms",
            display_name="Tollgate alarms",
            master_key=key,
            enforce_ssl=True,
        )
        topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowThisAccountsAlarms",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[topic.topic_arn],
                conditions={
                    "ArnLike": {
                        "aws:SourceArn": stack.format_arn(
                            service="cloudwatch",
                            resource="alarm",
                            resource_name="*",
                            arn_format=ArnFormat.COLON_RESOURCE_NAME,
                        )
                    },
                    "StringEquals": {"aws:SourceAccount": stack.account},
                },
            )
        )
        if alarm_email:
            topic.add_subscription(subscriptions.EmailSubscription(alarm_email))
        return topic

    def _alarm(
        self,
        construct_id: str,
        metric: cloudwatch.IMetric,
        *,
        threshold: float,
        description: str,
        datapoints: int = 2,
        evaluation_periods: int = 3,
    ) -> None:
        self.alarms[construct_id] = alarm = cloudwatch.Alarm(
            self,
            construct_id,
            metric=metric,
            threshold=threshold,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=evaluation_periods,
            datapoints_to_alarm=datapoints,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description=f"Tollgate: {description}.",
        )
        alarm.add_alarm_action(self._notify)
        alarm.add_ok_action(self._notify)


def _table_metric(table_name: str, metric_name: str) -> cloudwatch.Metric:
    return cloudwatch.Metric(
        namespace="AWS/DynamoDB",
        metric_name=metric_name,
        dimensions_map={"TableName": table_name},
        statistic="Sum",
        period=PERIOD,
    )
