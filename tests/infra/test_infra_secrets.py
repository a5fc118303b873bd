"""The customer-managed key rotates, and both generated secrets are encrypted with it and kept."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.infra.conftest import Synthesized


def _secrets(resources: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: r for k, r in resources.items() if r["Type"] == "AWS::SecretsManager::Secret"}


def test_one_customer_managed_key_with_rotation_and_an_alias(
    synthesized: Synthesized, resources: dict[str, Any]
) -> None:
    keys = [r for r in resources.values() if r["Type"] == "AWS::KMS::Key"]
    key_id = synthesized.logical_id(synthesized.stack.secrets.key)

    assert len(keys) == 1
    assert resources[key_id]["Properties"]["EnableKeyRotation"] is True
    assert resources[key_id]["DeletionPolicy"] == "Retain"
    synthesized.template.has_resource_properties(
        "AWS::KMS::Alias",
        {"AliasName": "alias/tollgate/Tollgate", "TargetKeyId": {"Fn::GetAtt": [key_id, "Arn"]}},
    )


def test_pepper_and_admin_key_are_generated_encrypted_with_the_cmk_and_retained(
    synthesized: Synthesized, resources: dict[str, Any]
) -> None:
    secrets = synthesized.stack.secrets
    key_arn = {"Fn::GetAtt": [synthesized.logical_id(secrets.key), "Arn"]}
    expected = {
        synthesized.logical_id(secrets.pepper): "tollgate/Tollgate/pepper",
        synthesized.logical_id(secrets.admin_key): "tollgate/Tollgate/admin-key",
    }

    assert set(_secrets(resources)) == set(expected)
    for logical_id, name in expected.items():
        secret = resources[logical_id]
        assert secret["Properties"]["Name"] == name
        assert secret["Properties"]["KmsKeyId"] == key_arn
        assert secret["Properties"]["GenerateSecretString"]["PasswordLength"] >= 32
        assert "SecretString" not in secret["Properties"], "no secret value may appear in the template"
        assert secret["DeletionPolicy"] == "Retain"


def test_provider_secret_prefix_is_scoped_to_the_stack(synthesized: Synthesized) -> None:
    assert synthesized.stack.secrets.provider_secret_prefix == "tollgate/Tollgate/providers/"


@pytest.mark.parametrize("function", ["stream", "gateway", "admin", "rollup"])
def test_functions_receive_secret_ids_and_the_key(
    synthesized: Synthesized, function_resources: dict[str, Any], function: str
) -> None:
    secrets = synthesized.stack.secrets
    env = function_resources[function]["Properties"]["Environment"]["Variables"]

    assert env["TOLLGATE_PEPPER_SECRET"] == {"Ref": synthesized.logical_id(secrets.pepper)}
    assert env["TOLLGATE_ADMIN_KEY_SECRET"] == {"Ref": synthesized.logical_id(secrets.admin_key)}
    assert env["TOLLGATE_PROVIDER_SECRET_PREFIX"] == "tollgate/Tollgate/providers/"
    assert env["TOLLGATE_KMS_KEY_ID"] == {"Fn::GetAtt": [synthesized.logical_id(secrets.key), "Arn"]}
