"""Runtime settings an operator chooses at deploy time: ``cdk deploy -c tollgate:<setting>=<value>``.

Every context value named ``tollgate:<setting>`` becomes ``TOLLGATE_<SETTING>`` on every function,
for any field of ``tollgate.settings.Settings`` the stack does not own (tables, secrets, the KMS key
and the admin issuer are wired by the stack itself). The values are validated against ``Settings``
at synth time, so a typo or an out-of-range value fails ``cdk synth``, not the first cold start::

    npx cdk deploy -c tollgate:billing_mode=credits -c tollgate:starter_credits=5 \\
        -c tollgate:usage_retention_days=30

The same keys can live in ``cdk.json``'s ``context`` for a deployment kept in version control.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from constructs import Construct
from pydantic import ValidationError

from tollgate.settings import Settings

PREFIX = "tollgate:"


class OperatorSettingsError(ValueError):
    """A ``tollgate:*`` context value that the runtime would refuse."""


def operator_settings(scope: Construct, *, stack_owned: Mapping[str, str]) -> dict[str, str]:
    """``{TOLLGATE_<SETTING>: value}`` from the app's ``tollgate:*`` context values.

    ``stack_owned`` is the environment the stack itself sets; naming one of those is refused, as is
    a name ``Settings`` does not know or a value it would not accept.
    """
    context: dict[str, Any] = scope.node.get_all_context()
    chosen: dict[str, str] = {}
    for key, value in sorted(context.items()):
        if not key.startswith(PREFIX):
            continue
        name = key.removeprefix(PREFIX)
        variable = f"TOLLGATE_{name.upper()}"
        if name not in Settings.model_fields:
            raise OperatorSettingsError(f"{key}: Tollgate has no setting {name!r} (see tollgate/settings.py)")
        if variable in stack_owned:
            raise OperatorSettingsError(f"{key}: the stack sets {variable} itself")
        chosen[variable] = value if isinstance(value, str) else _json_scalar(key, value)
    _validate(chosen)
    return chosen


def _json_scalar(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    raise OperatorSettingsError(f"{key}: give a string, a number or a boolean")


def _validate(chosen: Mapping[str, str]) -> None:
    """``Settings`` built from the operator's values (JSON for lists and maps, as the environment
    would be read) and placeholders for what the stack wires in, which its own tests check."""
    values: dict[str, Any] = {}
    for variable, value in chosen.items():
        name = variable.removeprefix("TOLLGATE_").lower()
        try:
            values[name] = json.loads(value) if value[:1] in "[{" else value
        except ValueError as error:
            raise OperatorSettingsError(f"tollgate:{name}: not valid JSON ({error})") from None
    placeholders = {
        name: f"synth-{name}"
        for name, field in Settings.model_fields.items()
        if field.is_required() and name not in values
    }
    try:
        Settings.model_validate({**placeholders, **values})
    except ValidationError as error:
        problems = "; ".join(
            f"tollgate:{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}"
            for problem in error.errors()
        )
        raise OperatorSettingsError(problems) from None
