"""The REST API: routes, the streaming integration, logging, throttling and OpenAI-shaped errors."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.infra.conftest import Synthesized

STREAMING_URI_SUFFIX = "/response-streaming-invocations"


def _of_type(resources: dict[str, Any], cfn_type: str) -> dict[str, dict[str, Any]]:
    return {k: r for k, r in resources.items() if r["Type"] == cfn_type}


def _paths(resources: dict[str, Any]) -> dict[str, str]:
    """``{resource logical id: full path}``, following ParentId up to the API root."""
    api_resources = _of_type(resources, "AWS::ApiGateway::Resource")

    def path(logical_id: str) -> str:
        props = api_resources[logical_id]["Properties"]
        parent = props["ParentId"]
        prefix = path(parent["Ref"]) if "Ref" in parent else ""
        return f"{prefix}/{props['PathPart']}"

    return {logical_id: path(logical_id) for logical_id in api_resources}


def _integration_function(integration: dict[str, Any]) -> str:
    """The logical id of the Lambda function an AWS_PROXY integration invokes."""
    parts = integration["Uri"]["Fn::Join"][1]
    return next(
        str(part["Fn::GetAtt"][0]) for part in parts if isinstance(part, dict) and "Fn::GetAtt" in part
    )


@pytest.fixture(scope="module")
def routes(resources: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """``{(http method, path): method properties}`` for every method on the API."""
    paths = _paths(resources)
    result = {}
    for method in _of_type(resources, "AWS::ApiGateway::Method").values():
        props = method["Properties"]
        resource_id = props["ResourceId"]
        path = paths[resource_id["Ref"]] if "Ref" in resource_id else "/"
        result[(props["HttpMethod"], path)] = props
    return result


API_FUNCTIONS = ("stream", "gateway", "admin")


@pytest.fixture(scope="module")
def function_ids(synthesized: Synthesized, service_functions: dict[str, Any]) -> dict[str, str]:
    """Logical ids of the functions behind the API (the scheduled rollup is not one of them)."""
    return {name: synthesized.logical_id(service_functions[name].function) for name in API_FUNCTIONS}


def test_the_api_is_a_regional_rest_api(resources: dict[str, Any]) -> None:
    apis = list(_of_type(resources, "AWS::ApiGateway::RestApi").values())

    assert len(apis) == 1
    assert apis[0]["Properties"]["EndpointConfiguration"] == {"Types": ["REGIONAL"]}


def test_routes_reach_the_right_function(
    routes: dict[tuple[str, str], dict[str, Any]], function_ids: dict[str, str]
) -> None:
    served_by = {route: _integration_function(props["Integration"]) for route, props in routes.items()}

    assert served_by == {
        ("POST", "/v1/chat/completions"): function_ids["stream"],
        ("POST", "/v1/messages"): function_ids["stream"],
        ("GET", "/v1/models"): function_ids["gateway"],
        ("POST", "/v1/embeddings"): function_ids["gateway"],
        ("POST", "/v1/images/generations"): function_ids["gateway"],
        ("ANY", "/admin/{proxy+}"): function_ids["admin"],
        ("ANY", "/console"): function_ids["admin"],
        ("ANY", "/console/{proxy+}"): function_ids["admin"],
    }


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_chat_routes_stream_for_up_to_15_minutes(
    routes: dict[tuple[str, str], dict[str, Any]], path: str
) -> None:
    integration = routes[("POST", path)]["Integration"]

    assert integration["Type"] == "AWS_PROXY"
    assert integration["ResponseTransferMode"] == "STREAM"
    assert integration["TimeoutInMillis"] == 15 * 60 * 1000
    # Streaming integrations call InvokeWithResponseStream, which has its own URI.
    uri_parts = integration["Uri"]["Fn::Join"][1]
    assert ":lambda:path/2021-11-15/functions/" in uri_parts
    assert uri_parts[-1] == STREAMING_URI_SUFFIX


def test_other_routes_are_buffered_proxies(routes: dict[tuple[str, str], dict[str, Any]]) -> None:
    for (method, path), props in routes.items():
        if path in ("/v1/chat/completions", "/v1/messages"):
            continue
        integration = props["Integration"]
        assert integration["Type"] == "AWS_PROXY", path
        assert integration.get("ResponseTransferMode", "BUFFERED") == "BUFFERED", (method, path)
        assert integration["Uri"]["Fn::Join"][1][-1] == "/invocations", path


def test_no_api_gateway_authorizer_the_app_authenticates(
    routes: dict[tuple[str, str], dict[str, Any]], resources: dict[str, Any]
) -> None:
    assert not _of_type(resources, "AWS::ApiGateway::Authorizer")
    for route, props in routes.items():
        assert props["AuthorizationType"] == "NONE", route


def test_each_route_may_invoke_only_its_function(
    resources: dict[str, Any], function_ids: dict[str, str]
) -> None:
    permissions = [
        permission
        for permission in _of_type(resources, "AWS::Lambda::Permission").values()
        if permission["Properties"]["Principal"] != "events.amazonaws.com"  # the schedule's own
    ]

    assert len(permissions) == 8, "one per method; no extra test-invoke permissions"
    for permission in permissions:
        props = permission["Properties"]
        assert props["Principal"] == "apigateway.amazonaws.com"
        assert props["Action"] == "lambda:InvokeFunction"
        assert props["FunctionName"]["Fn::GetAtt"][0] in function_ids.values()


def test_stage_logs_traces_meters_and_throttles(synthesized: Synthesized, resources: dict[str, Any]) -> None:
    (stage,) = _of_type(resources, "AWS::ApiGateway::Stage").values()
    props = stage["Properties"]
    access_log_group = synthesized.logical_id(synthesized.stack.api.access_logs)

    assert props["TracingEnabled"] is True
    assert access_log_group in json.dumps(props["AccessLogSetting"]["DestinationArn"])
    access_log = json.loads(props["AccessLogSetting"]["Format"])
    assert access_log["requestId"] == "$context.requestId"
    assert access_log["status"] == "$context.status"
    assert access_log["integrationError"] == "$context.integrationErrorMessage"
    (settings,) = props["MethodSettings"]
    assert settings["HttpMethod"] == "*"
    assert settings["ResourcePath"] == "/*"
    assert settings["MetricsEnabled"] is True
    assert settings["LoggingLevel"] == "ERROR"
    assert settings["DataTraceEnabled"] is False, "never log request or response bodies"
    assert settings["ThrottlingRateLimit"] > 0
    assert settings["ThrottlingBurstLimit"] >= settings["ThrottlingRateLimit"]
    assert resources[access_log_group]["Properties"]["RetentionInDays"] > 0


def _gateway_responses(resources: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        r["Properties"]["ResponseType"]: r["Properties"]
        for r in _of_type(resources, "AWS::ApiGateway::GatewayResponse").values()
    }


def _render(template: str, message: str, response_type: str) -> Any:
    """Substitute API Gateway's variables as it would; messageString arrives already JSON-quoted."""
    rendered = template.replace("$context.error.messageString", json.dumps(message)).replace(
        "$context.error.responseType", response_type
    )
    return json.loads(rendered)


