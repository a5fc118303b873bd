"""The one error hierarchy. Every error carries its HTTP status and its OpenAI error fields.

Adapters, stores and services raise these; ``tollgate.api.errors`` renders them, in exactly one
place, as OpenAI's error object::

    {"error": {"message": "...", "type": "invalid_request_error", "param": null, "code": null}}

Messages are written for the API caller: they never carry secrets, upstream credentials or
stack traces.
"""

from __future__ import annotations

from typing import Any, ClassVar


class TollgateError(Exception):
    """Base of every error Tollgate reports to a caller."""

    status: int = 500
    type: ClassVar[str] = "api_error"
    default_code: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class InvalidRequestError(TollgateError):
    status = 400
    type = "invalid_request_error"


class AuthenticationError(TollgateError):
    status = 401
    type = "authentication_error"
    default_code = "invalid_api_key"


class InsufficientCreditsError(TollgateError):
    """Not enough credits for the worst case of this request (402, which SDKs do not retry)."""

    status = 402
    type = "insufficient_quota"
    default_code = "insufficient_credits"


class PermissionDeniedError(TollgateError):
    status = 403
    type = "permission_error"


class NotFoundError(TollgateError):
    status = 404
    type = "not_found_error"


class ModelNotFoundError(NotFoundError):
    type = "invalid_request_error"
    default_code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model '{model}' does not exist or you do not have access to it.", param="model"
        )


class ConflictError(TollgateError):
    status = 409
    type = "conflict_error"


class PayloadTooLargeError(TollgateError):
    status = 413
    type = "invalid_request_error"
    default_code = "request_too_large"


class RateLimitError(TollgateError):
    """Too many requests; ``retry_after`` seconds become the ``Retry-After`` header."""

    status = 429
    type = "rate_limit_error"
    default_code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: int | None = None, code: str | None = None) -> None:
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        super().__init__(message, code=code, headers=headers)
        self.retry_after = retry_after


class UpstreamError(TollgateError):
    """The provider failed or answered something Tollgate cannot use (502)."""

    status = 502
    type = "upstream_error"
    default_code = "upstream_error"


class UpstreamTimeoutError(UpstreamError):
    status = 504
    default_code = "upstream_timeout"


class UpstreamRejectedError(TollgateError):
    """The provider refused the request itself (its 4xx), passed on with the provider's status."""

    type = "invalid_request_error"
    default_code = "upstream_rejected"

    def __init__(self, message: str, *, status: int, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.status = status


class ServiceUnavailableError(TollgateError):
    status = 503
    type = "service_unavailable"
