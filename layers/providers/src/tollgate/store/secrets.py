"""Secrets Manager: the key-hash pepper, the bootstrap admin key and provider credentials.

Reads go through Powertools' cached ``SecretsProvider`` with a bounded ``max_age``, so a rotated
credential reaches every warm function within that time, with no read on the hot path otherwise.
Provider credentials are write-only from the API's point of view: this module is the only code
that ever holds their plain value, and only to hand it to an adapter.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from aws_lambda_powertools.utilities.parameters import SecretsProvider

from tollgate.errors import ServiceUnavailableError

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient


class SecretStore:
    def __init__(
        self,
        client: SecretsManagerClient,
        *,
        pepper_secret: str,
        admin_key_secret: str,
        provider_prefix: str,
        kms_key_id: str,
        max_age: int,
    ) -> None:
        self._client = client
        self._pepper_secret = pepper_secret
        self._admin_key_secret = admin_key_secret
        self._cached = SecretsProvider(boto3_client=client)
        self._provider_prefix = provider_prefix
        self._kms_key_id = kms_key_id
        self._max_age = max_age

    def _read(self, secret_id: str, *, force: bool = False) -> str:
        try:
            value = self._cached.get(secret_id, max_age=self._max_age, force_fetch=force)
        except (
            Exception
        ) as error:  # Powertools wraps every failure; the id is safe to log, the value never is
            raise ServiceUnavailableError("A required secret could not be read.") from error
        if not isinstance(value, str) or not value:
            raise ServiceUnavailableError("A required secret is empty.")
        return value

    def pepper(self) -> bytes:
        return self._read(self._pepper_secret).encode()

    def admin_key(self) -> str:
        return self._read(self._admin_key_secret)

    # -- provider credentials ------------------------------------------------------------------

    def provider_secret_id(self, provider: str) -> str:
        return f"{self._provider_prefix}{provider}"

    def put_provider_key(self, provider: str, api_key: str) -> str:
        """Stores (creates or replaces) a provider's credential under the CMK; returns its secret id."""
        secret_id = self.provider_secret_id(provider)
        value = json.dumps({"api_key": api_key})
        try:
            self._client.put_secret_value(SecretId=secret_id, SecretString=value)
        except self._client.exceptions.ResourceNotFoundException:
            self._client.create_secret(
                Name=secret_id,
                SecretString=value,
                KmsKeyId=self._kms_key_id,
                Description=f"Tollgate credential for provider '{provider}'",
                Tags=[{"Key": "tollgate:provider", "Value": provider}],
            )
        return secret_id

    def provider_key(self, secret_id: str, *, force: bool = False) -> str:
        api_key = json.loads(self._read(secret_id, force=force)).get("api_key")
        if not isinstance(api_key, str) or not api_key:
            raise ServiceUnavailableError("A provider credential is malformed.")
        return api_key


def mask(secret: str) -> str:
    """A hint that identifies a credential without revealing it: ``sk-...Wxyz``."""
    if len(secret) < 12:
        return "****"
    return f"{secret[:3]}...{secret[-4:]}"
