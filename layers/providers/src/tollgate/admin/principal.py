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


@dataclass(frozen=True, slots=True)
class AdminPrincipal:
    #: Who, for the audit log: ``bootstrap``, ``key:<id>`` or ``oidc:<issuer>#<subject>``.
    actor: str
    role: Role
    #: Set for ``tenant_admin`` only: the one tenant it may see.
    tenant_id: str | None = None

    @property
    def can_write(self) -> bool:
        return self.role != "viewer"

    @property
    def is_global(self) -> bool:
        """Sees every tenant (owner, admin, viewer)."""
        return self.role != "tenant_admin"

    def sees(self, tenant_id: str) -> bool:
        return self.is_global or tenant_id == self.tenant_id


BOOTSTRAP = AdminPrincipal(actor="bootstrap", role="owner")
