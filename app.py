"""CDK entry point: one stack, ``Tollgate``, checked by cdk-nag's AWS Solutions pack on every synth."""

from __future__ import annotations

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from infra.stack import TollgateStack

STACK_NAME = "Tollgate"


def build_app(app: cdk.App | None = None) -> cdk.App:
    """The app with its one stack and cdk-nag registered; ``app.synth()`` fails on any open finding."""
    app = app or cdk.App()
    TollgateStack(
        app,
        STACK_NAME,
        # Environment-agnostic: the same template deploys to whichever account and region the CLI targets.
        description="Tollgate: a self-hosted, serverless AI gateway",
    )
    # cdk-nag 3 plugs into CDK's validation framework (its successor to Aspects-based packs).
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app


if __name__ == "__main__":
    build_app().synth()
