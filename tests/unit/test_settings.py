"""``Settings.from_environment``: how the ``TOLLGATE_*`` variables become settings.

Every function validates its settings once, at cold start, from the variables the CDK stack sets
(and local mode sets the same ones). These tests pin how a variable is read: its prefix, the case of
its name, JSON for the structured settings, and the errors an operator sees when one is wrong.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tollgate.settings import DEFAULT_ROLE_GROUPS, Settings, SettingsError

REQUIRED = {
    "TOLLGATE_CATALOG_TABLE": "catalog",
    "TOLLGATE_USAGE_TABLE": "usage",
    "TOLLGATE_LEDGER_TABLE": "ledger",
    "TOLLGATE_AUDIT_TABLE": "audit",
    "TOLLGATE_ANALYTICS_TABLE": "analytics",
    "TOLLGATE_PEPPER_SECRET": "tollgate/pepper",
    "TOLLGATE_ADMIN_KEY_SECRET": "tollgate/admin-key",
    "TOLLGATE_PROVIDER_SECRET_PREFIX": "tollgate/providers/",
    "TOLLGATE_KMS_KEY_ID": "alias/tollgate",
}


def test_required_variables_alone_give_the_documented_defaults() -> None:
    settings = Settings.from_environment(REQUIRED)
    assert settings.catalog_table == "catalog"
    assert settings.provider_secret_prefix == "tollgate/providers/"
    assert (
        settings.model_dump()
        == Settings.model_validate(
            {name.removeprefix("TOLLGATE_").lower(): value for name, value in REQUIRED.items()}
        ).model_dump()
    )
    assert settings.cache_ttl_seconds == 30
    assert settings.oidc_role_groups == DEFAULT_ROLE_GROUPS
    assert settings.oidc_issuer is None


def test_each_missing_required_variable_is_named() -> None:
    with pytest.raises(ValidationError) as raised:
        Settings.from_environment({"TOLLGATE_CATALOG_TABLE": "catalog"})
    missing = {error["loc"][0] for error in raised.value.errors() if error["type"] == "missing"}
    assert missing == {name.removeprefix("TOLLGATE_").lower() for name in REQUIRED} - {"catalog_table"}


def test_text_values_are_converted_and_checked_like_any_model_input() -> None:
    settings = Settings.from_environment(
        REQUIRED
        | {
            "TOLLGATE_CACHE_TTL_SECONDS": "12",
            "TOLLGATE_ALLOW_LOOPBACK_UPSTREAMS": "true",
            "TOLLGATE_OIDC_COGNITO": "false",
            "TOLLGATE_RETRY_JITTER": "0.25",
            "TOLLGATE_BILLING_MODE": "credits",
        }
    )
    assert settings.cache_ttl_seconds == 12
    assert settings.allow_loopback_upstreams is True
    assert settings.oidc_cognito is False
    assert settings.retry_jitter == 0.25
    assert settings.billing_mode == "credits"
    with pytest.raises(ValidationError, match="cache_ttl_seconds"):
        Settings.from_environment(REQUIRED | {"TOLLGATE_CACHE_TTL_SECONDS": "61"})
    with pytest.raises(ValidationError, match="billing_mode"):
        Settings.from_environment(REQUIRED | {"TOLLGATE_BILLING_MODE": "free"})


def test_names_match_whatever_their_case() -> None:
    environment = {name.lower(): value for name, value in REQUIRED.items()}
    settings = Settings.from_environment(environment | {"Tollgate_Cache_Ttl_Seconds": "5"})
    assert settings.catalog_table == "catalog"
    assert settings.cache_ttl_seconds == 5


def test_other_variables_are_ignored() -> None:
    settings = Settings.from_environment(
        REQUIRED
        | {
            "CATALOG_TABLE": "not-mine",
            "XTOLLGATE_USAGE_TABLE": "not-mine",
            "TOLLGATE_NO_SUCH_SETTING": "1",
            "TOLLGATE_": "",
        }
    )
    assert settings.catalog_table == "catalog"
    assert settings.usage_table == "usage"


def test_role_groups_are_read_as_json() -> None:
    groups = '{"ops": "owner", "support": "viewer"}'
    settings = Settings.from_environment(REQUIRED | {"TOLLGATE_OIDC_ROLE_GROUPS": groups})
    assert settings.oidc_role_groups == {"ops": "owner", "support": "viewer"}
    with pytest.raises(ValidationError, match="oidc_role_groups"):
        Settings.from_environment(REQUIRED | {"TOLLGATE_OIDC_ROLE_GROUPS": '{"ops": "superuser"}'})


def test_malformed_json_names_the_variable_and_not_its_value() -> None:
    with pytest.raises(SettingsError, match="TOLLGATE_OIDC_ROLE_GROUPS is not valid JSON") as raised:
        Settings.from_environment(REQUIRED | {"TOLLGATE_OIDC_ROLE_GROUPS": "{ops: owner-s3cret"})
    assert "s3cret" not in str(raised.value)


def test_settings_are_frozen() -> None:
    settings = Settings.from_environment(REQUIRED)
    with pytest.raises(ValidationError):
        settings.cache_ttl_seconds = 1  # type: ignore[misc]


def test_an_issuer_still_needs_an_audience() -> None:
    issuer = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC123"
    with pytest.raises(ValidationError, match="TOLLGATE_OIDC_AUDIENCE is required"):
        Settings.from_environment(REQUIRED | {"TOLLGATE_OIDC_ISSUER": issuer})
    settings = Settings.from_environment(
        REQUIRED | {"TOLLGATE_OIDC_ISSUER": issuer, "TOLLGATE_OIDC_AUDIENCE": "client"}
    )
    assert settings.oidc_is_cognito


def test_the_process_environment_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TOLLGATE_CATALOG_TABLE", "from-the-process")
    assert Settings.from_environment().catalog_table == "from-the-process"
