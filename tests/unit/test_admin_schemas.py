"""Admin request bodies whose validation is not plain field types."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tollgate.admin.schemas import SessionRevocationIn

ISSUER = "https://issuer.example/" + "i" * (2048 - len("https://issuer.example/"))


@pytest.mark.parametrize(
    "actor",
    [
        "oidc:https://issuer.example#user-1",
        f"oidc:{ISSUER}#{'s' * 256}",  # both parts at their longest
        "oidc:i#s",
        "oidc:https://issuer.example#a#b",  # a subject may hold '#'
        "oidc:https://émetteur.example#ñ",
        "  oidc:https://issuer.example#user-1\n",  # surrounding space is stripped
    ],
)
def test_an_actor_as_the_audit_log_names_it_is_accepted(actor: str) -> None:
    assert SessionRevocationIn(actor=actor).actor == actor.strip()


@pytest.mark.parametrize(
    "actor",
    [
        "key:abc",
        "oidc:#user",
        "oidc:https://issuer.example#",
        "oidc:https://issuer.example",
        "oidc:https://issuer example#user",
        "oidc:https://issuer.example#us\ter",
        "oidc:https://issuer.example#u\nser",
        f"oidc:{ISSUER}x#user",  # issuer over 2,048 characters
        f"oidc:i#{'s' * 257}",  # subject over 256 characters
        "OIDC:https://issuer.example#user",
    ],
)
def test_anything_else_is_refused(actor: str) -> None:
    with pytest.raises(ValidationError):
        SessionRevocationIn(actor=actor)
