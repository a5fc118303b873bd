"""Least privilege: one role per function, explicit actions, resources scoped to Tollgate's own."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from tollgate.store.schema import ANALYTICS, AUDIT, CATALOG, LEDGER, USAGE

if TYPE_CHECKING:
    from tests.infra.conftest import Synthesized

# (action, resource) pairs, resources rendered as canonical JSON so intrinsics compare exactly.
Grants = set[tuple[str, str]]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _grants(statements: list[dict[str, Any]]) -> Grants:
    pairs: Grants = set()
    for statement in statements:
        assert statement["Effect"] == "Allow"
        assert "NotAction" not in statement
        assert "NotResource" not in statement
        for action in _as_list(statement["Action"]):
            for resource in _as_list(statement["Resource"]):
                pairs.add((action, json.dumps(resource, sort_keys=True)))
    return pairs


def _grant(actions: list[str], *resources: Any) -> Grants:
    return {(action, json.dumps(resource, sort_keys=True)) for action in actions for resource in resources}


def _arn(logical_id: str) -> dict[str, Any]:
    return {"Fn::GetAtt": [logical_id, "Arn"]}


def _index_arn(table_id: str, index: str) -> dict[str, Any]:
    return {"Fn::Join": ["", [_arn(table_id), f"/index/{index}"]]}


@pytest.fixture(scope="module")
def ids(synthesized: Synthesized, service_functions: dict[str, Any]) -> dict[str, str]:
    stack = synthesized.stack
    logical = synthesized.logical_id
    return {
        "catalog": logical(stack.tables.table(CATALOG)),
        "usage": logical(stack.tables.table(USAGE)),
        "ledger": logical(stack.tables.table(LEDGER)),
        "audit": logical(stack.tables.table(AUDIT)),
        "analytics": logical(stack.tables.table(ANALYTICS)),
        "dead_letters": logical(stack.schedule.dead_letters),
        "key": logical(stack.secrets.key),
        "pepper": logical(stack.secrets.pepper),
        "admin_key": logical(stack.secrets.admin_key),
        **{f"{name}_logs": logical(fn.log_group) for name, fn in service_functions.items()},
    }


PROVIDER_SECRETS = {
    "Fn::Join": [
        "",
        [
            "arn:",
            {"Ref": "AWS::Partition"},
            ":secretsmanager:",
            {"Ref": "AWS::Region"},
            ":",
            {"Ref": "AWS::AccountId"},
            ":secret:tollgate/Tollgate/providers/*",
        ],
    ]
}


def _baseline(ids: dict[str, str], name: str) -> Grants:
    """What every function needs: its own log group and X-Ray (which has no resource-level scoping)."""
    return _grant(["logs:CreateLogStream", "logs:PutLogEvents"], _arn(ids[f"{name}_logs"])) | _grant(
        ["xray:PutTraceSegments", "xray:PutTelemetryRecords"], "*"
    )


# What each function may do on the ledger and usage tables, by the calls tollgate.store.ledger makes.
# TransactWriteItems is authorised per item (Put/Update/Delete); the ledger writes no ConditionCheck item.
SERVING_LEDGER_ACTIONS = ["dynamodb:UpdateItem", "dynamodb:PutItem", "dynamodb:DeleteItem"]
ADMIN_LEDGER_ACTIONS = ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query"]
ROLLUP_LEDGER_ACTIONS = ["dynamodb:UpdateItem", "dynamodb:PutItem", "dynamodb:DeleteItem"]
ROLLUP_ACCOUNTS_INDEX_ACTIONS = ["dynamodb:Query"]

# {function: {"ledger" | "ledger/index/<gsi>" | "usage" | "usage/index/<gsi>": actions}}; absent = none.
LEDGER_AND_USAGE_ACTIONS: dict[str, dict[str, set[str]]] = {
    "stream": {"ledger": set(SERVING_LEDGER_ACTIONS), "usage": {"dynamodb:PutItem"}},
    "gateway": {"ledger": set(SERVING_LEDGER_ACTIONS), "usage": {"dynamodb:PutItem"}},
    "admin": {
        "ledger": set(ADMIN_LEDGER_ACTIONS),
        "usage": {"dynamodb:Query"},
        **{f"usage/index/{index.name}": {"dynamodb:Query"} for index in USAGE.indexes},
    },
    "rollup": {
        "ledger": set(ROLLUP_LEDGER_ACTIONS),
        "ledger/index/accounts": set(ROLLUP_ACCOUNTS_INDEX_ACTIONS),
        "usage": {"dynamodb:PutItem"},
        # The rollup reads recent records of every tenant, one day's partition at a time.
        "usage/index/by_day": {"dynamodb:Query"},
    },
}

# Analytics: the rollup puts buckets, reads a tenant-day's hours back, and keeps its watermark; the
# admin function only reads (a tenant's buckets, a period's on by_period, the watermark). No one
# deletes a bucket, and no data-plane function touches the table.
ROLLUP_ANALYTICS_ACTIONS = ["dynamodb:PutItem", "dynamodb:Query", "dynamodb:GetItem", "dynamodb:UpdateItem"]
ADMIN_ANALYTICS_ACTIONS = ["dynamodb:GetItem", "dynamodb:Query"]
# What SqsDestination grants, on the rollup's dead-letter queue only.
DEAD_LETTER_ACTIONS = ["sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"]


def _table_resources(ids: dict[str, str]) -> dict[str, str]:
    """``{"ledger" | "ledger/index/<gsi>" | …: canonical JSON of that ARN}`` for the ledger and usage tables."""
    found = {}
    for table, schema in (("ledger", LEDGER), ("usage", USAGE)):
        found[table] = json.dumps(_arn(ids[table]), sort_keys=True)
        for index in schema.indexes:
            found[f"{table}/index/{index.name}"] = json.dumps(
                _index_arn(ids[table], index.name), sort_keys=True
            )
    return found


# Bedrock runs on the function's role: chat converses and streams (stream), embeddings and images invoke.
BEDROCK_ACTIONS = {
    "stream": ["bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"],
    "gateway": ["bedrock:InvokeModel"],
}
BEDROCK_RESOURCES = (
    {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":bedrock:*::foundation-model/*"]]},
    {
        "Fn::Join": [
            "",
            [
                "arn:",
                {"Ref": "AWS::Partition"},
                ":bedrock:",
                {"Ref": "AWS::Region"},
                ":",
                {"Ref": "AWS::AccountId"},
                ":inference-profile/*",
            ],
        ]
    },
)


@pytest.mark.parametrize("name", ["stream", "gateway"])
def test_serving_functions_read_keys_and_routes_and_record_usage(
    role_statements: dict[str, list[dict[str, Any]]], ids: dict[str, str], name: str
) -> None:
    expected = (
        _baseline(ids, name)
        | _grant(
            ["dynamodb:GetItem", "dynamodb:Query"],
            _arn(ids["catalog"]),
            *(_index_arn(ids["catalog"], index.name) for index in CATALOG.indexes),
        )
        | _grant(SERVING_LEDGER_ACTIONS, _arn(ids["ledger"]))
        | _grant(["dynamodb:PutItem"], _arn(ids["usage"]))
        | _grant(["secretsmanager:GetSecretValue"], {"Ref": ids["pepper"]}, PROVIDER_SECRETS)
        | _grant(["kms:Decrypt"], _arn(ids["key"]))
        | _grant(BEDROCK_ACTIONS[name], *BEDROCK_RESOURCES)
    )

    assert _grants(role_statements[name]) == expected


def test_admin_function_manages_the_catalog_and_provider_credentials(
    role_statements: dict[str, list[dict[str, Any]]], ids: dict[str, str]
) -> None:
    expected = (
        _baseline(ids, "admin")
        | _grant(
            [
                "dynamodb:GetItem",
                "dynamodb:PutItem",
                "dynamodb:UpdateItem",
                "dynamodb:DeleteItem",
                "dynamodb:Query",
                # TransactWriteItems is authorised per item: the write actions above plus this one.
                "dynamodb:ConditionCheckItem",
            ],
            _arn(ids["catalog"]),
            *(_index_arn(ids["catalog"], index.name) for index in CATALOG.indexes),
        )
        | _grant(ADMIN_LEDGER_ACTIONS, _arn(ids["ledger"]))
        | _grant(
            ["dynamodb:Query"],
            _arn(ids["usage"]),
            *(_index_arn(ids["usage"], index.name) for index in USAGE.indexes),
        )
        | _grant(["secretsmanager:GetSecretValue"], {"Ref": ids["pepper"]}, {"Ref": ids["admin_key"]})
        | _grant(
            [
                "secretsmanager:CreateSecret",
                "secretsmanager:PutSecretValue",
                "secretsmanager:DescribeSecret",
                "secretsmanager:TagResource",
                "secretsmanager:DeleteSecret",
                "secretsmanager:GetSecretValue",
            ],
            PROVIDER_SECRETS,
        )
        | _grant(["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"], _arn(ids["key"]))
        | _grant(AUDIT_TABLE_ACTIONS, _arn(ids["audit"]))
        | _grant(["dynamodb:Query"], *(_index_arn(ids["audit"], index.name) for index in AUDIT.indexes))
        | _grant(
            ADMIN_ANALYTICS_ACTIONS,
            _arn(ids["analytics"]),
            *(_index_arn(ids["analytics"], index.name) for index in ANALYTICS.indexes),
        )
    )

    assert _grants(role_statements["admin"]) == expected


# The audit log is append-only: read the head and entries, put an entry and move the head (one
# conditional transaction), query. Never DeleteItem; no other function touches the table.
AUDIT_TABLE_ACTIONS = ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query"]


def test_only_the_admin_function_touches_the_audit_log_and_none_may_delete(
    role_statements: dict[str, list[dict[str, Any]]], ids: dict[str, str]
) -> None:
    audit = json.dumps(_arn(ids["audit"]), sort_keys=True)
    for name, statements in role_statements.items():
        on_audit = {action for action, resource in _grants(statements) if ids["audit"] in resource}
        if name == "admin":
            assert {action for action, resource in _grants(statements) if resource == audit} == set(
                AUDIT_TABLE_ACTIONS
            )
            assert "dynamodb:DeleteItem" not in on_audit
        else:
            assert on_audit == set(), name


def test_only_the_rollup_writes_analytics_and_only_the_admin_function_reads_them(
    role_statements: dict[str, list[dict[str, Any]]], ids: dict[str, str]
) -> None:
    for name, statements in role_statements.items():
        on_analytics = {action for action, resource in _grants(statements) if ids["analytics"] in resource}
        expected = {
            "rollup": set(ROLLUP_ANALYTICS_ACTIONS),
            "admin": set(ADMIN_ANALYTICS_ACTIONS),
        }.get(name, set())
        assert on_analytics == expected, name
        assert "dynamodb:DeleteItem" not in on_analytics


def test_rollup_function_sweeps_the_ledger_and_touches_nothing_else(
    role_statements: dict[str, list[dict[str, Any]]], ids: dict[str, str]
) -> None:
    """Ledger, usage and analytics only: no catalog, no secret, no key (it never reads one); and its
    own dead-letter queue, where Lambda sends a run that failed after its retry."""
    expected = (
        _baseline(ids, "rollup")
        | _grant(ROLLUP_ACCOUNTS_INDEX_ACTIONS, _index_arn(ids["ledger"], "accounts"))
        | _grant(ROLLUP_LEDGER_ACTIONS, _arn(ids["ledger"]))
        | _grant(["dynamodb:PutItem"], _arn(ids["usage"]))
        | _grant(["dynamodb:Query"], _index_arn(ids["usage"], "by_day"))
        | _grant(ROLLUP_ANALYTICS_ACTIONS, _arn(ids["analytics"]))
        | _grant(DEAD_LETTER_ACTIONS, _arn(ids["dead_letters"]))
    )

    assert _grants(role_statements["rollup"]) == expected


@pytest.mark.parametrize("name", sorted(LEDGER_AND_USAGE_ACTIONS))
def test_ledger_and_usage_actions_are_exactly_what_the_code_calls(
    role_statements: dict[str, list[dict[str, Any]]], ids: dict[str, str], name: str
) -> None:
    grants = _grants(role_statements[name])
    actual = {
        resource: {action for action, granted in grants if granted == arn}
        for resource, arn in _table_resources(ids).items()
    }

    assert {resource: actions for resource, actions in actual.items() if actions} == LEDGER_AND_USAGE_ACTIONS[
        name
    ]


@pytest.mark.parametrize("name", ["stream", "gateway"])
def test_serving_roles_cannot_query_the_ledger(
    role_statements: dict[str, list[dict[str, Any]]], ids: dict[str, str], name: str
) -> None:
    ledger = {arn for resource, arn in _table_resources(ids).items() if resource.startswith("ledger")}
    queried = {granted for action, granted in _grants(role_statements[name]) if action == "dynamodb:Query"}

    assert not queried & ledger


def test_no_role_may_scan_anything(role_statements: dict[str, list[dict[str, Any]]]) -> None:
    """Every read is a key lookup or a key-conditioned Query; PartiQL (whose SELECT can scan) is out too."""
    for name, statements in role_statements.items():
        actions = {action for action, _ in _grants(statements)}
        assert not {a for a in actions if a.startswith(("dynamodb:Scan", "dynamodb:PartiQL"))}, name


def test_each_function_has_its_own_role_and_policies(
    synthesized: Synthesized, service_functions: dict[str, Any], function_resources: dict[str, Any]
) -> None:
    role_ids = {name: synthesized.logical_id(fn.role) for name, fn in service_functions.items()}

    assert len(set(role_ids.values())) == len(role_ids)
    for name, function in function_resources.items():
        assert function["Properties"]["Role"] == {"Fn::GetAtt": [role_ids[name], "Arn"]}


def test_no_policy_is_shared_between_roles(resources: dict[str, Any]) -> None:
    for logical_id, resource in resources.items():
        if resource["Type"] == "AWS::IAM::Policy":
            assert len(resource["Properties"]["Roles"]) == 1, logical_id
            assert not resource["Properties"].get("Users"), logical_id
            assert not resource["Properties"].get("Groups"), logical_id


def test_function_roles_trust_only_lambda_and_carry_no_managed_policies(
    synthesized: Synthesized, service_functions: dict[str, Any], resources: dict[str, Any]
) -> None:
    for name, fn in service_functions.items():
        role = resources[synthesized.logical_id(fn.role)]["Properties"]
        assert role["AssumeRolePolicyDocument"]["Statement"] == [
            {"Action": "sts:AssumeRole", "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}}
        ], name
        assert not role.get("ManagedPolicyArns"), name


def _identity_statements(resources: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    for logical_id, resource in resources.items():
        props = resource.get("Properties", {})
        documents = []
        if resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            documents.append(props["PolicyDocument"])
        if resource["Type"] == "AWS::IAM::Role":
            documents += [policy["PolicyDocument"] for policy in props.get("Policies", [])]
        found += [(logical_id, s) for document in documents for s in document["Statement"]]
    return found


def test_no_identity_policy_statement_uses_a_wildcard_action(resources: dict[str, Any]) -> None:
    statements = _identity_statements(resources)

    assert statements, "the template has identity policies to check"
    for logical_id, statement in statements:
        for action in _as_list(statement.get("Action", [])):
            assert "*" not in action, f"{logical_id}: {action}"


def test_the_only_unscoped_resource_is_x_ray(resources: dict[str, Any]) -> None:
    for logical_id, statement in _identity_statements(resources):
        if "*" in _as_list(statement["Resource"]):
            assert set(_as_list(statement["Action"])) <= {
                "xray:PutTraceSegments",
                "xray:PutTelemetryRecords",
            }, logical_id
