"""Who is calling the admin plane, and what they may see and change.

Roles, from most to least powerful:

* ``owner``: everything, including other admins and operator settings;
* ``admin``: every tenant, provider, model, price, key and credit;
* ``viewer``: reads everything, changes nothing;
* ``tenant_admin``: one tenant's keys, usage, ledger and analytics, nothing else.

Every route that takes an object id checks it against ``tenant_id`` through ``sees``; an object
of another tenant is reported as not found (404), never as forbidden, so ids do not leak.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["owner", "admin", "viewer", "tenant_admin"]
ROLES: tuple[Role, ...] = ("owner", "admin", "viewer", "tenant_admin")

#: The roles of the admin keys each role may issue, rotate or revoke: never above its own, and a
#: viewer none at all. A tenant admin's keys also stay inside its tenant (``AdminPrincipal.sees``).
_MINTABLE: dict[Role, frozenset[Role]] = {
    "owner": frozenset(ROLES),
    "admin": frozenset({"admin", "viewer", "tenant_admin"}),
    "viewer": frozenset(),
    "tenant_admin": frozenset({"tenant_admin"}),
}


@dataclass(frozen=True, slots=True)
class AdminPrincipal:
    #: Who, for the audit log: ``bootstrap``, ``key:<id>`` or ``oidc:<issuer>#<subject>``.
    actor: str
    role: Role
    #: Set for ``tenant_admin`` only: the one tenant it may see.
    tenant_id: str | None = None
    #: Admin keys only: the ceiling of what keys this principal issues may use and how long they live.
    allowed_models: frozenset[str] | None = None
    expires_at: int | None = None
    #: OIDC tokens only: the token's ``iat``, checked against a revocation of the user's sessions.
    issued_at: int | None = None

    @property
    def can_write(self) -> bool:
        return self.role != "viewer"

    @property
    def is_global(self) -> bool:
        """Sees every tenant (owner, admin, viewer)."""
        return self.role != "tenant_admin"

    @property
    def manages_catalog(self) -> bool:
        """Changes providers, models, prices, tenants and credits (owner and admin)."""
        return self.role in ("owner", "admin")

    def sees(self, tenant_id: str | None) -> bool:
        """May see an object of ``tenant_id`` (None: a global object such as a global admin key)."""
        return self.is_global or (tenant_id is not None and tenant_id == self.tenant_id)

    def may_mint(self, role: Role) -> bool:
        """May issue, rotate or revoke an admin key of ``role``."""
        return role in _MINTABLE[self.role]


BOOTSTRAP = AdminPrincipal(actor="bootstrap", role="owner")
