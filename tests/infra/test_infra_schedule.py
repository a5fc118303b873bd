"""The schedule: EventBridge runs the rollup function (the hold sweeper) every 5 minutes, and only it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.infra.conftest import Synthesized


def _of_type(resources: dict[str, Any], cfn_type: str) -> dict[str, dict[str, Any]]:
    return {k: r for k, r in resources.items() if r["Type"] == cfn_type}


def test_one_rule_runs_the_rollup_every_5_minutes(
    synthesized: Synthesized, resources: dict[str, Any], service_functions: dict[str, Any]
) -> None:
    rules = _of_type(resources, "AWS::Events::Rule")
    rollup = {"Fn::GetAtt": [synthesized.logical_id(service_functions["rollup"].function), "Arn"]}

    assert list(rules) == [synthesized.logical_id(synthesized.stack.schedule.rule)]
    (props,) = (rule["Properties"] for rule in rules.values())
    assert props["ScheduleExpression"] == "rate(5 minutes)"
    assert props["State"] == "ENABLED"
    assert "EventPattern" not in props
    (target,) = props["Targets"]
    assert target["Arn"] == rollup
    # Retries for failed deliveries; an event older than one period is dropped (the next run does it).
    assert target["RetryPolicy"] == {"MaximumRetryAttempts": 2, "MaximumEventAgeInSeconds": 300}
    assert "Input" not in target, "the sweep takes no input"


def test_only_the_rule_may_invoke_the_rollup(
    synthesized: Synthesized, resources: dict[str, Any], service_functions: dict[str, Any]
) -> None:
    rule_arn = {"Fn::GetAtt": [synthesized.logical_id(synthesized.stack.schedule.rule), "Arn"]}
    rollup_id = synthesized.logical_id(service_functions["rollup"].function)
    permissions = _of_type(resources, "AWS::Lambda::Permission").values()

    by_events = [
        p["Properties"] for p in permissions if p["Properties"]["Principal"] == "events.amazonaws.com"
    ]
    assert by_events == [
        {
            "Action": "lambda:InvokeFunction",
            "FunctionName": {"Fn::GetAtt": [rollup_id, "Arn"]},
            "Principal": "events.amazonaws.com",
            "SourceArn": rule_arn,
        }
    ]
    on_rollup = [p for p in permissions if p["Properties"]["FunctionName"]["Fn::GetAtt"][0] == rollup_id]
    assert len(on_rollup) == 1, "the rollup is not behind the API"
