"""The Tollgate stack: composes one construct per concern, and nothing else."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from infra.api import TollgateApi
from infra.auth import TollgateAuth
from infra.functions import TollgateFunctions
from infra.layer import TollgateLayer
from infra.monitoring import TollgateMonitoring
from infra.schedule import TollgateSchedule
from infra.secrets import TollgateSecrets
from infra.tables import TollgateTables


class TollgateStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.tables = TollgateTables(self, "Tables")
        self.secrets = TollgateSecrets(self, "Secrets")
        self.layer = TollgateLayer(self, "Runtime")
        self.auth = TollgateAuth(self, "Auth")
        self.functions = TollgateFunctions(
            self,
            "Functions",
            tables=self.tables,
            secrets=self.secrets,
            layer=self.layer.layer,
            auth=self.auth,
        )
        self.api = TollgateApi(
            self,
            "Api",
            stream=self.functions.stream.function,
            gateway=self.functions.gateway.function,
            admin=self.functions.admin.function,
        )
        self.schedule = TollgateSchedule(self, "Schedule", rollup=self.functions.rollup.function)
        functions = self.functions
        self.monitoring = TollgateMonitoring(
            self,
            "Monitoring",
            api=self.api.api,
            functions={
                "stream": functions.stream.function,
                "gateway": functions.gateway.function,
                "admin": functions.admin.function,
                "rollup": functions.rollup.function,
            },
            tables=self.tables,
            rollup=functions.rollup.function,
            dead_letters=self.schedule.dead_letters,
            key=self.secrets.key,
            # ``cdk deploy -c alarm_email=ops@example.com`` subscribes an address to every alarm.
            alarm_email=self.node.try_get_context("alarm_email") or None,
        )

        CfnOutput(self, "ApiUrl", value=self.api.url, description="Root URL of the Tollgate API stage")
        CfnOutput(
            self,
            "OpenAIBaseUrl",
            value=f"{self.api.url}v1",
            description="Base URL for OpenAI and Anthropic SDK clients",
        )
        CfnOutput(
            self,
            "AdminUserPoolId",
            value=self.auth.user_pool.user_pool_id,
            description="Cognito user pool of admin users (put each in a tollgate-<role> group)",
        )
        CfnOutput(
            self,
            "AdminClientId",
            value=self.auth.client.user_pool_client_id,
            description="App client for admin sign-in (cognito-idp initiate-auth --client-id)",
        )
        CfnOutput(self, "AdminOidcIssuer", value=self.auth.issuer, description="Issuer of admin ID tokens")
        CfnOutput(
            self,
            "AlarmTopicArn",
            value=self.monitoring.topic.topic_arn,
            description="SNS topic every alarm notifies (subscribe a pager or an address to it)",
        )
        CfnOutput(
            self,
            "AdminKeySecretArn",
            value=self.secrets.admin_key.secret_arn,
            description="Secrets Manager ARN of the bootstrap admin key (read it with get-secret-value)",
        )
