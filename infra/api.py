"""The public REST API (regional): one base URL for OpenAI and Anthropic clients, and the admin API.

Routing:
- ``POST /v1/chat/completions``, ``POST /v1/messages``   -> stream function, ``responseTransferMode: STREAM``
  (every chat call goes there, streaming or not: API Gateway cannot route on the body's ``stream`` flag);
- ``GET /v1/models``, ``POST /v1/embeddings``, ``POST /v1/images/generations`` -> gateway function;
- ``ANY /admin/{proxy+}``, ``ANY /console``, ``ANY /console/{proxy+}``          -> admin function.

There is no API Gateway authorizer: the application authenticates hub keys itself (HMAC lookup with
revocation, expiry and per-key limits), which an authorizer could only duplicate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.nag import acknowledge

# Regional REST integrations may stream for at most 15 minutes.
STREAM_INTEGRATION_TIMEOUT = Duration.minutes(15)


@dataclass(frozen=True, kw_only=True)
class Throttling:
    """Stage-wide defaults: a flood guard, not the budget (budgets and RPM/TPM live in the ledger)."""

    rate_limit: int = 200
    burst_limit: int = 400


@dataclass(frozen=True)
class _GatewayError:
    """An API Gateway-generated error rendered as OpenAI's error object."""

    construct_id: str
    response_type: apigw.ResponseType
    error_type: str
    status_code: str | None = None
    message: str | None = None  # a fixed message; otherwise API Gateway's own message


# API Gateway's own errors (throttling, unknown route, integration failure) in OpenAI's error shape.
# "Missing Authentication Token" is what API Gateway answers for a route that does not exist when no
# authorizer is configured; clients should see a 404 instead.
GATEWAY_ERRORS: tuple[_GatewayError, ...] = (
    _GatewayError("Default4xx", apigw.ResponseType.DEFAULT_4_XX, "invalid_request_error"),
    _GatewayError("Default5xx", apigw.ResponseType.DEFAULT_5_XX, "server_error"),
    _GatewayError("Throttled", apigw.ResponseType.THROTTLED, "rate_limit_error"),
    _GatewayError(
        "UnknownRoute",
        apigw.ResponseType.MISSING_AUTHENTICATION_TOKEN,
        "invalid_request_error",
        status_code="404",
        message="Unknown route: check the method and the URL (the base URL ends in /v1).",
    ),
)


def openai_error_template(error_type: str, message: str | None = None) -> str:
    """The body template for a gateway response.

    ``$context.error.messageString`` is already a quoted, escaped JSON string, so it goes in unquoted.
    """
    rendered_message = json.dumps(message) if message is not None else "$context.error.messageString"
    return (
        '{"error":{"message":' + rendered_message + ',"type":' + json.dumps(error_type) + ',"param":null,'
        '"code":"$context.error.responseType"}}'
    )


ACCESS_LOG_FORMAT = json.dumps(
    {
        "requestId": apigw.AccessLogField.context_request_id(),
        "extendedRequestId": apigw.AccessLogField.context_extended_request_id(),
        "requestTime": apigw.AccessLogField.context_request_time(),
        "ip": apigw.AccessLogField.context_identity_source_ip(),
        "userAgent": apigw.AccessLogField.context_identity_user_agent(),
        "method": apigw.AccessLogField.context_http_method(),
        "resourcePath": apigw.AccessLogField.context_resource_path(),
        "path": apigw.AccessLogField.context_path(),
        "protocol": apigw.AccessLogField.context_protocol(),
        "status": apigw.AccessLogField.context_status(),
        "responseLength": apigw.AccessLogField.context_response_length(),
        "responseLatency": apigw.AccessLogField.context_response_latency(),
        "integrationStatus": apigw.AccessLogField.context_integration_status(),
        "integrationLatency": apigw.AccessLogField.context_integration_latency(),
        "integrationError": apigw.AccessLogField.context_integration_error_message(),
        "errorType": apigw.AccessLogField.context_error_response_type(),
        "errorMessage": apigw.AccessLogField.context_error_message(),
        "xrayTraceId": apigw.AccessLogField.context_xray_trace_id(),
    }
)


