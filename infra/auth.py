"""Admin sign-in: a Cognito user pool whose ID and access tokens the admin function accepts (OIDC).

- No self sign-up: an operator creates each admin user and puts it in one group per role
  (``tollgate-owner``, ``tollgate-admin``, ``tollgate-viewer``, ``tollgate-tenant-admin``); a tenant
  admin's tenant is the ``custom:tenant_id`` attribute.
- MFA (TOTP) is required, and passwords are long and mixed.
- The app client is public (a CLI has no place to keep a client secret). It may read
  ``custom:tenant_id`` but not write it: a user who could change their own tenant would reach
  another tenant's data.
- Tokens are short-lived (one hour); the admin function checks issuer, expiry and signature against
  the pool's JWKS, and that the token is for this client: an ID token by its audience, an access
  token (which has none) by ``client_id`` and ``token_use``. It maps ``cognito:groups`` to a role.
  Only ID tokens carry ``custom:tenant_id``, so a tenant admin signs in with its ID token.

Any other OIDC issuer works instead through the ``TOLLGATE_OIDC_*`` settings.
"""

from __future__ import annotations

import json

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_cognito as cognito
from constructs import Construct

from infra.nag import acknowledge
from tollgate.settings import DEFAULT_ROLE_GROUPS

GROUPS_CLAIM = "cognito:groups"
TENANT_ATTRIBUTE = "tenant_id"
TENANT_CLAIM = f"custom:{TENANT_ATTRIBUTE}"
TOKEN_VALIDITY = Duration.hours(1)


class TollgateAuth(Construct):
    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        stack_name = Stack.of(self).stack_name
        self.user_pool = cognito.UserPool(
            self,
            "AdminUsers",
            user_pool_name=f"{stack_name}-admins",
            self_sign_up_enabled=False,
            sign_in_aliases=cognito.SignInAliases(email=True),
            auto_verify=cognito.AutoVerifiedAttrs(email=True),
            standard_attributes=cognito.StandardAttributes(
                email=cognito.StandardAttribute(required=True, mutable=True)
            ),
            custom_attributes={
                TENANT_ATTRIBUTE: cognito.StringAttribute(min_len=1, max_len=64, mutable=True)
            },
            password_policy=cognito.PasswordPolicy(
                min_length=14,
                require_lowercase=True,
                require_uppercase=True,
                require_digits=True,
                require_symbols=True,
                temp_password_validity=Duration.days(3),
            ),
            mfa=cognito.Mfa.REQUIRED,
            mfa_second_factor=cognito.MfaSecondFactor(otp=True, sms=False),
            account_recovery=cognito.AccountRecovery.EMAIL_ONLY,
            deletion_protection=True,
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.client = self.user_pool.add_client(
            "AdminClient",
            user_pool_client_name=f"{stack_name}-admin-cli",
            generate_secret=False,
            auth_flows=cognito.AuthFlow(user_srp=True, user_password=True),
            read_attributes=cognito.ClientAttributes()
            .with_standard_attributes(email=True, email_verified=True)
            .with_custom_attributes(TENANT_ATTRIBUTE),
            # custom:tenant_id is deliberately not writable through the client.
            write_attributes=cognito.ClientAttributes().with_standard_attributes(email=True),
            id_token_validity=TOKEN_VALIDITY,
            access_token_validity=TOKEN_VALIDITY,
            refresh_token_validity=Duration.hours(12),
            prevent_user_existence_errors=True,
            enable_token_revocation=True,
        )
        self.groups = {
            group: cognito.CfnUserPoolGroup(
                self,
                f"Group{role.title().replace('_', '')}",
                user_pool_id=self.user_pool.user_pool_id,
                group_name=group,
                description=f"Tollgate admin role: {role}",
            )
            for group, role in DEFAULT_ROLE_GROUPS.items()
        }
        acknowledge(
            self.user_pool,
            "AwsSolutions-COG8",
            "The Plus feature plan (threat protection) is a paid, per-user option; the pool has no self "
            "sign-up, requires TOTP MFA and long passwords, and every admin action is audited.",
        )

    @property
    def issuer(self) -> str:
        return f"https://{self.user_pool.user_pool_provider_url}"

    @property
    def environment(self) -> dict[str, str]:
        """The admin function's OIDC settings (``tollgate.settings``) for this pool."""
        return {
            "TOLLGATE_OIDC_ISSUER": self.issuer,
            "TOLLGATE_OIDC_AUDIENCE": self.client.user_pool_client_id,
            "TOLLGATE_OIDC_COGNITO": "true",
            "TOLLGATE_OIDC_GROUPS_CLAIM": GROUPS_CLAIM,
            "TOLLGATE_OIDC_TENANT_CLAIM": TENANT_CLAIM,
            "TOLLGATE_OIDC_ROLE_GROUPS": json.dumps(DEFAULT_ROLE_GROUPS, sort_keys=True),
        }
