"""The one shared layer: ``tollgate`` and its locked dependencies, built for Python 3.13 on arm64.

The build runs locally (``layers/providers/build_layer.py``, driven by uv), not in Docker: uv resolves
aarch64 manylinux wheels on any host, so no emulation or container runtime is needed. CDK's Docker
path stays configured only because ``BundlingOptions`` requires an image; it is used solely where uv is
missing, and is then an unlocked ``pip install`` of the same project.

Template-only synths (the unit tests) skip bundling with the context ``aws:cdk:bundling-stacks = []``;
CDK then stages the source folder as the asset without running the build.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from typing import Any

import jsii
from aws_cdk import AssetHashType, BundlingOptions, ILocalBundling
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra.paths import BUILD_LAYER_SCRIPT, LAYER_PROJECT_DIR

LAYER_RUNTIME = lambda_.Runtime.PYTHON_3_13
LAYER_ARCHITECTURE = lambda_.Architecture.ARM_64


@jsii.implements(ILocalBundling)
class UvLayerBundling:
    """Builds the layer on the host with ``build_layer.py``; declines (so CDK falls back) without uv."""

    def try_bundle(self, output_dir: str, *_args: Any, **_options: Any) -> bool:
        if shutil.which("uv") is None:
            return False
        subprocess.run(  # noqa: S603  # fixed argv: this interpreter, a repository script, CDK's folder
            [sys.executable, str(BUILD_LAYER_SCRIPT), output_dir], check=True
        )
        return True


def _docker_fallback_command() -> list[str]:
    return [
        "bash",
        "-c",
        "pip install --no-cache-dir --target /asset-output/python /asset-input"
        " && python -m compileall -q --invalidation-mode unchecked-hash /asset-output/python",
    ]


class TollgateLayer(Construct):
    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.layer = lambda_.LayerVersion(
            self,
            "Layer",
            description="Tollgate runtime (tollgate package + locked dependencies), Python 3.13 arm64",
            compatible_runtimes=[LAYER_RUNTIME],
            compatible_architectures=[LAYER_ARCHITECTURE],
            code=lambda_.Code.from_asset(
                str(LAYER_PROJECT_DIR),
                # The hash of what was built, so a change to uv.lock (outside this folder) ships too.
                asset_hash_type=AssetHashType.OUTPUT,
                bundling=BundlingOptions(
                    image=LAYER_RUNTIME.bundling_image,
                    platform="linux/arm64",
                    command=_docker_fallback_command(),
                    local=UvLayerBundling(),
                ),
            ),
        )
