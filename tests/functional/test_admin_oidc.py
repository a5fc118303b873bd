"""Admin sign-in with OIDC bearer JWTs, against a local issuer with freshly generated keys.

Every token here is really signed (or deliberately not): the verifier is the real one, with the real
JWKS fetched over loopback HTTP. Only well-formed, correctly signed, unexpired tokens of this issuer,
for this audience, whose user is in a Tollgate group, get in.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from tests.functional.conftest import bearer
from tests.support.oidc import AUDIENCE, LocalIssuer, local_issuer, oidc_settings, rsa_key
from tollgate.admin.oidc import JwksCache, OidcVerifier, fetch_json
from tollgate.errors import AuthenticationError, PermissionDeniedError, ServiceUnavailableError

ADMIN_ROUTE = "/admin/v1/tenants"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict[str, Any], claims: dict[str, Any], signature: str = "") -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}.{signature}"


def _public_pem(issuer: LocalIssuer) -> bytes:
    return issuer.signing_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _hs256_with(secret: bytes, claims: dict[str, Any], kid: str = "rsa-1") -> str:
    """An HMAC token, built by hand: PyJWT itself refuses to use a PEM key as an HMAC secret."""
    import hashlib
    import hmac

    signing_input = _unsigned({"alg": "HS256", "typ": "JWT", "kid": kid}, claims)[:-1]
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def test_a_valid_token_of_each_role_signs_in(oidc_client, issuer, make_tenant) -> None:
    owner = issuer.token(groups=["tollgate-owner"])
    assert (
        oidc_client.post(ADMIN_ROUTE, json={"id": "acme", "name": "Acme"}, headers=bearer(owner)).status_code
        == 201
    )

    admin = issuer.token(sub="admin-1", groups=["tollgate-admin", "unrelated"])
    assert oidc_client.get(ADMIN_ROUTE, headers=bearer(admin)).status_code == 200

    viewer = issuer.token(sub="viewer-1", groups=["tollgate-viewer"])
    assert oidc_client.get(ADMIN_ROUTE, headers=bearer(viewer)).status_code == 200
    refused = oidc_client.post(ADMIN_ROUTE, json={"name": "x"}, headers=bearer(viewer))
    assert refused.status_code == 403

    tenant_admin = issuer.token(sub="ta-1", groups=["tollgate-tenant-admin"], tenant_id="acme")
    listing = oidc_client.get(ADMIN_ROUTE, headers=bearer(tenant_admin))
    assert listing.status_code == 200
    assert [tenant["id"] for tenant in listing.json()["data"]] == ["acme"]


def test_the_strongest_mapped_group_wins_and_the_actor_is_issuer_and_subject(oidc_client, issuer) -> None:
    token = issuer.token(sub="both", groups=["tollgate-viewer", "tollgate-admin"])
    created = oidc_client.post(ADMIN_ROUTE, json={"id": "t1", "name": "T"}, headers=bearer(token))
    assert created.status_code == 201

    audit = oidc_client.get("/admin/v1/audit?action=tenant.create", headers=bearer(token)).json()["data"]
    assert audit[0]["actor"] == f"oidc:{issuer.url}#both"
    assert audit[0]["role"] == "admin"


def _matrix(issuer: LocalIssuer) -> dict[str, str]:
    """Tokens that must all be refused with 401, by what is wrong with them."""
    now = int(time.time())
    good_claims = issuer.claims()
    stranger = rsa_key()
    tampered_parts = issuer.token().split(".")
    tampered_parts[1] = _b64(
        json.dumps({**good_claims, "groups": ["tollgate-owner"], "sub": "mallory"}).encode()
    )
    return {
        "wrong issuer": issuer.token(iss="https://evil.example"),
        "issuer with a trailing slash": issuer.token(iss=f"{issuer.url}/"),
        "wrong audience": issuer.token(aud="another-client"),
        "audience list without ours": issuer.token(aud=["a", "b"]),
        "no audience": issuer.token(aud=None),
        "expired": issuer.token(exp=now - 3600, iat=now - 7200),
        "expired just beyond the leeway": issuer.token(exp=now - 40),
        "not valid yet (nbf)": issuer.token(nbf=now + 3600),
        "issued in the future": issuer.token(iat=now + 3600),
        "no expiry": issuer.token(exp=None),
        "no subject": issuer.token(sub=None),
        "no iat": issuer.token(iat=None),
        "signed by a stranger's key under our kid": issuer.token(key=stranger),
        "payload changed after signing": ".".join(tampered_parts),
        "signature stripped": issuer.token().rsplit(".", 1)[0] + ".",
        "alg none": _unsigned({"alg": "none", "typ": "JWT", "kid": "rsa-1"}, good_claims),
        "alg None, capitalised": _unsigned({"alg": "None", "kid": "rsa-1"}, good_claims),
        "alg none without kid": _unsigned({"alg": "none"}, good_claims),
        "HS256 keyed with the published public key": _hs256_with(_public_pem(issuer), good_claims),
        "HS256 keyed with a guess": _hs256_with(b"secret", good_claims),
        "RS256 under an unknown kid": issuer.token(kid="rsa-1", headers={"kid": "nobody"}),
        "no kid": jwt.encode(good_claims, issuer.signing_key, algorithm="RS256"),
        "ES256 header over an RSA key": _unsigned({"alg": "ES256", "kid": "rsa-1"}, good_claims, "AAAA"),
        "PS256 although the JWK declares RS256": issuer.token(alg="PS256"),
        "RS256 header over the EC key": _unsigned({"alg": "RS256", "kid": "ec-1"}, good_claims, "AAAA"),
        "garbage in three parts": "abc.def.ghi",
        "a header that is not JSON": f"{_b64(b'nope')}.{_b64(b'{}')}.sig",
    }


def test_the_jwt_matrix_is_refused_with_401(oidc_client, issuer) -> None:
    matrix = _matrix(issuer)
    answers = {name: oidc_client.get(ADMIN_ROUTE, headers=bearer(token)) for name, token in matrix.items()}

    assert {name: response.status_code for name, response in answers.items()} == dict.fromkeys(matrix, 401)
    for response in answers.values():
        assert response.json()["error"]["type"] == "authentication_error"
    # The matrix itself is sound: the same issuer's well-formed token gets in.
    assert oidc_client.get(ADMIN_ROUTE, headers=bearer(issuer.token())).status_code == 200


def test_an_ec_key_signs_in_with_its_own_algorithm(oidc_client, issuer) -> None:
    assert (
        oidc_client.get(ADMIN_ROUTE, headers=bearer(issuer.token(kid="ec-1", alg="ES256"))).status_code == 200
    )


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"groups": None}, "no groups claim"),
        ({"groups": []}, "no groups"),
        ({"groups": ["admins", "tollgate"]}, "only unknown groups"),
        ({"groups": "tollgate-nobody"}, "an unknown group as a string"),
        ({"groups": [{"name": "tollgate-owner"}]}, "a group that is not a string"),
        ({"groups": ["tollgate-tenant-admin"]}, "a tenant admin without a tenant"),
        ({"groups": ["tollgate-tenant-admin"], "tenant_id": "../acme"}, "a malformed tenant"),
        ({"groups": ["tollgate-tenant-admin"], "tenant_id": ["acme"]}, "a tenant that is not a string"),
    ],
)
def test_a_valid_token_without_a_role_is_refused_with_403(oidc_client, issuer, claims, reason) -> None:
    response = oidc_client.get(ADMIN_ROUTE, headers=bearer(issuer.token(**claims)))

    assert response.status_code == 403, reason
    assert response.json()["error"]["code"] == "no_admin_role"


def test_refusals_are_audited_without_the_token(oidc_client, issuer, admin_headers) -> None:
    token = issuer.token(aud="another-client")
    oidc_client.get(ADMIN_ROUTE, headers=bearer(token))
    roleless = issuer.token(sub="nobody", groups=[])
    oidc_client.get(ADMIN_ROUTE, headers=bearer(roleless))

    entries = oidc_client.get("/admin/v1/audit?action=auth.denied", headers=admin_headers).json()["data"]
    assert [entry["status"] for entry in entries] == [403, 401]
    assert entries[0]["actor"] == f"oidc:{issuer.url}#nobody"
    assert entries[1]["actor"] == "anonymous"
    assert entries[1]["target"] == f"GET {ADMIN_ROUTE}"
    text = json.dumps(entries)
    assert token not in text and roleless not in text
    assert token.split(".")[2] not in text


def test_a_sign_in_token_never_reaches_the_data_plane(oidc_client, issuer) -> None:
    response = oidc_client.get("/v1/models", headers=bearer(issuer.token()))

    assert response.status_code == 401


def test_nothing_is_fetched_until_the_first_token(oidc_services, oidc_client, issuer, admin_headers) -> None:
    """No network at import or cold start: building the app and serving other credentials fetch nothing."""
    oidc_services.admin_auth  # noqa: B018  # built, as a cold start would
    assert oidc_client.get(ADMIN_ROUTE, headers=admin_headers).status_code == 200
    assert sum(issuer.hits.values()) == 0

    assert oidc_client.get(ADMIN_ROUTE, headers=bearer(issuer.token())).status_code == 200
    assert issuer.hits["/.well-known/openid-configuration"] == 1
    assert issuer.jwks_fetches == 1

    for _ in range(5):
        oidc_client.get(ADMIN_ROUTE, headers=bearer(issuer.token()))
    assert issuer.jwks_fetches == 1  # cached


def test_unknown_key_ids_cannot_flood_the_issuer(oidc_client, issuer) -> None:
    assert oidc_client.get(ADMIN_ROUTE, headers=bearer(issuer.token())).status_code == 200

    forged = [issuer.token(headers={"kid": f"forged-{n}"}) for n in range(50)]
    statuses = {oidc_client.get(ADMIN_ROUTE, headers=bearer(token)).status_code for token in forged}

    assert statuses == {401}
    assert issuer.jwks_fetches <= 2  # the first fetch, and at most one refresh per minute


def _cache(
    issuer: LocalIssuer, clock: list[float], *, min_refresh: float = 60, ttl: float = 3600
) -> JwksCache:
    return JwksCache(
        issuer=issuer.url,
        jwks_url=None,
        fetch=lambda url: fetch_json(url, allow_insecure=True),
        ttl=ttl,
        min_refresh=min_refresh,
        allow_insecure=True,
        clock=lambda: clock[0],
    )


def test_a_new_signing_key_is_picked_up_after_the_refresh_interval(issuer) -> None:
    clock = [1000.0]
    verifier = OidcVerifier(
        issuer=issuer.url,
        audience=AUDIENCE,
        jwks=_cache(issuer, clock),
        groups_claim="groups",
        role_groups={"tollgate-owner": "owner"},
        tenant_claim="tenant_id",
        leeway=0,
    )
    assert verifier.verify(issuer.token()).role == "owner"

    issuer.keys["rsa-2"] = rsa_key()  # the issuer rotates its signing key
    with pytest.raises(AuthenticationError):
        verifier.verify(issuer.token(kid="rsa-2"))  # within a minute of the last fetch: not refetched
    clock[0] += 61
    assert verifier.verify(issuer.token(kid="rsa-2")).actor == f"oidc:{issuer.url}#user-1"
    assert issuer.jwks_fetches == 2


def test_keys_are_refreshed_when_the_cache_expires_and_kept_if_the_issuer_is_down(issuer) -> None:
    clock = [0.0]
    cache = _cache(issuer, clock, ttl=600)
    assert cache.signing_key("rsa-1").key_type == "RSA"

    issuer.redirect_to = "http://127.0.0.1:9/"  # the issuer now answers nothing usable
    clock[0] += 601
    assert cache.signing_key("rsa-1").key_type == "RSA"  # stale keys serve until a refresh succeeds
    assert issuer.jwks_fetches == 2  # the refresh was tried (and redirected, so refused)
    clock[0] += 30
    cache.signing_key("rsa-1")
    assert issuer.jwks_fetches == 2  # and is not retried within the refresh interval


def test_the_jwks_is_never_fetched_through_a_redirect(issuer) -> None:
    with local_issuer() as elsewhere:
        issuer.redirect_to = f"{elsewhere.url}/jwks.json"
        cache = _cache(issuer, [0.0])

        with pytest.raises(ServiceUnavailableError):
            cache.signing_key("rsa-1")
        assert sum(elsewhere.hits.values()) == 0


@pytest.mark.parametrize(
    "overrides",
    [
        {"oidc_issuer": "http://issuer.example", "oidc_audience": "x"},  # plain http, not loopback
        {"oidc_issuer": "http://127.0.0.1:1", "oidc_audience": "x"},  # loopback, but not allowed
        {"oidc_issuer": "https://issuer.example", "oidc_audience": None},  # no audience
        {"oidc_issuer": "https://issuer.example", "oidc_audience": "x", "oidc_jwks_url": "http://j.example/"},
    ],
)
def test_an_insecure_or_incomplete_issuer_fails_at_cold_start(settings, overrides) -> None:
    from pydantic import ValidationError

    from tollgate.settings import Settings

    with pytest.raises(ValidationError):
        Settings.model_validate({**settings.model_dump(), **overrides})


def test_the_verifier_refuses_a_role_for_no_group_with_a_permission_error(issuer) -> None:
    verifier = OidcVerifier(
        issuer=issuer.url,
        audience=AUDIENCE,
        jwks=_cache(issuer, [0.0]),
        groups_claim="cognito:groups",
        role_groups={"ops": "admin"},
        tenant_claim="custom:tenant_id",
        leeway=0,
    )
    assert verifier.verify(issuer.token(groups=None, **{"cognito:groups": ["ops"]})).role == "admin"
    with pytest.raises(PermissionDeniedError):
        verifier.verify(issuer.token(groups=["ops"]))  # the configured claim is cognito:groups


# -- Cognito: its access tokens carry no aud, but client_id and token_use ---------------------------


def test_cognito_access_and_id_tokens_of_the_configured_client_sign_in(cognito_client, issuer) -> None:
    access = issuer.cognito_access_token(**{"cognito:groups": ["tollgate-admin"]})
    id_token = issuer.cognito_id_token(sub="viewer-1", **{"cognito:groups": ["tollgate-viewer"]})

    created = cognito_client.post(ADMIN_ROUTE, json={"id": "acme", "name": "Acme"}, headers=bearer(access))
    assert created.status_code == 201, created.text
    assert cognito_client.get(ADMIN_ROUTE, headers=bearer(id_token)).status_code == 200
    assert cognito_client.post(ADMIN_ROUTE, json={"name": "x"}, headers=bearer(id_token)).status_code == 403
    [entry] = cognito_client.get(
        "/admin/v1/audit?action=tenant.create&outcome=ok", headers=bearer(access)
    ).json()["data"]
    assert (entry["actor"], entry["role"]) == (f"oidc:{issuer.url}#user-1", "admin")


def _cognito_matrix(issuer: LocalIssuer) -> dict[str, str]:
    """Cognito-shaped tokens that must all be refused with 401, by what is wrong with them."""
    now = int(time.time())
    return {
        "access token for another app client": issuer.cognito_access_token(client_id="another-client"),
        "access token without client_id": issuer.cognito_access_token(client_id=None),
        "access token with a client_id list": issuer.cognito_access_token(client_id=[AUDIENCE]),
        "access token with an aud of another client": issuer.cognito_access_token(aud="another-client"),
        "access token of another pool": issuer.cognito_access_token(iss="https://cognito-idp.example/pool"),
        "access token, expired": issuer.cognito_access_token(exp=now - 3600, iat=now - 7200),
        "access token, signed by a stranger": issuer.cognito_access_token(key=rsa_key()),
        "access token, alg none": _unsigned(
            {"alg": "none", "kid": "rsa-1"},
            issuer.claims(
                aud=None, client_id=AUDIENCE, token_use="access", **{"cognito:groups": ["tollgate-owner"]}
            ),
        ),
        "id token without aud": issuer.cognito_id_token(aud=None, client_id=AUDIENCE),
        "id token for another client": issuer.cognito_id_token(aud="another-client"),
        "id token claiming to be an access token, with aud": issuer.cognito_access_token(
            aud="another-client", client_id=None
        ),
        "no token_use": issuer.cognito_id_token(token_use=None),
        "token_use refresh": issuer.cognito_access_token(token_use="refresh"),
        "token_use of another type": issuer.cognito_id_token(token_use=["id"]),
    }


def test_the_cognito_jwt_matrix_is_refused_with_401(cognito_client, issuer) -> None:
    matrix = _cognito_matrix(issuer)
    answers = {name: cognito_client.get(ADMIN_ROUTE, headers=bearer(token)) for name, token in matrix.items()}

    assert {name: response.status_code for name, response in answers.items()} == dict.fromkeys(matrix, 401)
    for response in answers.values():
        assert response.json()["error"]["type"] == "authentication_error"
    assert cognito_client.get(ADMIN_ROUTE, headers=bearer(issuer.cognito_access_token())).status_code == 200


def test_access_tokens_are_refused_where_the_issuer_is_not_cognito(oidc_client, issuer) -> None:
    """Without ``oidc_cognito``, the audience is required as for any OIDC issuer."""
    access = issuer.cognito_access_token(groups=["tollgate-owner"])

    assert oidc_client.get(ADMIN_ROUTE, headers=bearer(access)).status_code == 401


def test_a_cognito_tenant_admin_needs_its_tenant_claim(cognito_client, issuer) -> None:
    owner = bearer(issuer.cognito_access_token())
    assert (
        cognito_client.post(ADMIN_ROUTE, json={"id": "acme", "name": "Acme"}, headers=owner).status_code
        == 201
    )
    groups = {"cognito:groups": ["tollgate-tenant-admin"]}
    # Cognito puts custom attributes in ID tokens only; an access token names no tenant.
    assert (
        cognito_client.get(ADMIN_ROUTE, headers=bearer(issuer.cognito_access_token(**groups))).status_code
        == 403
    )
    id_token = issuer.cognito_id_token(**groups, **{"custom:tenant_id": "acme"})
    listing = cognito_client.get(ADMIN_ROUTE, headers=bearer(id_token))
    assert [tenant["id"] for tenant in listing.json()["data"]] == ["acme"]


def test_a_cognito_issuer_is_detected_from_its_url(settings) -> None:
    from tollgate.settings import Settings

    pool = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbCdEf123"
    detected = Settings.model_validate({**settings.model_dump(), "oidc_issuer": pool, "oidc_audience": "c"})
    other = Settings.model_validate(
        {**settings.model_dump(), "oidc_issuer": "https://login.example.com", "oidc_audience": "c"}
    )

    assert detected.oidc_is_cognito and not other.oidc_is_cognito


# -- ending a signed-in user's sessions ---------------------------------------------------------


def test_revoking_a_users_sessions_refuses_their_tokens_until_they_sign_in_again(
    oidc_client, oidc_services, issuer, settings
) -> None:
    """A JWT cannot be recalled: the revocation refuses every token of the user issued until then, in
    this process at once and in every other within the cache TTL; a token issued later works."""
    from starlette.testclient import TestClient

    from tollgate.api.apps import local_app
    from tollgate.container import Services
    from tollgate.settings import Settings

    now = int(time.time())
    owner = issuer.token(sub="owner-1", groups=["tollgate-owner"])
    leaver = issuer.token(sub="leaver", groups=["tollgate-admin"], iat=now - 5)
    other = Services(
        Settings.model_validate({**settings.model_dump(), **oidc_settings(issuer), "cache_ttl_seconds": 1})
    )
    with TestClient(local_app(other), raise_server_exceptions=False) as elsewhere:
        assert elsewhere.get(ADMIN_ROUTE, headers=bearer(leaver)).status_code == 200  # now cached there
        assert oidc_client.get(ADMIN_ROUTE, headers=bearer(leaver)).status_code == 200

        actor = f"oidc:{issuer.url}#leaver"
        revoked = oidc_client.post("/admin/v1/sessions/revoke", json={"actor": actor}, headers=bearer(owner))
        assert revoked.status_code == 200, revoked.text
        bound = revoked.json()["revoked_before"]
        assert bound >= now

        refused = oidc_client.get(ADMIN_ROUTE, headers=bearer(leaver))
        assert refused.status_code == 401
        assert refused.json()["error"]["message"] == "This admin session was revoked. Sign in again."
        time.sleep(1.1)  # the other process's cache TTL
        assert elsewhere.get(ADMIN_ROUTE, headers=bearer(leaver)).status_code == 401

        again = issuer.token(sub="leaver", groups=["tollgate-admin"], iat=bound + 1)
        assert oidc_client.get(ADMIN_ROUTE, headers=bearer(again)).status_code == 200
        assert oidc_client.get(ADMIN_ROUTE, headers=bearer(owner)).status_code == 200  # nobody else

    audit = oidc_client.get("/admin/v1/audit?action=session.revoke", headers=bearer(owner)).json()["data"]
    assert [(entry["actor"], entry["target"]) for entry in audit] == [
        (f"oidc:{issuer.url}#owner-1", f"sessions:{actor}")
    ]


def test_a_revocation_never_moves_back(oidc_services) -> None:
    catalog = oidc_services.catalog
    assert catalog.admin_sessions_revoked_before("oidc:https://i#u") is None
    assert catalog.revoke_admin_sessions("oidc:https://i#u", before=200, by="owner") == 200
    assert catalog.revoke_admin_sessions("oidc:https://i#u", before=100, by="owner") == 200
    assert catalog.revoke_admin_sessions("oidc:https://i#u", before=300, by="owner") == 300


@pytest.mark.parametrize(
    ("groups", "status"),
    [(["tollgate-viewer"], 403), (["tollgate-tenant-admin"], 403), (["tollgate-admin"], 200)],
)
def test_only_owners_and_admins_revoke_sessions(oidc_client, issuer, make_tenant, groups, status) -> None:
    make_tenant("acme")
    caller = issuer.token(sub="caller", groups=groups, tenant_id="acme")
    body = {"actor": f"oidc:{issuer.url}#someone"}
    assert (
        oidc_client.post("/admin/v1/sessions/revoke", json=body, headers=bearer(caller)).status_code == status
    )


def test_nobody_revokes_their_own_sessions_and_unknown_fields_are_refused(oidc_client, issuer) -> None:
    owner = issuer.token(sub="owner-1", groups=["tollgate-owner"])
    own = {"actor": f"oidc:{issuer.url}#owner-1"}
    assert oidc_client.post("/admin/v1/sessions/revoke", json=own, headers=bearer(owner)).status_code == 400
    widened = {"actor": f"oidc:{issuer.url}#x", "revoked_before": 0}
    assert (
        oidc_client.post("/admin/v1/sessions/revoke", json=widened, headers=bearer(owner)).status_code == 400
    )
    not_oidc = {"actor": "key:abc"}
    assert (
        oidc_client.post("/admin/v1/sessions/revoke", json=not_oidc, headers=bearer(owner)).status_code == 400
    )
    assert oidc_client.get(ADMIN_ROUTE, headers=bearer(owner)).status_code == 200
