"""cdk-nag (AWS Solutions): no open finding, and every acknowledgment is deliberate and explained."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_secretsmanager as secretsmanager
from cdk_nag import AwsSolutionsChecks

from app import build_app

if TYPE_CHECKING:
    from tests.infra.conftest import Synthesized

PROVIDER_PREFIX_FINDING = (
    "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:secretsmanager:<AWS::Region>:<AWS::AccountId>:"
    "secret:tollgate/Tollgate/providers/*]"
)

# Model invocation on any foundation model (cross-region profiles) and on this account's profiles.
BEDROCK_FINDINGS = {
    "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:bedrock:*::foundation-model/*]",
    "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:bedrock:<AWS::Region>:<AWS::AccountId>:inference-profile/*]",
}

# Every acknowledged finding, by construct. Adding one here is a reviewed decision, not a side effect.
EXPECTED_ACKNOWLEDGMENTS = {
    "Tollgate/Secrets/Pepper": {"AwsSolutions-SMG4"},
    "Tollgate/Secrets/AdminKey": {"AwsSolutions-SMG4"},
    **{
        f"Tollgate/Functions/{name}/Role": {
            "AwsSolutions-IAM5[Resource::*]",
            PROVIDER_PREFIX_FINDING,
            *BEDROCK_FINDINGS,
        }
        for name in ("Stream", "Gateway")
    },
    "Tollgate/Functions/Admin/Role": {"AwsSolutions-IAM5[Resource::*]", PROVIDER_PREFIX_FINDING},
    # The sweeper reads no secret, so only the X-Ray finding every role carries.
    "Tollgate/Functions/Rollup/Role": {"AwsSolutions-IAM5[Resource::*]"},
    **{
        f"Tollgate/Functions/{name}/Function": {"AwsSolutions-L1"}
        for name in ("Stream", "Gateway", "Admin", "Rollup")
    },
    # The rollup's dead-letter queue is a dead-letter queue: it needs none of its own.
    "Tollgate/Schedule/DeadLetters": {"AwsSolutions-SQS3"},
    # Cognito's Plus feature plan (threat protection) is a paid option; MFA is required instead.
    "Tollgate/Auth/AdminUsers": {"AwsSolutions-COG8"},
    "Tollgate/Api/Api": {
        "AwsSolutions-APIG2",
        "AwsSolutions-APIG3",
        "AwsSolutions-APIG4",
        "AwsSolutions-COG4",
        "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
        "AmazonAPIGatewayPushToCloudWatchLogs]",
    },
}


def test_aws_solutions_checks_find_nothing_open(synthesized: Synthesized) -> None:
    report = AwsSolutionsChecks().validate_scope(synthesized.app)

    findings = [
        f"{violation.rule_name} ({violation.severity}) at {resource.construct_path}: {violation.description}"
        for violation in report.violations
        for resource in violation.violating_resources
    ]
    assert findings == []
    assert report.success


def test_every_acknowledgment_is_expected_and_has_a_reason(synthesized: Synthesized) -> None:
    acknowledged: dict[str, set[str]] = {}
    for construct in synthesized.app.node.find_all():
        for entry in construct.node.metadata:
            if entry.type != cdk.Validations.ACKNOWLEDGED_RULES_METADATA_KEY:
                continue
            for rule, reason in entry.data.items():
                assert len(reason.split()) >= 8, f"{construct.node.path} {rule}: give a real reason"
                acknowledged.setdefault(construct.node.path, set()).add(rule.removeprefix("Annotation::"))

    assert acknowledged == EXPECTED_ACKNOWLEDGMENTS


def test_the_app_fails_synth_on_an_open_finding(
    tmp_path_factory: pytest.TempPathFactory, cdk_context: Callable[..., dict[str, Any]]
) -> None:
    """app.py registers the checks: an unrotated secret anywhere in the app stops the synth.

    The report names only the probe: under app.py's own wiring, the Tollgate stack is clean too.
    """
    app = cdk.App(context=cdk_context(), outdir=str(tmp_path_factory.mktemp("cdk.out")))
    build_app(app)
    probe = cdk.Stack(app, "NagProbe")
    secretsmanager.Secret(probe, "UnrotatedSecret")

    with pytest.raises(Exception, match=r"AwsSolutions-SMG4") as failure:
        app.synth()

    assert "NagProbe/UnrotatedSecret" in str(failure.value)
    assert "Tollgate/" not in str(failure.value)