class TollgateApi(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stream: lambda_.IFunction,
        gateway: lambda_.IFunction,
        admin: lambda_.IFunction,
        stage_name: str = "prod",
        throttling: Throttling | None = None,
        access_log_retention: logs.RetentionDays = logs.RetentionDays.THREE_MONTHS,
    ) -> None:
        super().__init__(scope, construct_id)
        throttling = throttling or Throttling()
        self.access_logs = logs.LogGroup(
            self, "AccessLogs", retention=access_log_retention, removal_policy=RemovalPolicy.DESTROY
        )
        self.api = apigw.RestApi(
            self,
            "Api",
            rest_api_name=f"{Stack.of(self).stack_name}-api",
            description="Tollgate: OpenAI- and Anthropic-compatible AI gateway, admin API and console",
            endpoint_configuration=apigw.EndpointConfiguration(types=[apigw.EndpointType.REGIONAL]),
            # API Gateway needs an account-level role to write any CloudWatch log (access logs included).
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=RemovalPolicy.RETAIN,
            deploy_options=apigw.StageOptions(
                stage_name=stage_name,
                access_log_destination=apigw.LogGroupLogDestination(self.access_logs),
                access_log_format=apigw.AccessLogFormat.custom(ACCESS_LOG_FORMAT),
                metrics_enabled=True,
                tracing_enabled=True,
                # Execution logs for errors only, never request/response bodies (prompts, keys).
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,
                throttling_rate_limit=throttling.rate_limit,
                throttling_burst_limit=throttling.burst_limit,
            ),
        )
        for error in GATEWAY_ERRORS:
            self.api.add_gateway_response(
                error.construct_id,
                type=error.response_type,
                status_code=error.status_code,
                templates={"application/json": openai_error_template(error.error_type, error.message)},
            )

        self._routes(stream=stream, gateway=gateway, admin=admin)
        self._acknowledge()

    @property
    def url(self) -> str:
        return self.api.url

    def _routes(
        self, *, stream: lambda_.IFunction, gateway: lambda_.IFunction, admin: lambda_.IFunction
    ) -> None:
        # allow_test_invoke=False: one invoke permission per method, none for console test calls.
        streaming = apigw.LambdaIntegration(
            stream,
            proxy=True,
            allow_test_invoke=False,
            response_transfer_mode=apigw.ResponseTransferMode.STREAM,
            timeout=STREAM_INTEGRATION_TIMEOUT,
        )
        buffered = apigw.LambdaIntegration(gateway, proxy=True, allow_test_invoke=False)
        administration = apigw.LambdaIntegration(admin, proxy=True, allow_test_invoke=False)

        v1 = self.api.root.add_resource("v1")
        v1.add_resource("chat").add_resource("completions").add_method("POST", streaming)
        v1.add_resource("messages").add_method("POST", streaming)
        v1.add_resource("models").add_method("GET", buffered)
        v1.add_resource("embeddings").add_method("POST", buffered)
        v1.add_resource("images").add_resource("generations").add_method("POST", buffered)

        self.api.root.add_resource("admin").add_proxy(default_integration=administration, any_method=True)
        console = self.api.root.add_resource("console")
        console.add_method("ANY", administration)
        console.add_proxy(default_integration=administration, any_method=True)

    def _acknowledge(self) -> None:
        no_authorizer = (
            "Tollgate authenticates every request itself: hub keys (HMAC of the secret with a pepper, "
            "revocation within 60 s, expiry, per-key model lists and limits) and admin OIDC/admin keys. "
            "An API Gateway authorizer would duplicate that lookup and add latency to each call."
        )
        acknowledge(self.api, "AwsSolutions-APIG4", no_authorizer)
        acknowledge(self.api, "AwsSolutions-COG4", no_authorizer)
        acknowledge(
            self.api,
            "AwsSolutions-APIG2",
            "Bodies are validated by the application's pydantic wire schemas (OpenAI/Anthropic) with "
            "OpenAI-shaped errors; API Gateway models would duplicate them and drift.",
        )
        acknowledge(
            self.api,
            "AwsSolutions-APIG3",
            "WAF is an operator choice with its own cost; rate limits and budgets are enforced per key "
            "in the ledger, and the stage has throttling defaults. Attach a WebACL to the stage if wanted.",
        )
        acknowledge(
            self.api,
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
            "AmazonAPIGatewayPushToCloudWatchLogs]",
            "The account-level API Gateway logging role uses the AWS-managed policy that API Gateway "
            "documents for it; it is assumable only by apigateway.amazonaws.com.",
        )
