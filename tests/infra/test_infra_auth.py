"""Admin sign-in: a Cognito user pool and app client, and the admin function's OIDC settings."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from tollgate.settings import DEFAULT_ROLE_GROUPS

if TYPE_CHECKING:
    from tests.infra.conftest import Synthesized


def _of_type(resources: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [resource for resource in resources.values() if resource["Type"] == kind]


def test_one_user_pool_no_self_sign_up_mfa_required_and_strong_passwords(resources: dict[str, Any]) -> None:
    [pool] = _of_type(resources, "AWS::Cognito::UserPool")
    props = pool["Properties"]

    assert props["AdminCreateUserConfig"]["AllowAdminCreateUserOnly"] is True
    assert props["MfaConfiguration"] == "ON"
    assert props["EnabledMfas"] == ["SOFTWARE_TOKEN_MFA"]
    policy = props["Policies"]["PasswordPolicy"]
    assert policy["MinimumLength"] >= 14
    assert all(
        policy[flag] for flag in ("RequireLowercase", "RequireUppercase", "RequireNumbers", "RequireSymbols")
    )
    assert props["DeletionProtection"] == "ACTIVE"
    assert pool["DeletionPolicy"] == "Retain"


def test_the_client_is_public_and_cannot_write_the_tenant_claim(resources: dict[str, Any]) -> None:
    """A user who could set custom:tenant_id on themselves would become another tenant's admin."""
    [client] = _of_type(resources, "AWS::Cognito::UserPoolClient")
    props = client["Properties"]

    assert props["GenerateSecret"] is False
    assert "custom:tenant_id" in props["ReadAttributes"]
    assert "custom:tenant_id" not in props["WriteAttributes"]
    assert props["PreventUserExistenceErrors"] == "ENABLED"
    assert props["IdTokenValidity"] == 60
    assert props["TokenValidityUnits"]["IdToken"] == "minutes"


def test_one_group_per_role_with_the_names_the_runtime_maps(resources: dict[str, Any]) -> None:
    groups = {
        group["Properties"]["GroupName"] for group in _of_type(resources, "AWS::Cognito::UserPoolGroup")
    }

    assert groups == set(DEFAULT_ROLE_GROUPS)
    assert set(DEFAULT_ROLE_GROUPS.values()) == {"owner", "admin", "viewer", "tenant_admin"}


def test_only_the_admin_function_accepts_sign_in_tokens_of_this_pool(
    synthesized: Synthesized, function_resources: dict[str, Any]
) -> None:
    pool = synthesized.logical_id(synthesized.stack.auth.user_pool)
    client = synthesized.logical_id(synthesized.stack.auth.client)
    admin_env = function_resources["admin"]["Properties"]["Environment"]["Variables"]

    assert admin_env["TOLLGATE_OIDC_AUDIENCE"] == {"Ref": client}
    assert pool in json.dumps(admin_env["TOLLGATE_OIDC_ISSUER"])
    assert json.dumps(admin_env["TOLLGATE_OIDC_ISSUER"]).startswith('{"Fn::Join": ["", ["https://')
    assert admin_env["TOLLGATE_OIDC_GROUPS_CLAIM"] == "cognito:groups"
    assert admin_env["TOLLGATE_OIDC_TENANT_CLAIM"] == "custom:tenant_id"
    # The pool's access tokens carry no aud: token_use and client_id are checked instead.
    assert admin_env["TOLLGATE_OIDC_COGNITO"] == "true"
    assert json.loads(admin_env["TOLLGATE_OIDC_ROLE_GROUPS"]) == DEFAULT_ROLE_GROUPS
    for name in ("stream", "gateway", "rollup"):
        env = function_resources[name]["Properties"]["Environment"]["Variables"]
        assert not [variable for variable in env if variable.startswith("TOLLGATE_OIDC_")], name


def test_no_function_allows_an_insecure_issuer(function_resources: dict[str, Any]) -> None:
    """``oidc_allow_insecure_issuer`` (http:// JWKS on loopback) exists for tests only."""
    for name, function in function_resources.items():
        env = function["Properties"]["Environment"]["Variables"]
        assert "TOLLGATE_OIDC_ALLOW_INSECURE_ISSUER" not in env, name


def test_outputs_name_the_pool_client_and_issuer(synthesized: Synthesized) -> None:
    outputs = synthesized.template.to_json()["Outputs"]

    assert {"AdminUserPoolId", "AdminClientId", "AdminOidcIssuer"} <= set(outputs)