@pytest.mark.parametrize(
    ("response_type", "error_type"),
    [
        ("DEFAULT_4XX", "invalid_request_error"),
        ("DEFAULT_5XX", "server_error"),
        ("THROTTLED", "rate_limit_error"),
    ],
)
def test_api_gateway_errors_use_openais_error_shape(
    resources: dict[str, Any], response_type: str, error_type: str
) -> None:
    template = _gateway_responses(resources)[response_type]["ResponseTemplates"]["application/json"]

    body = _render(template, 'Quote " and \\ backslash', response_type)

    assert body == {
        "error": {
            "message": 'Quote " and \\ backslash',
            "type": error_type,
            "param": None,
            "code": response_type,
        }
    }


def test_unknown_routes_are_404s_not_missing_token_403s(resources: dict[str, Any]) -> None:
    response = _gateway_responses(resources)["MISSING_AUTHENTICATION_TOKEN"]

    body = _render(
        response["ResponseTemplates"]["application/json"], "Missing Authentication Token", "MISSING_AUTH"
    )

    assert response["StatusCode"] == "404"
    assert body["error"]["type"] == "invalid_request_error"
    assert "Unknown route" in body["error"]["message"]


def test_outputs_give_the_stage_url_and_the_sdk_base_url(synthesized: Synthesized) -> None:
    outputs = synthesized.template.to_json()["Outputs"]
    stage = {"Ref": synthesized.logical_id(synthesized.stack.api.api.deployment_stage)}
    api = {"Ref": synthesized.logical_id(synthesized.stack.api.api)}

    stage_url = outputs["ApiUrl"]["Value"]["Fn::Join"][1]
    assert stage_url[:2] == ["https://", api]
    assert stage_url[-3:] == ["/", stage, "/"]
    assert outputs["OpenAIBaseUrl"]["Value"]["Fn::Join"][1][-3:] == ["/", stage, "/v1"]
