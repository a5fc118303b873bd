"""Dependencies of the admin routers, apart so the data-plane functions never import the
admin package."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from tollgate.admin.access import AdminAccess
from tollgate.admin.audit import AdminContext
from tollgate.admin.principal import AdminPrincipal
from tollgate.api.caller import presented_token
from tollgate.api.deps import ServicesDep, request_id_of
from tollgate.errors import AuthenticationError, PermissionDeniedError


def require_admin(request: Request, services: ServicesDep) -> AdminPrincipal:
    """An admin key, an OIDC token or the bootstrap key (``tollgate.admin.auth``); every refusal is
    audited. Runs in the thread pool: key lookups and a first JWKS fetch may block."""
    try:
        return services.admin_auth.authenticate(presented_token(request.headers))
    except (AuthenticationError, PermissionDeniedError) as error:
        services.audit_trail.denied(
            request_id=request_id_of(request),
            actor=getattr(error, "actor", "anonymous"),
            role=None,
            tenant_id=None,
            action="auth.denied",
            target=f"{request.method} {request.url.path}",
            status=error.status,
            reason=error.message,
        )
        raise


AdminDep = Annotated[AdminPrincipal, Depends(require_admin)]


def get_admin_access(request: Request, services: ServicesDep, principal: AdminDep) -> AdminAccess:
    """The admin operations as this caller may use them (roles, isolation, ceilings, audit)."""
    return AdminAccess(services, AdminContext(principal=principal, request_id=request_id_of(request)))


AccessDep = Annotated[AdminAccess, Depends(get_admin_access)]
