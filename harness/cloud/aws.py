"""AWS: the facts of :mod:`harness.cloud.facts`, read with boto3 and nothing but reads.

Every call goes through :meth:`Reader.call` or :meth:`Reader.pages`: the SDK's own retry
(standard mode) and paginators, and an error that is the account's refusal becomes
``"denied: <IAM action>"`` in the fact, so the control that needed it is INCONCLUSIVE
naming the action. Per-resource reads run :data:`WORKERS` at a time; past
:data:`PROGRESS_FROM` resources a progress line goes to stderr. The IAM actions it needs
are exactly :data:`ACTIONS` (``docs/iam-policy-aws.json``); ``tests/test_cloud_aws.py``
records every call against the local target and holds the two together.

Scope (``[cloud.aws]``): ``regions``, ``profile`` or ``role_arn``, ``phi_tag``
("phi=true"), ``resources`` (ARNs that hold PHI whatever their tags), ``audit_buckets``,
``vpc_endpoints``, ``endpoint_url`` (a local emulator such as the bundled moto target: any
loopback endpoint gets fixed fake credentials). With ``role_arn`` the caller's own
credentials need ``sts:AssumeRole`` on it; the role needs :data:`ACTIONS` only.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from harness.cloud.facts import (
    ENV_ACCESS_KEY,
    ENV_PLAINTEXT_CREDENTIAL,
    ENV_REFERENCE,
    Grant,
)
from harness.config import Config

T = TypeVar("T")
U = TypeVar("U")

#: Per-resource reads in flight at once.
WORKERS = 8
#: From this many resources of one kind on, a progress line is written.
PROGRESS_FROM = 100
#: Items read from one listing at most; the rest is recorded as not read (``Reader.truncated``).
MAX_ITEMS = 10_000

#: IAM action prefixes where they differ from the boto3 client name.
_PREFIX = {"elbv2": "elasticloadbalancing", "resourcegroupstaggingapi": "tag"}
#: Operations whose IAM action is not ``prefix:Operation``.
_RENAMED = {
    ("s3", "GetObjectLockConfiguration"): "s3:GetBucketObjectLockConfiguration",
    ("s3", "GetPublicAccessBlock"): "s3:GetBucketPublicAccessBlock",
    ("s3", "GetBucketEncryption"): "s3:GetEncryptionConfiguration",
    ("apigateway", "GetDomainNames"): "apigateway:GET",
    ("apigateway", "GetRestApis"): "apigateway:GET",
    ("apigateway", "GetStages"): "apigateway:GET",
    ("apigatewayv2", "GetDomainNames"): "apigateway:GET",
    ("apigatewayv2", "GetApis"): "apigateway:GET",
    ("apigatewayv2", "GetStages"): "apigateway:GET",
}

#: Every IAM action the collector may call: docs/iam-policy-aws.json lists exactly these.
ACTIONS = (
    "apigateway:GET",
    "backup:GetBackupPlan",
    "backup:ListBackupPlans",
    "cloudtrail:DescribeTrails",
    "cloudtrail:GetTrailStatus",
    "dynamodb:DescribeContinuousBackups",
    "dynamodb:DescribeTable",
    "ec2:DescribeRouteTables",
    "ec2:DescribeSubnets",
    "ec2:DescribeVpcEndpoints",
    "elasticloadbalancing:DescribeListeners",
    "elasticloadbalancing:DescribeLoadBalancerAttributes",
    "elasticloadbalancing:DescribeLoadBalancers",
    "elasticloadbalancing:DescribeSSLPolicies",
    "iam:GetPolicy",
    "iam:GetPolicyVersion",
    "iam:GetRolePolicy",
    "iam:ListAttachedRolePolicies",
    "iam:ListRolePolicies",
    "kms:DescribeKey",
    "kms:GetKeyPolicy",
    "kms:GetKeyRotationStatus",
    "lambda:GetFunctionUrlConfig",
    "lambda:ListFunctions",
    "logs:DescribeLogGroups",
    "s3:GetBucketObjectLockConfiguration",
    "s3:GetBucketPublicAccessBlock",
    "s3:GetBucketVersioning",
    "s3:GetEncryptionConfiguration",
    "secretsmanager:ListSecrets",
    "sns:GetTopicAttributes",
    "sqs:GetQueueAttributes",
    "sqs:GetQueueUrl",
    "sts:GetCallerIdentity",
    "tag:GetResources",
)

#: Error codes that are the account refusing the call.
_DENIED = {
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "AuthorizationError",
    "UnauthorizedAccess",
    "Forbidden",
}
#: Services whose actions read or change stored data.
_DATA_SERVICES = ("dynamodb", "s3", "kms", "secretsmanager", "sqs", "sns", "rds-data", "ssm")
#: Environment variable names that look like credentials.
_CREDENTIAL_NAME = re.compile(r"(?i)(pass(word|wd)?|secret|token|api_?key|private_?key|credential)")
_ACCESS_KEY_ID = re.compile(r"^(AKIA|ASIA)[A-Z0-9]{16}$")
_SECRET_REFERENCE = re.compile(r"^arn:aws[a-z-]*:(secretsmanager|ssm):")
#: Names that say the value points at a credential rather than holding it (DB_SECRET_NAME).
_REFERENCE_NAME = re.compile(r"(?i)_(arn|name|id|url|uri|path|ref|prefix|header|field|ttl)$")


def iam_action(client: str, operation: str) -> str:
    """The IAM action a boto3 ``client``'s ``operation`` needs (``kms``, ``GetKeyPolicy``)."""
    return _RENAMED.get((client, operation), f"{_PREFIX.get(client, client)}:{operation}")


