"""Who is calling an admin route: an admin credential, authenticated, every refusal audited.

Resolved by ``tollgate.api.direct`` for the admin route tables, and by FastAPI's dependencies
(``tollgate.api.admin_deps``) in the local app. Framework-free, so the admin function does not load
FastAPI. Both run these functions in the thread pool: a key lookup, a first JWKS fetch and the
audit write may block.
"""

from __future__ import annotations

from starlette.datastructures import URL, Headers
from starlette.types import Scope

from tollgate.admin.access import AdminAccess
from tollgate.admin.audit import AdminContext
from tollgate.admin.principal import AdminPrincipal
from tollgate.api.caller import presented_token, scope_request_id
from tollgate.container import Services
from tollgate.errors import AuthenticationError, InvalidRequestError, PermissionDeniedError

#: Names longer than this are cut short in the error message.
MAX_NAME_SHOWN = 64


def authenticate_admin(services: Services, scope: Scope, headers: Headers) -> AdminPrincipal:
    """An admin key, an OIDC token or the bootstrap key (``tollgate.admin.auth``); every refusal is
    audited before it is raised."""
    try:
        return services.admin_auth.authenticate(presented_token(headers))
    except (AuthenticationError, PermissionDeniedError) as error:
        services.audit_trail.denied(
            request_id=scope_request_id(scope),
            actor=getattr(error, "actor", "anonymous"),
            role=None,
            tenant_id=None,
            action="auth.denied",
            target=f"{scope.get('method', '')} {URL(scope=scope).path}",
            status=error.status,
            reason=error.message,
        )
        raise


def admin_access(services: Services, scope: Scope, principal: AdminPrincipal) -> AdminAccess:
    """The admin operations as this caller may use them (roles, isolation, ceilings, audit)."""
    return AdminAccess(services, AdminContext(principal=principal, request_id=scope_request_id(scope)))


def refuse_unknown_query(names: list[str] | set[str] | frozenset[str], declared: frozenset[str]) -> None:
    """400 for the first (in name order) query parameter an admin route does not declare.

    A misspelt filter (``?tenant=acme`` for ``?tenant_id=acme``) would otherwise be ignored, and the
    answer would silently cover every tenant the caller sees. It is checked after the credential, so
    a caller without one learns nothing about a route. The public data plane does not do this:
    OpenAI-compatible clients send parameters an API does not define.
    """
    unknown = sorted(set(names) - declared)
    if unknown:
        name = unknown[0][:MAX_NAME_SHOWN]
        raise InvalidRequestError(f"Unrecognized query parameter: '{name}'.", param=name)
