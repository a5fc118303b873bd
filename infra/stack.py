"""The Tollgate stack: composes one construct per concern, and nothing else."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from infra.api import TollgateApi
from infra.functions import TollgateFunctions
from infra.layer import TollgateLayer
from infra.schedule import TollgateSchedule
from infra.secrets import TollgateSecrets
from infra.tables import TollgateTables


class TollgateStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.tables = TollgateTables(self, "Tables")
        self.secrets = TollgateSecrets(self, "Secrets")
        self.layer = TollgateLayer(self, "Runtime")
        self.functions = TollgateFunctions(
            self, "Functions", tables=self.tables, secrets=self.secrets, layer=self.layer.layer
        )
        self.api = TollgateApi(
            self,
            "Api",
            stream=self.functions.stream.function,
            gateway=self.functions.gateway.function,
            admin=self.functions.admin.function,
        )
        self.schedule = TollgateSchedule(self, "Schedule", rollup=self.functions.rollup.function)

        CfnOutput(self, "ApiUrl", value=self.api.url, description="Root URL of the Tollgate API stage")
        CfnOutput(
            self,
            "OpenAIBaseUrl",
            value=f"{self.api.url}v1",
            description="Base URL for OpenAI and Anthropic SDK clients",
        )
        CfnOutput(
            self,
            "AdminKeySecretArn",
            value=self.secrets.admin_key.secret_arn,
            description="Secrets Manager ARN of the bootstrap admin key (read it with get-secret-value)",
        )
