"""One way to acknowledge a cdk-nag finding: always on one construct, always with a reason."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Validations
from constructs import IConstruct


def acknowledge(construct: IConstruct, rule: str, reason: str) -> None:
    """Acknowledge ``rule`` (e.g. ``AwsSolutions-IAM5[Resource::*]``) on ``construct`` and its children.

    cdk-nag 3 reads CDK's native acknowledgments; each finding of a multi-finding rule (IAM5) is
    acknowledged on its own, so a suppression never hides a finding nobody looked at.
    """
    if not reason.strip():
        raise ValueError(f"acknowledging {rule} needs a reason")
    Validations.of(construct).acknowledge(Acknowledgment(id=rule, reason=reason))
