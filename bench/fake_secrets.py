"""An in-memory, low-level Secrets Manager client: the three calls Tollgate's ``SecretStore`` makes
(``get_secret_value`` through Powertools' cached provider, ``put_secret_value``, ``create_secret``),
with botocore-shaped errors. ``calls`` counts them, for the benchmark's round-trip report."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from typing import Any

from botocore.exceptions import ClientError


class _Error(ClientError):
    code = "InternalServiceError"

    def __init__(self, operation: str, message: str) -> None:
        super().__init__({"Error": {"Code": self.code, "Message": message}}, operation)


class ResourceNotFoundException(_Error):
    code = "ResourceNotFoundException"


class ResourceExistsException(_Error):
    code = "ResourceExistsException"


class _Exceptions:
    ClientError = ClientError
    ResourceNotFoundException = ResourceNotFoundException
    ResourceExistsException = ResourceExistsException


class FakeSecretsManager:
    exceptions = _Exceptions

    def __init__(self, secrets: dict[str, str] | None = None) -> None:
        self._values: dict[str, str] = dict(secrets or {})
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()

    def get_secret_value(self, *, SecretId: str, **_: Any) -> dict[str, Any]:
        with self._lock:
            self.calls["get_secret_value"] += 1
            if SecretId not in self._values:
                raise ResourceNotFoundException(
                    "GetSecretValue", "Secrets Manager can't find the specified secret."
                )
            return {
                "ARN": f"arn:aws:secretsmanager:us-east-1:000000000000:secret:{SecretId}",
                "Name": SecretId,
                "SecretString": self._values[SecretId],
                "VersionId": str(uuid.uuid4()),
            }

    def put_secret_value(self, *, SecretId: str, SecretString: str, **_: Any) -> dict[str, Any]:
        with self._lock:
            self.calls["put_secret_value"] += 1
            if SecretId not in self._values:
                raise ResourceNotFoundException(
                    "PutSecretValue", "Secrets Manager can't find the specified secret."
                )
            self._values[SecretId] = SecretString
            return {"Name": SecretId}

    def create_secret(self, *, Name: str, SecretString: str, **_: Any) -> dict[str, Any]:
        with self._lock:
            self.calls["create_secret"] += 1
            if Name in self._values:
                raise ResourceExistsException("CreateSecret", f"The secret {Name} already exists.")
            self._values[Name] = SecretString
            return {"Name": Name}