class Unreadable(Exception):
    """A read the account refused or that failed; ``str()`` is "denied: <action>"."""


@dataclass(frozen=True)
class AwsScope:
    """``[cloud.aws]``: where to read and what counts as PHI."""

    regions: tuple[str, ...]
    profile: str | None = None
    role_arn: str | None = None
    endpoint_url: str | None = None
    phi_tag: tuple[str, str] = ("phi", "true")
    resources: tuple[str, ...] = ()
    audit_buckets: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config: Config) -> AwsScope:
        """The scope the config declares (region ``us-east-1`` when none is given)."""
        key, _, value = (config.str_("cloud.aws.phi_tag") or "phi=true").partition("=")
        regions = tuple(config.str_list("cloud.aws.regions")) or ("us-east-1",)
        return cls(
            regions=regions,
            profile=config.str_("cloud.aws.profile"),
            role_arn=config.str_("cloud.aws.role_arn"),
            endpoint_url=config.str_("cloud.aws.endpoint_url"),
            phi_tag=(key.strip(), value.strip()),
            resources=tuple(config.str_list("cloud.aws.resources")),
            audit_buckets=tuple(config.str_list("cloud.aws.audit_buckets")),
        )

    def words(self) -> str:
        """The scope in one line, for reports."""
        tag = "=".join(self.phi_tag)
        extra = f", {len(self.resources)} declared ARNs" if self.resources else ""
        return f"aws regions {', '.join(self.regions)}, PHI tagged {tag}{extra}"


@dataclass
class Reader:
    """boto3 clients for one account, and the one way calls are made."""

    scope: AwsScope
    progress: Callable[[str], None] = field(default=lambda line: print(line, file=sys.stderr))
    #: The boto3 session (made from the scope at first use; tests give one with event hooks).
    session: Any = None
    _clients: dict[tuple[str, str], Any] = field(default_factory=dict)
    #: Listings cut at :data:`MAX_ITEMS` ("truncated: lambda:ListFunctions after 10000 items").
    truncated: list[str] = field(default_factory=list)

    def client(self, service: str, region: str | None = None) -> Any:
        """The client for ``service`` in ``region`` (the first region by default)."""
        region = region or self.scope.regions[0]
        found = self._clients.get((service, region))
        if found is None:
            found = self._make_client(service, region)
            self._clients[(service, region)] = found
        return found

    def _make_client(self, service: str, region: str) -> Any:
        import boto3
        from botocore.config import Config as BotoConfig

        if self.session is None:
            self.session = _session(self.scope)
        config = BotoConfig(
            retries={"mode": "standard", "max_attempts": 8},
            max_pool_connections=WORKERS * 2,
            connect_timeout=5,
            read_timeout=30,
            user_agent_extra="pytest-hipaa-grpc-readonly",
        )
        assert isinstance(self.session, boto3.Session)
        return self.session.client(
            service, region_name=region, endpoint_url=self.scope.endpoint_url, config=config
        )

    def call(
        self, client: Any, operation: str, *, absent: tuple[str, ...] = (), **params: Any
    ) -> dict[str, Any]:
        """One read; a refusal or failure raises :class:`Unreadable` naming the action.

        An error whose code is in ``absent`` (``ResourceNotFoundException`` for a function
        without a URL) means there is nothing to read: ``{}``.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        name = client.meta.service_model.service_name
        boto_name = _boto_name(client)
        method = getattr(client, _snake(operation))
        try:
            result: dict[str, Any] = method(**params)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in absent:
                return {}
            action = iam_action(boto_name, operation)
            if code in _DENIED or exc.response.get("ResponseMetadata", {}).get(
                "HTTPStatusCode"
            ) in (401, 403):
                raise Unreadable(f"denied: {action}") from None
            raise Unreadable(f"failed: {action} ({code or name})") from None
        except BotoCoreError as exc:
            raise Unreadable(f"failed: {iam_action(boto_name, operation)} ({exc})") from None
        return result

    def pages(self, client: Any, operation: str, key: str, **params: Any) -> list[Any]:
        """The items under ``key`` across the SDK paginator's pages, :data:`MAX_ITEMS` at most.

        A listing cut there is appended to :attr:`truncated`, naming its action.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        snake = _snake(operation)
        if not client.can_paginate(snake):
            return list(self.call(client, operation, **params).get(key, []))
        items: list[Any] = []
        paging = {"MaxItems": MAX_ITEMS, **params.pop("PaginationConfig", {})}
        pages = client.get_paginator(snake).paginate(**params, PaginationConfig=paging)
        try:
            for page in pages:
                items.extend(page.get(key, []))
        except (ClientError, BotoCoreError):
            # the same call once more through call(), which names the refusal
            self.call(client, operation, **params)
            raise
        if pages.resume_token:
            action = iam_action(_boto_name(client), operation)
            self.truncated.append(f"truncated: {action} after {paging['MaxItems']} items")
        return items

    def each(self, kind: str, fn: Callable[[T], U], items: Iterable[T]) -> list[U]:
        """``fn`` over ``items``, :data:`WORKERS` at a time, in order, with progress."""
        todo = list(items)
        if len(todo) < 2:
            return [fn(x) for x in todo]
        out: list[U] = []
        with ThreadPoolExecutor(WORKERS, thread_name_prefix="hipaa-cloud") as pool:
            for i, result in enumerate(pool.map(fn, todo), 1):
                out.append(result)
                if len(todo) >= PROGRESS_FROM and (i % 50 == 0 or i == len(todo)):
                    self.progress(f"cloud: read {i}/{len(todo)} {kind}")
        return out


