"""Writing the audit log: every admin change, and every denied admin attempt.

A change is recorded with a diff of what the API shows of the object (``{field: [before, after]}``),
built from response models, which have no field for a credential or a key hash. The diff is then
scrubbed by field name and by value shape, so even a mistake upstream cannot put a secret in the log.

Recording never undoes the change it describes: if the audit table cannot be written, the entry goes
to the log as an error instead (with the same scrubbed content), so it is not lost.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from tollgate.observability import logger
from tollgate.store.audit import AuditDraft

if TYPE_CHECKING:
    from tollgate.admin.principal import AdminPrincipal
    from tollgate.store.audit import DynamoAuditLog

REDACTED = "[redacted]"
#: Field names whose values are never logged, whatever they hold.
_SECRET_NAME = re.compile(
    r"(^key$|api_?key$|secret|token|password|passphrase|pepper|authori[sz]ation|hash)", re.I
)
#: ...except these, which name or describe a secret without holding it.
_SAFE_NAMES = frozenset({"api_key_hint", "has_api_key", "key_id", "idempotency_key"})
#: Values shaped like a credential: a hub key, a JWT, a bearer header, common provider key prefixes.
_SECRET_VALUE = re.compile(
    r"tg-[0-9a-f]{16}-[A-Za-z0-9_-]{20,}"
    r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"
    r"|Bearer\s+\S+"
    r"|\b(?:sk|rk|pk|xai|AIza)[-_A-Za-z0-9]{16,}",
)
MAX_TARGET_LENGTH = 300
MAX_REASON_LENGTH = 300


def scrub(value: Any, name: str = "") -> Any:
    """``value`` with every secret-named field and secret-shaped string replaced by ``[redacted]``."""
    if name and _SECRET_NAME.search(name) and name not in _SAFE_NAMES:
        return None if value is None else REDACTED
    if isinstance(value, Mapping):
        return {str(key): scrub(item, str(key)) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(item) for item in value]
    if isinstance(value, str):
        return _SECRET_VALUE.sub(REDACTED, value)
    return value


def _fields(state: BaseModel | Mapping[str, Any] | None) -> dict[str, Any]:
    if state is None:
        return {}
    if isinstance(state, BaseModel):
        return dict(state.model_dump(mode="json"))
    return dict(state)


def diff(
    before: BaseModel | Mapping[str, Any] | None, after: BaseModel | Mapping[str, Any] | None
) -> str | None:
    """Canonical JSON of ``{field: [before, after]}`` over the fields that changed, scrubbed."""
    old, new = scrub(_fields(before)), scrub(_fields(after))
    changes = {
        name: [old.get(name), new.get(name)]
        for name in sorted({*old, *new})
        if old.get(name) != new.get(name)
    }
    if not changes:
        return None
    return json.dumps(changes, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _clip(text: str, limit: int) -> str:
    text = scrub(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True, slots=True)
class AdminContext:
    """One admin request: who, and its request id."""

    principal: AdminPrincipal
    request_id: str


class AuditTrail:
    def __init__(self, log: DynamoAuditLog) -> None:
        self._log = log

    def changed(
        self,
        context: AdminContext,
        *,
        action: str,
        target: str,
        tenant_id: str | None,
        before: BaseModel | Mapping[str, Any] | None,
        after: BaseModel | Mapping[str, Any] | None,
        status: int = 200,
    ) -> None:
        self._append(
            AuditDraft(
                request_id=context.request_id,
                actor=context.principal.actor,
                role=context.principal.role,
                action=action,
                target=_clip(target, MAX_TARGET_LENGTH),
                tenant_id=tenant_id,
                outcome="ok",
                status=status,
                diff=diff(before, after),
            )
        )

    def denied(
        self,
        *,
        request_id: str,
        actor: str,
        role: str | None,
        tenant_id: str | None,
        action: str,
        target: str,
        status: int,
        reason: str,
    ) -> None:
        self._append(
            AuditDraft(
                request_id=request_id,
                actor=_clip(actor, MAX_TARGET_LENGTH),
                role=role,
                action=action,
                target=_clip(target, MAX_TARGET_LENGTH),
                tenant_id=tenant_id,
                outcome="denied",
                status=status,
                reason=_clip(reason, MAX_REASON_LENGTH),
            )
        )

    def _append(self, draft: AuditDraft) -> None:
        try:
            self._log.append(draft)
        except Exception:
            fields: dict[str, Any] = {
                "audit_action": draft.action,
                "audit_target": draft.target,
                "audit_actor": draft.actor,
                "audit_outcome": draft.outcome,
                "audit_diff": draft.diff,
                "request_id": draft.request_id,
            }
            logger.exception("audit entry could not be written", extra=fields)
