"""Tollgate's functions and what each one may touch.

- ``stream``: the chat routes (no web framework: ``tollgate.api.direct``) under uvicorn, behind the
  Lambda Web Adapter, so chat responses can stream;
- ``gateway``: models, embeddings, images (no web framework either) under Mangum (buffered);
- ``admin``: the admin API (no web framework either) under Mangum; API Gateway also sends it
  ``/console``, which it does not serve yet (404);
- ``rollup``: scheduled (``infra/schedule.py``): settles holds that dead processes left behind,
  expires unused starter credits (``Billing.sweep``) and rolls usage up into the analytics table
  (``tollgate.rollup``).

Every function receives the full settings environment (the runtime validates all of it at cold start;
an operator's own choices come from ``-c tollgate:<setting>=...``, see ``infra/operator_settings.py``),
but permissions differ: only ``admin`` can write the catalog, read the admin key or manage provider
secrets; ``rollup`` touches the ledger, usage and analytics tables only, and no secret at all.

Ledger permissions follow ``tollgate.store.ledger`` call by call. ``TransactWriteItems`` is not an IAM
action: each item in a transaction is authorised by its own action (``Put`` -> ``PutItem``, ``Update`` ->
``UpdateItem``, ``Delete`` -> ``DeleteItem``), and only a condition-only item would need
``ConditionCheckItem``; the ledger writes none.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra.auth import TollgateAuth
from infra.nag import acknowledge
from infra.operator_settings import operator_settings
from infra.paths import FUNCTIONS_DIR
from infra.secrets import TollgateSecrets
from infra.service_function import ServiceFunction, ServiceFunctionProps
from infra.tables import TollgateTables
from tollgate.store.schema import ANALYTICS, AUDIT, CATALOG, LEDGER, USAGE

# Lambda Web Adapter, published by AWS in every commercial region under this account. Pinned, not
# "latest": the newest version in awslabs/aws-lambda-web-adapter's docs (getting-started/zip-packages).
# Bump it deliberately, after checking that release's notes.
LAMBDA_WEB_ADAPTER_ACCOUNT = "753240598075"
LAMBDA_WEB_ADAPTER_LAYER_NAME = "LambdaAdapterLayerArm64"
LAMBDA_WEB_ADAPTER_VERSION = 26

LWA_PORT = "8080"
READINESS_CHECK_PATH = "/healthz"

# API Gateway ends a response stream after 15 minutes; the function may run exactly as long.
STREAM_TIMEOUT = Duration.minutes(15)
# Buffered REST integrations end at 29 s unless a quota increase is granted.
BUFFERED_TIMEOUT = Duration.seconds(29)
# One sweep may run as long as the schedule's period (infra/schedule.py): a sweep is idempotent, so a
# slow one overlapping the next run settles nothing twice.
ROLLUP_TIMEOUT = Duration.minutes(5)

# The sweeper finds accounts with holds through this sparse index (``account_shard``), never by scanning.
LEDGER_ACCOUNTS_INDEX = "accounts"
# The rollup reads recent usage records, every tenant's, one day's partition at a time.
USAGE_BY_DAY_INDEX = "by_day"

POWERTOOLS_ENVIRONMENT = {
    "POWERTOOLS_SERVICE_NAME": "tollgate",
    "POWERTOOLS_METRICS_NAMESPACE": "Tollgate",
    "LOG_LEVEL": "INFO",
}


def lambda_web_adapter_arn(stack: Stack) -> str:
    """``arn:<partition>:lambda:<region>:753240598075:layer:LambdaAdapterLayerArm64:<version>``."""
    return stack.format_arn(
        service="lambda",
        account=LAMBDA_WEB_ADAPTER_ACCOUNT,
        resource="layer",
        resource_name=f"{LAMBDA_WEB_ADAPTER_LAYER_NAME}:{LAMBDA_WEB_ADAPTER_VERSION}",
        arn_format=ArnFormat.COLON_RESOURCE_NAME,
    )


class TollgateFunctions(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        tables: TollgateTables,
        secrets: TollgateSecrets,
        layer: lambda_.ILayerVersion,
        auth: TollgateAuth,
    ) -> None:
        super().__init__(scope, construct_id)
        stack_owned = {**tables.environment, **secrets.environment}
        chosen = operator_settings(self, stack_owned={**stack_owned, **auth.environment})
        environment = {**POWERTOOLS_ENVIRONMENT, **stack_owned, **chosen}
        web_adapter = lambda_.LayerVersion.from_layer_version_arn(
            self, "WebAdapterLayer", lambda_web_adapter_arn(Stack.of(self))
        )

        self.stream = ServiceFunction(
            self,
            "Stream",
            ServiceFunctionProps(
                code_dir=FUNCTIONS_DIR / "stream",
                handler="run.sh",
                description="Tollgate chat routes (streaming): uvicorn + Lambda Web Adapter",
                layers=[layer, web_adapter],
                environment={
                    **environment,
                    "AWS_LAMBDA_EXEC_WRAPPER": "/opt/bootstrap",
                    "AWS_LWA_INVOKE_MODE": "response_stream",
                    "AWS_LWA_PORT": LWA_PORT,
                    "AWS_LWA_READINESS_CHECK_PATH": READINESS_CHECK_PATH,
                },
                memory_size=1024,
                timeout=STREAM_TIMEOUT,
            ),
        )
        self.gateway = ServiceFunction(
            self,
            "Gateway",
            ServiceFunctionProps(
                code_dir=FUNCTIONS_DIR / "gateway",
                handler="handler.handler",
                description="Tollgate models, embeddings and images: Mangum",
                layers=[layer],
                environment=environment,
                memory_size=1024,
                timeout=BUFFERED_TIMEOUT,
            ),
        )
        self.admin = ServiceFunction(
            self,
            "Admin",
            ServiceFunctionProps(
                code_dir=FUNCTIONS_DIR / "admin",
                handler="handler.handler",
                description="Tollgate admin API: Mangum",
                layers=[layer],
                # Only the admin function accepts admin sign-in tokens, so only it knows the issuer.
                environment={**environment, **auth.environment},
                memory_size=512,
                timeout=BUFFERED_TIMEOUT,
            ),
        )
        # No reserved concurrency (the factory's default): sweeping is idempotent (every settlement is
        # conditional), so two overlapping runs are harmless, and reserving even 1 fails to deploy in
        # accounts whose concurrency quota is still the new-account minimum (unreserved must stay >= 10).
        self.rollup = ServiceFunction(
            self,
            "Rollup",
            ServiceFunctionProps(
                code_dir=FUNCTIONS_DIR / "rollup",
                handler="handler.handler",
                description="Tollgate scheduled run: sweeps holds and starter credits, rolls up usage",
                layers=[layer],
                environment=environment,
                memory_size=512,
                timeout=ROLLUP_TIMEOUT,
            ),
        )

        for serving in (self.stream, self.gateway):
            self._grant_serving(serving, tables, secrets)
        # Bedrock authenticates with the function's own role: chat (stream) converses and streams;
        # embeddings and images (gateway) invoke.
        _grant_bedrock(self.stream, "bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream")
        _grant_bedrock(self.gateway, "bedrock:InvokeModel")
        self._grant_admin(self.admin, tables, secrets)
        self._grant_rollup(self.rollup, tables)

    @staticmethod
    def _grant_serving(fn: ServiceFunction, tables: TollgateTables, secrets: TollgateSecrets) -> None:
        """Public API: look up keys, routes and prices, hold and settle, read the pepper and credentials.

        Ledger, by call: ``UpdateItem`` (holds and their release, rate-limit windows, the idempotency
        outcome), ``PutItem`` (idempotency claims, charge entries), ``DeleteItem`` (releasing an
        idempotency claim, in a settlement or alone). No ``Query`` and no ``GetItem``: the serving path
        reads ledger state only through its conditional writes (``ReturnValuesOnConditionCheckFailure``).
        Usage: the settlement transaction ``Put``s the record (or ``PutItem`` alone, with nothing held).
        """
        # GetItem: keys, routes, providers. Query: prices on the table (``pk = MODEL#<model> AND
        # begins_with(sk, PRICE#)``) and the model list on gsi1 (``GET /v1/models``).
        tables.grant(fn.role, CATALOG, "dynamodb:GetItem", "dynamodb:Query", indexes=True)
        tables.grant(
            fn.role,
            LEDGER,
            "dynamodb:UpdateItem",
            "dynamodb:PutItem",
            "dynamodb:DeleteItem",
            indexes=False,
        )
        tables.grant(fn.role, USAGE, "dynamodb:PutItem", indexes=False)
        secrets.grant_read_pepper(fn.role)
        secrets.grant_read_provider_secrets(fn.role)
        secrets.grant_key(fn.role, "kms:Decrypt")
        _acknowledge_provider_prefix(fn, secrets)

    @staticmethod
    def _grant_admin(fn: ServiceFunction, tables: TollgateTables, secrets: TollgateSecrets) -> None:
        """Admin API: write the catalog, query usage, and create or replace provider credentials."""
        # TransactWriteItems is not an IAM action: each item in a transaction is authorised by its own
        # action (PutItem/UpdateItem/DeleteItem) plus ConditionCheckItem for condition-only items.
        tables.grant(
            fn.role,
            CATALOG,
            "dynamodb:GetItem",
            "dynamodb:PutItem",
            "dynamodb:UpdateItem",
            "dynamodb:DeleteItem",
            "dynamodb:Query",
            "dynamodb:ConditionCheckItem",
            indexes=True,
        )
        # Ledger: credits are one transaction (guard Put + account Update + entry Put, each conditional
        # on its own item, so no ConditionCheck item); GetItem reads balances and replays a credit;
        # Query lists a tenant's entries on the table (no index).
        tables.grant(
            fn.role,
            LEDGER,
            "dynamodb:GetItem",
            "dynamodb:PutItem",
            "dynamodb:UpdateItem",
            "dynamodb:Query",
            indexes=False,
        )
        tables.grant(fn.role, USAGE, "dynamodb:Query", indexes=True)
        # Analytics (read only): a tenant's buckets on the table, every tenant's of a period on
        # by_period, and the rollup's watermark (GetItem).
        tables.grant(fn.role, ANALYTICS, "dynamodb:GetItem", "dynamodb:Query", indexes=True)
        # Audit log, append-only: GetItem reads the chain head and one entry; a TransactWriteItems
        # puts the entry (PutItem) and moves the head (UpdateItem), each conditional; Query lists and
        # verifies on the table, and lists one tenant's entries on by_tenant. No DeleteItem, ever:
        # and an entry overwritten anyway would break the hash chain, which ``?verify=true`` reports.
        tables.grant(
            fn.role,
            AUDIT,
            "dynamodb:GetItem",
            "dynamodb:PutItem",
            "dynamodb:UpdateItem",
            "dynamodb:Query",
            indexes=False,
        )
        for index in AUDIT.indexes:
            tables.grant_index(fn.role, AUDIT, index.name, "dynamodb:Query")
        secrets.grant_read_pepper(fn.role)
        secrets.grant_read_admin_key(fn.role)
        secrets.grant_manage_provider_secrets(fn.role)
        secrets.grant_key(fn.role, "kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey")
        _acknowledge_provider_prefix(fn, secrets)

    @staticmethod
    def _grant_rollup(fn: ServiceFunction, tables: TollgateTables) -> None:
        """Sweeper: find accounts with holds, settle abandoned holds, expire unused starter credits.

        Ledger, by call: ``Query`` on the ``accounts`` index only; settlements and starter expiry are
        transactions of ``Update`` (holds, account, concurrency counter), ``Put`` (entries) and
        ``Delete`` (an abandoned request's idempotency claim). Usage: the settlement's record ``Put``.
        No catalog, secret or key: the sweep prices nothing, it settles each hold at its reserved amount.

        Rollup (``tollgate.rollup``): reads recent usage records on the ``by_day`` index (``Query``);
        analytics: puts buckets (``PutItem``), reads a tenant-day's hour buckets back (``Query`` on the
        table) and reads and moves its watermark (``GetItem``, ``UpdateItem``).
        """
        tables.grant_index(fn.role, LEDGER, LEDGER_ACCOUNTS_INDEX, "dynamodb:Query")
        tables.grant(
            fn.role,
            LEDGER,
            "dynamodb:UpdateItem",
            "dynamodb:PutItem",
            "dynamodb:DeleteItem",
            indexes=False,
        )
        tables.grant(fn.role, USAGE, "dynamodb:PutItem", indexes=False)
        tables.grant_index(fn.role, USAGE, USAGE_BY_DAY_INDEX, "dynamodb:Query")
        tables.grant(
            fn.role,
            ANALYTICS,
            "dynamodb:PutItem",
            "dynamodb:Query",
            "dynamodb:GetItem",
            "dynamodb:UpdateItem",
            indexes=False,
        )


BEDROCK_FOUNDATION_MODELS = "arn:<AWS::Partition>:bedrock:*::foundation-model/*"
BEDROCK_INFERENCE_PROFILES = "arn:<AWS::Partition>:bedrock:<AWS::Region>:<AWS::AccountId>:inference-profile/*"


def _grant_bedrock(fn: ServiceFunction, *actions: str) -> None:
    """Bedrock model invocation. Foundation models span regions because cross-region inference
    profiles route a request to another region's model; profiles are this account's, here."""
    stack = Stack.of(fn)
    fn.role.add_to_principal_policy(
        iam.PolicyStatement(
            actions=list(actions),
            resources=[
                f"arn:{stack.partition}:bedrock:*::foundation-model/*",
                f"arn:{stack.partition}:bedrock:{stack.region}:{stack.account}:inference-profile/*",
            ],
        )
    )
    for pattern in (BEDROCK_FOUNDATION_MODELS, BEDROCK_INFERENCE_PROFILES):
        acknowledge(
            fn.role,
            f"AwsSolutions-IAM5[Resource::{pattern}]",
            "Which Bedrock models a deployment uses is configured at run time through the admin API, so the "
            "grant covers model invocation only (no management actions), on foundation models and this "
            "account's inference profiles.",
        )


def _acknowledge_provider_prefix(fn: ServiceFunction, secrets: TollgateSecrets) -> None:
    pattern = (
        f"arn:<AWS::Partition>:secretsmanager:<AWS::Region>:<AWS::AccountId>:secret:"
        f"{secrets.provider_secret_prefix}*"
    )
    acknowledge(
        fn.role,
        f"AwsSolutions-IAM5[Resource::{pattern}]",
        "Provider credential secrets are created at run time by the admin function, one per provider, "
        "under this stack's own name prefix; the pattern covers exactly that prefix and nothing else.",
    )