def _session(scope: AwsScope) -> Any:
    """A boto3 session: the profile's, or the role's when ``role_arn`` is set."""
    import boto3

    if scope.endpoint_url and _loopback(scope.endpoint_url):
        # a local emulator: fixed fake credentials, so no real ones are ever sent to it
        return boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing")
    base = boto3.Session(profile_name=scope.profile) if scope.profile else boto3.Session()
    if not scope.role_arn:
        return base
    sts = base.client("sts", region_name=scope.regions[0], endpoint_url=scope.endpoint_url)
    creds = sts.assume_role(RoleArn=scope.role_arn, RoleSessionName="hipaa-grpc-readonly")[
        "Credentials"
    ]
    return boto3.Session(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )


def _loopback(url: str) -> bool:
    import ipaddress
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _boto_name(client: Any) -> str:
    return str(client.meta.service_model.service_name).replace("elasticloadbalancingv2", "elbv2")


def _snake(operation: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", operation).lower()


def guard(fn: Callable[[], T], unread: list[str]) -> T | None:
    """``fn()``, or ``None`` with why it could not be read appended to ``unread``."""
    try:
        return fn()
    except Unreadable as exc:
        unread.append(str(exc))
        return None


# -- policies ---------------------------------------------------------------------------


def grants(document: str | dict[str, Any]) -> tuple[Grant, ...]:
    """The Allow statements of an IAM or key policy document as :class:`Grant`s."""
    doc = json.loads(document) if isinstance(document, str) else document
    statements = doc.get("Statement", [])
    if isinstance(statements, dict):
        statements = [statements]
    out = []
    for st in statements:
        if st.get("Effect") != "Allow":
            continue
        actions = _strings(st.get("Action", ()))
        resources = _strings(st.get("Resource", ()))
        out.append(
            Grant(
                actions=actions,
                resources=resources,
                principals=_principals(st.get("Principal")),
                conditional=bool(st.get("Condition")),
                data_access=any(_is_data(a) for a in actions),
            )
        )
    return tuple(out)


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value or ())


def _principals(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if value == "*":
        return ("*",)
    names = [n for v in value.values() for n in _strings(v)] if isinstance(value, dict) else []
    out = []
    for name in names:
        if name == "*":
            out.append("*")
        elif re.fullmatch(r"\d{12}", name) or re.fullmatch(
            r"arn:aws[a-z-]*:iam::\d{12}:root", name
        ):
            out.append("account")
        else:
            out.append(name)
    return tuple(out)


def _is_data(action: str) -> bool:
    return action == "*" or action.split(":", 1)[0].lower() in _DATA_SERVICES


def env_kind(name: str, value: str) -> str:
    """How an environment variable is judged, from its name and value (the value is not kept)."""
    if _ACCESS_KEY_ID.match(value.strip()):
        return ENV_ACCESS_KEY
    if _REFERENCE_NAME.search(name) or _SECRET_REFERENCE.match(value):
        return ENV_REFERENCE
    if _CREDENTIAL_NAME.search(name) and value:
        return ENV_PLAINTEXT_CREDENTIAL
    return ENV_REFERENCE


def min_tls(protocols: Iterable[str]) -> str | None:
    """The lowest of ELB policy protocol names (``TLSv1``, ``TLSv1.2``) as ``"1.0"``..."""
    versions = []
    for p in protocols:
        m = re.fullmatch(r"(?:TLSv|TLS_)(\d)(?:[._](\d))?", p.strip())
        if m:
            versions.append(f"{m[1]}.{m[2] or 0}")
        elif p.startswith("SSL"):
            versions.append("0.0")
    return min(versions) if versions else None
