"""Shared fixtures for the infrastructure tests: the stack is synthesized once per session.

Synthesis goes through jsii (a Node.js process), so it costs seconds; every test reads the same
template. Bundling is skipped (``aws:cdk:bundling-stacks = []``): CDK then stages the layer's source
folder instead of running ``build_layer.py``. The real build has its own slow test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


def _silence_node_warnings() -> None:
    """jsii prints a banner on every start for old Node.js versions; it is noise in test output."""
    os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
    node = shutil.which("node")
    if node and "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION" not in os.environ:
        version = subprocess.run(  # noqa: S603  # fixed argv
            [node, "--version"], capture_output=True, text=True, check=False
        ).stdout
        os.environ["JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION"] = (
            version.strip().lstrip("v").split(".")[0]
        )


_silence_node_warnings()

import aws_cdk as cdk  # noqa: E402  # after the environment above: jsii reads it when it starts
from aws_cdk.assertions import Template  # noqa: E402

from app import STACK_NAME, build_app  # noqa: E402
from infra.paths import REPO_ROOT  # noqa: E402
from infra.stack import TollgateStack  # noqa: E402


def _cdk_context(*, bundle: bool = False) -> dict[str, Any]:
    """The context ``cdk synth`` would use (cdk.json), with bundling skipped unless asked for."""
    context: dict[str, Any] = json.loads((REPO_ROOT / "cdk.json").read_text())["context"]
    if not bundle:
        context["aws:cdk:bundling-stacks"] = []
    return context


@pytest.fixture(scope="session")
def cdk_context() -> Callable[..., dict[str, Any]]:
    """``cdk_context(bundle=False)``: the context for a further app in a test."""
    return _cdk_context


@dataclass(frozen=True)
class Synthesized:
    app: cdk.App
    stack: TollgateStack
    template: Template
    assembly_dir: Path

    def logical_id(self, construct: Any) -> str:
        """The logical id of an L2 construct's CloudFormation resource (or of a CfnElement)."""
        element = getattr(construct.node, "default_child", None) or construct
        return str(self.stack.resolve(self.stack.get_logical_id(element)))

    def resource(self, construct: Any) -> dict[str, Any]:
        resources: dict[str, dict[str, Any]] = self.template.to_json()["Resources"]
        return resources[self.logical_id(construct)]


@pytest.fixture(scope="session")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    outdir = tmp_path_factory.mktemp("cdk.out")
    app = build_app(cdk.App(context=_cdk_context(), outdir=str(outdir)))
    stack = app.node.find_child(STACK_NAME)
    assert isinstance(stack, TollgateStack)
    # Validation (cdk-nag) is asserted on its own in test_infra_nag.py, with a readable report.
    assembly = app.synth(skip_validation=True)
    template = Template.from_json(assembly.get_stack_by_name(STACK_NAME).template)
    return Synthesized(app=app, stack=stack, template=template, assembly_dir=Path(assembly.directory))


@pytest.fixture(scope="session")
def template(synthesized: Synthesized) -> Template:
    return synthesized.template


@pytest.fixture(scope="session")
def resources(template: Template) -> dict[str, Any]:
    result: dict[str, Any] = template.to_json()["Resources"]
    return result


@pytest.fixture(scope="session")
def service_functions(synthesized: Synthesized) -> dict[str, Any]:
    """``{"stream" | "gateway" | "admin" | "rollup": ServiceFunction}`` from the synthesized stack."""
    functions = synthesized.stack.functions
    return {
        "stream": functions.stream,
        "gateway": functions.gateway,
        "admin": functions.admin,
        "rollup": functions.rollup,
    }


@pytest.fixture(scope="session")
def function_resources(synthesized: Synthesized, service_functions: dict[str, Any]) -> dict[str, Any]:
    """``{name: AWS::Lambda::Function resource}`` for every service function."""
    return {name: synthesized.resource(fn.function) for name, fn in service_functions.items()}


@pytest.fixture(scope="session")
def role_statements(
    synthesized: Synthesized, resources: dict[str, Any], service_functions: dict[str, Any]
) -> dict[str, list[dict[str, Any]]]:
    """``{function name: every identity-policy statement attached to that function's role}``."""
    result: dict[str, list[dict[str, Any]]] = {}
    for name, fn in service_functions.items():
        role_ref = {"Ref": synthesized.logical_id(fn.role)}
        role = resources[synthesized.logical_id(fn.role)]
        statements = [
            statement
            for policy in role["Properties"].get("Policies", [])
            for statement in policy["PolicyDocument"]["Statement"]
        ]
        for resource in resources.values():
            if resource["Type"] == "AWS::IAM::Policy" and role_ref in resource["Properties"].get("Roles", []):
                statements += resource["Properties"]["PolicyDocument"]["Statement"]
        result[name] = statements
    return result
