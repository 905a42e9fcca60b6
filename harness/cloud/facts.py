"""What a cloud provider tells the CLOUD controls: provider-neutral facts, read-only.

A provider (:mod:`harness.cloud.aws`; Azure and GCP next) reads its account with its own SDK
and fills an :class:`Estate`; the CLOUD checks (``harness/checks/cloud.py``) judge these facts
only. Nothing here holds a secret: an environment variable is kept by name and kind, never by
value. What could not be read is kept too (``unread``: "denied: kms:GetKeyRotationStatus"), so
that a control that needed it is INCONCLUSIVE naming the action, never PASS.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Kinds of environment variables a function may carry (never their values).
ENV_REFERENCE = "reference"  # a secret-store ARN or name, or no credential at all
ENV_PLAINTEXT_CREDENTIAL = "plaintext-credential"  # a credential-looking name with a value
ENV_ACCESS_KEY = "access-key"  # a long-lived access key ID (AKIA...) in clear


@dataclass(frozen=True)
class Grant:
    """One allow statement of an identity or resource policy.

    Attributes:
        actions: As written (``"kms:Decrypt"``, ``"dynamodb:*"``, ``"*"``).
        resources: As written (``"*"`` for every resource).
        principals: For resource policies: ``"*"`` (anyone), ``"account"`` (every identity
            of the account, the AWS root principal), or an identity's ID.
        conditional: The statement has conditions that narrow it.
        data_access: Some action reads or changes stored data (the provider knows which).
    """

    actions: tuple[str, ...]
    resources: tuple[str, ...]
    principals: tuple[str, ...] = ()
    conditional: bool = False
    data_access: bool = False


@dataclass(frozen=True)
class KeyFacts:
    """A key-management key (KMS key, Key Vault key, Cloud KMS key)."""

    id: str
    customer_managed: bool | None  # None: not read (see unread)
    enabled: bool
    rotation: bool | None  # None: not read (see unread)
    #: Key-policy statements that allow decryption; None: the policy was not read (see unread).
    decrypt_grants: tuple[Grant, ...] | None = ()
    unread: tuple[str, ...] = ()


@dataclass(frozen=True)
class StoreFacts:
    """A data store holding PHI and how it is encrypted at rest.

    ``encryption`` is ``"customer-key"`` (then ``key`` names it), ``"provider-key"`` (a key
    the provider manages) or ``"none"``; ``""`` when it could not be read.
    """

    kind: str  # table, bucket, secret, log-group, function-environment
    name: str
    encryption: str
    key: str = ""
    point_in_time_recovery: bool | None = None  # tables only
    unread: tuple[str, ...] = ()


@dataclass(frozen=True)
class BucketFacts:
    """A bucket that receives audit logs; ``None`` where a setting was not read (see unread)."""

    name: str
    lock_mode: str | None  # "COMPLIANCE", "GOVERNANCE", or "" for no object lock
    retention_days: int  # default retention, 0 when none
    versioning: bool | None
    public_access_blocked: bool | None
    unread: tuple[str, ...] = ()


@dataclass(frozen=True)
class TrailFacts:
    """A management-plane trail."""

    name: str
    multi_region: bool
    logging: bool | None
    validation: bool
    bucket: str
    unread: tuple[str, ...] = ()


@dataclass(frozen=True)
class RoleFacts:
    """An identity a function runs as, with what its policies allow."""

    id: str
    grants: tuple[Grant, ...]
    access_keys: int | None = None  # long-lived keys of the identity; None: not measured
    unread: tuple[str, ...] = ()
    key_basis: str = ""  # how access_keys is known ("roles hold no long-lived keys")


@dataclass(frozen=True)
class FunctionFacts:
    """A function (Lambda, Azure Function, Cloud Run function) that touches PHI."""

    name: str
    role: str
    env: tuple[tuple[str, str], ...] = ()  # (variable name, ENV_* kind): never a value
    subnets: tuple[str, ...] = ()
    url_auth: str | None = None  # None: no public URL; "NONE": anyone may call it
    unread: tuple[str, ...] = ()


@dataclass(frozen=True)
class SecretFacts:
    """A secret in the provider's secret store."""

    name: str
    rotation: bool | None
    unread: tuple[str, ...] = ()


@dataclass(frozen=True)
class EndpointFacts:
    """An entry point in front of the service: a load balancer listener, an API domain or stage.

    ``min_tls`` is the lowest TLS version its policy accepts (``"1.0"`` ... ``"1.3"``),
    ``None`` for cleartext; ``redirects`` says a cleartext listener only redirects to HTTPS;
    ``access_logging`` is ``None`` where the kind has no such setting.
    """

    kind: str  # load-balancer-listener, api-domain, api-stage
    name: str
    protocol: str  # HTTPS, TLS, HTTP, TCP
    min_tls: str | None = None
    redirects: bool = False
    access_logging: bool | None = None
    unread: tuple[str, ...] = ()


@dataclass(frozen=True)
class SubnetFacts:
    """A subnet a function is attached to; private when no route leads to the internet."""

    id: str
    private: bool
    unread: tuple[str, ...] = ()
    network: str = ""  # the VPC / VNet / VPC network it belongs to


@dataclass(frozen=True)
class PrivateEndpointFacts:
    """A private endpoint of a provider service inside a network (a VPC endpoint)."""

    network: str
    service: str  # the provider's short service name: "dynamodb", "s3"


@dataclass(frozen=True)
class BackupPlanFacts:
    """A backup plan and how many scheduled rules it has."""

    name: str
    rules: int


@dataclass(frozen=True)
class Unread:
    """A whole group the provider could not list (``group``: "keys", "trails"...)."""

    group: str
    why: str  # "denied: cloudtrail:DescribeTrails", "failed: ... (Throttling)"


@dataclass(frozen=True)
class Estate:
    """Everything the CLOUD controls judge, as one provider read it."""

    provider: str
    account: str
    scope: str  # in words: regions, the PHI tag, explicit resources
    keys: tuple[KeyFacts, ...] = ()
    stores: tuple[StoreFacts, ...] = ()
    log_buckets: tuple[BucketFacts, ...] = ()
    trails: tuple[TrailFacts, ...] = ()
    functions: tuple[FunctionFacts, ...] = ()
    roles: tuple[RoleFacts, ...] = ()
    secrets: tuple[SecretFacts, ...] = ()
    endpoints: tuple[EndpointFacts, ...] = ()
    subnets: tuple[SubnetFacts, ...] = ()
    private_endpoints: tuple[PrivateEndpointFacts, ...] = ()
    backup_plans: tuple[BackupPlanFacts, ...] = ()
    unread: tuple[Unread, ...] = ()

    def missing(self, *groups: str) -> list[str]:
        """Why any of ``groups`` could not be listed (empty when all were)."""
        return [f"{u.group}: {u.why}" for u in self.unread if u.group in groups]
