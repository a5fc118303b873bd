"""``ServiceFunction``: the one way Tollgate defines a Lambda function.

Every function gets the same platform (Python 3.13 on arm64), the shared layer, JSON logs into its own
log group with a retention, active X-Ray tracing, and its own role that starts with no permissions:
whatever a function may do is granted to ``function.role`` by the stack, one grant per need.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.layer import LAYER_ARCHITECTURE, LAYER_RUNTIME
from infra.nag import acknowledge

_ASSET_EXCLUDES = ["__pycache__", "*.pyc", ".pytest_cache", "tests"]


@dataclass(frozen=True, kw_only=True)
class ServiceFunctionProps:
    code_dir: Path
    handler: str
    description: str
    layers: Sequence[lambda_.ILayerVersion]
    environment: Mapping[str, str] = field(default_factory=dict)
    memory_size: int = 1024
    timeout: Duration = field(default_factory=lambda: Duration.seconds(29))
    reserved_concurrency: int | None = None
    log_retention: logs.RetentionDays = logs.RetentionDays.ONE_MONTH
    application_log_level: lambda_.ApplicationLogLevel = lambda_.ApplicationLogLevel.INFO


class ServiceFunction(Construct):
    def __init__(self, scope: Construct, construct_id: str, props: ServiceFunctionProps) -> None:
        super().__init__(scope, construct_id)
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"Tollgate {construct_id} function (least privilege, granted per need)",
        )
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            retention=props.log_retention,
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.function = lambda_.Function(
            self,
            "Function",
            description=props.description,
            runtime=LAYER_RUNTIME,
            architecture=LAYER_ARCHITECTURE,
            code=lambda_.Code.from_asset(str(props.code_dir), exclude=_ASSET_EXCLUDES),
            handler=props.handler,
            layers=list(props.layers),
            environment=dict(props.environment),
            memory_size=props.memory_size,
            timeout=props.timeout,
            reserved_concurrent_executions=props.reserved_concurrency,
            role=self.role,
            log_group=self.log_group,
            logging_format=lambda_.LoggingFormat.JSON,
            application_log_level_v2=props.application_log_level,
            system_log_level_v2=lambda_.SystemLogLevel.WARN,
            tracing=lambda_.Tracing.ACTIVE,
        )
        # Writing its own log group is the one permission every function needs; scoped to that group.
        self.log_group.grant(self.role, "logs:CreateLogStream", "logs:PutLogEvents")
        acknowledge(
            self.function,
            "AwsSolutions-L1",
            "Python 3.13 is pinned on purpose: the shared layer's compiled wheels and .pyc files are "
            "built and tested for 3.13 (see infra/layer.py); moving runtimes is a deliberate upgrade.",
        )
        acknowledge(
            self.role,
            "AwsSolutions-IAM5[Resource::*]",
            "X-Ray PutTraceSegments/PutTelemetryRecords (added by tracing=ACTIVE) do not support "
            "resource-level permissions; the actions are explicit, only the resource is '*'.",
        )

    @property
    def grantee(self) -> iam.IGrantable:
        return self.role
