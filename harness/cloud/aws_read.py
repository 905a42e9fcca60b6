"""Reading one AWS account into an :class:`~harness.cloud.facts.Estate` (see :mod:`.aws`).

One function per group of facts; each turns the calls it could not make into ``unread``
entries, so a refusal shows in the fact that needed it and nowhere else.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from harness.cloud.aws import AwsScope, Reader, Unreadable, env_kind, grants, guard, min_tls
from harness.cloud.facts import (
    BackupPlanFacts,
    BucketFacts,
    EndpointFacts,
    Estate,
    FunctionFacts,
    Grant,
    KeyFacts,
    PrivateEndpointFacts,
    RoleFacts,
    SecretFacts,
    StoreFacts,
    SubnetFacts,
    TrailFacts,
    Unread,
)
from harness.config import Config
from harness.outcome import CannotObserve

_DECRYPT = ("kms:decrypt", "kms:*", "*")
#: CLOUD-004 (c)'s fact for a Lambda's identity: IAM access keys belong to users only.
ROLE_KEYS = "roles hold no long-lived keys; function identities are roles"

T = TypeVar("T")


def collect(config: Config, progress: Callable[[str], None] | None = None) -> Estate:
    """The AWS estate ``[cloud.aws]`` scopes, read-only."""
    reader = Reader(AwsScope.from_config(config))
    if progress is not None:
        reader.progress = progress
    try:
        reader.client("sts")
    except Exception as exc:  # a missing profile, a role that cannot be assumed
        raise CannotObserve(f"cannot open an AWS session: {type(exc).__name__}: {exc}") from None
    return read_estate(reader)


def read_estate(reader: Reader) -> Estate:
    """Every fact the CLOUD controls judge, for the reader's scope."""
    unread: list[Unread] = []
    account = _account(reader, unread)
    phi = _phi_arns(reader, unread)
    functions, fn_stores, roles_used = _functions(reader, phi, unread)
    stores = [*_tables(reader, phi), *_buckets(reader, phi), *_messaging(reader, phi), *fn_stores]
    secret_stores, secrets = _secrets(reader, phi, unread)
    stores += secret_stores + _log_groups(reader, phi, {f.name for f in functions}, unread)
    trails = _trails(reader, unread)
    subnets = tuple(_subnets(reader, sorted({s for f in functions for s in f.subnets})))
    buckets = {t.bucket for t in trails if t.bucket} | set(reader.scope.audit_buckets)
    return Estate(
        provider="aws",
        account=account,
        scope=reader.scope.words(),
        keys=tuple(_keys(reader, sorted({s.key for s in stores if s.key}))),
        stores=tuple(stores),
        log_buckets=tuple(
            reader.each("audit buckets", lambda b: _log_bucket(reader, b), sorted(buckets))
        ),
        trails=tuple(trails),
        functions=tuple(functions),
        roles=tuple(reader.each("roles", lambda r: _role(reader, r), sorted(roles_used))),
        secrets=tuple(secrets),
        endpoints=tuple(_load_balancers(reader, phi, unread) + _apis(reader, phi, unread)),
        subnets=subnets,
        private_endpoints=tuple(
            _vpc_endpoints(reader, sorted({s.network for s in subnets}), unread)
        ),
        backup_plans=tuple(_backup_plans(reader, unread)),
        unread=tuple(unread),
    )


def _account(reader: Reader, unread: list[Unread]) -> str:
    try:
        return str(reader.call(reader.client("sts"), "GetCallerIdentity").get("Account", ""))
    except Unreadable as exc:
        unread.append(Unread("account", str(exc)))
        return ""


def _regional(
    reader: Reader, group: str, unread: list[Unread], read: Callable[[str], T]
) -> Iterator[tuple[str, T]]:
    """``read(region)`` in each region in scope.

    A region it cannot read, or a listing cut short (:attr:`Reader.truncated`), is an
    ``unread`` entry of ``group``.
    """
    for region in reader.scope.regions:
        cut = len(reader.truncated)
        try:
            got = read(region)
        except Unreadable as exc:
            unread.append(Unread(group, str(exc)))
            continue
        finally:
            unread.extend(Unread(group, t) for t in reader.truncated[cut:])
        yield region, got


def _paged(
    reader: Reader,
    group: str,
    unread: list[Unread],
    service: str,
    operation: str,
    key: str,
    **params: Any,
) -> Iterator[tuple[str, list[Any]]]:
    """Each region's ``operation`` items (under ``key``) of ``service``, by :func:`_regional`."""
    return _regional(
        reader,
        group,
        unread,
        lambda region: reader.pages(reader.client(service, region), operation, key, **params),
    )


def _phi_arns(reader: Reader, unread: list[Unread]) -> frozenset[str]:
    """ARNs tagged with the PHI tag in every region, and those the config declares."""
    key, value = reader.scope.phi_tag
    found = set(reader.scope.resources)
    tagged = _paged(
        reader,
        "phi-scope",
        unread,
        "resourcegroupstaggingapi",
        "GetResources",
        "ResourceTagMappingList",
        TagFilters=[{"Key": key, "Values": [value]}],
    )
    for _, mappings in tagged:
        found.update(str(m["ResourceARN"]) for m in mappings)
    return frozenset(a.removesuffix(":*") for a in found)


def _of(phi: frozenset[str], service: str, kind: str) -> list[str]:
    """The PHI ARNs of one resource kind (``dynamodb``, ``table/``)."""
    return sorted(a for a in phi if a.split(":")[2:3] == [service] and kind in a)


def _tables(reader: Reader, phi: frozenset[str]) -> list[StoreFacts]:
    def one(arn: str) -> StoreFacts:
        region, name = arn.split(":")[3], arn.split("table/", 1)[1].split("/")[0]
        client = reader.client("dynamodb", region)
        unread: list[str] = []
        table = guard(lambda: reader.call(client, "DescribeTable", TableName=name), unread)
        sse = (table or {}).get("Table", {}).get("SSEDescription") or {}
        key = str(sse.get("KMSMasterKeyArn", "")) if sse.get("Status") == "ENABLED" else ""
        backups = guard(
            lambda: reader.call(client, "DescribeContinuousBackups", TableName=name), unread
        )
        pitr = None
        if backups is not None:
            desc = backups.get("ContinuousBackupsDescription", {})
            status = desc.get("PointInTimeRecoveryDescription", {}).get("PointInTimeRecoveryStatus")
            pitr = status == "ENABLED"
        encryption = "" if table is None else ("named-key" if key else "provider-key")
        return StoreFacts("table", name, encryption, key, pitr, tuple(unread))

    return reader.each("tables", one, _of(phi, "dynamodb", "table/"))


def _buckets(reader: Reader, phi: frozenset[str]) -> list[StoreFacts]:
    def one(arn: str) -> StoreFacts:
        name = arn.split(":::", 1)[1].split("/")[0]
        unread: list[str] = []
        absent = ("ServerSideEncryptionConfigurationNotFoundError",)
        got = guard(
            lambda: reader.call(
                reader.client("s3"), "GetBucketEncryption", Bucket=name, absent=absent
            ),
            unread,
        )
        rules = (got or {}).get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
        default = rules[0].get("ApplyServerSideEncryptionByDefault", {}) if rules else {}
        key = (
            str(default.get("KMSMasterKeyID", ""))
            if "kms" in str(default.get("SSEAlgorithm"))
            else ""
        )
        encryption = "" if got is None else ("named-key" if key else "provider-key")
        return StoreFacts("bucket", name, encryption, key, None, tuple(unread))

    return reader.each("buckets", one, sorted(a for a in phi if a.startswith("arn:aws:s3:::")))


def _messaging(reader: Reader, phi: frozenset[str]) -> list[StoreFacts]:
    """PHI queues and topics, and the key each is encrypted with."""

    def one(arn: str) -> StoreFacts:
        _, _, service, region, account, name = arn.split(":", 5)
        unread: list[str] = []
        client = reader.client(service, region)
        if service == "sqs":
            url = guard(
                lambda: reader.call(
                    client, "GetQueueUrl", QueueName=name, QueueOwnerAWSAccountId=account
                ),
                unread,
            )
            got = url and guard(
                lambda: reader.call(
                    client,
                    "GetQueueAttributes",
                    QueueUrl=url["QueueUrl"],
                    AttributeNames=["KmsMasterKeyId"],
                ),
                unread,
            )
        else:
            got = guard(lambda: reader.call(client, "GetTopicAttributes", TopicArn=arn), unread)
        if not got:
            return StoreFacts(
                "queue" if service == "sqs" else "topic", name, "", "", None, tuple(unread)
            )
        key = str(got.get("Attributes", {}).get("KmsMasterKeyId", ""))
        kind = "queue" if service == "sqs" else "topic"
        return StoreFacts(kind, name, "named-key" if key else "provider-key", key)

    arns = sorted(a for a in phi if a.split(":")[2:3] in (["sqs"], ["sns"]))
    return reader.each("queues and topics", one, arns)


def _secrets(
    reader: Reader, phi: frozenset[str], unread: list[Unread]
) -> tuple[list[StoreFacts], list[SecretFacts]]:
    stores, secrets = [], []
    listings = _paged(reader, "secrets", unread, "secretsmanager", "ListSecrets", "SecretList")
    for _, listed in listings:
        for s in listed:
            if str(s.get("ARN")) not in phi:
                continue
            key = str(s.get("KmsKeyId", ""))
            stores.append(
                StoreFacts("secret", str(s["Name"]), "named-key" if key else "provider-key", key)
            )
            secrets.append(SecretFacts(str(s["Name"]), bool(s.get("RotationEnabled"))))
    return stores, secrets


def _log_groups(
    reader: Reader, phi: frozenset[str], functions: set[str], unread: list[Unread]
) -> list[StoreFacts]:
    """Log groups tagged PHI, and those of PHI functions (their logs are theirs)."""
    out = []
    listings = _paged(reader, "log-groups", unread, "logs", "DescribeLogGroups", "logGroups")
    for _, groups in listings:
        for g in groups:
            name, arn = str(g["logGroupName"]), str(g.get("arn", "")).removesuffix(":*")
            if arn not in phi and name.removeprefix("/aws/lambda/") not in functions:
                continue
            key = str(g.get("kmsKeyId", ""))
            out.append(StoreFacts("log-group", name, "named-key" if key else "provider-key", key))
    return out


def _functions(
    reader: Reader, phi: frozenset[str], unread: list[Unread]
) -> tuple[list[FunctionFacts], list[StoreFacts], set[str]]:
    listed: list[dict[str, Any]] = []
    listings = _paged(reader, "functions", unread, "lambda", "ListFunctions", "Functions")
    for _, found in listings:
        listed += [f for f in found if str(f.get("FunctionArn")) in phi]

    def one(fn: dict[str, Any]) -> tuple[FunctionFacts, StoreFacts | None]:
        region = str(fn["FunctionArn"]).split(":")[3]
        mine: list[str] = []
        url = guard(
            lambda: reader.call(
                reader.client("lambda", region),
                "GetFunctionUrlConfig",
                FunctionName=fn["FunctionName"],
                absent=("ResourceNotFoundException",),
            ),
            mine,
        )
        variables = (fn.get("Environment") or {}).get("Variables") or {}
        env = tuple((k, env_kind(k, str(v))) for k, v in sorted(variables.items()))
        subnets = tuple((fn.get("VpcConfig") or {}).get("SubnetIds") or ())
        auth = (url or {}).get("AuthType")
        facts = FunctionFacts(
            str(fn["FunctionName"]), str(fn.get("Role", "")), env, subnets, auth, tuple(mine)
        )
        key = str(fn.get("KMSKeyArn") or "")
        store = None
        if variables:
            store = StoreFacts(
                "function-environment", facts.name, "named-key" if key else "provider-key", key
            )
        return facts, store

    pairs = reader.each("functions", one, listed)
    functions = [f for f, _ in pairs]
    return functions, [s for _, s in pairs if s is not None], {f.role for f in functions if f.role}


def _keys(reader: Reader, refs: list[str]) -> list[KeyFacts]:
    def one(ref: str) -> KeyFacts:
        region = ref.split(":")[3] if ref.startswith("arn:") else None
        client = reader.client("kms", region)
        unread: list[str] = []
        meta = (guard(lambda: reader.call(client, "DescribeKey", KeyId=ref), unread) or {}).get(
            "KeyMetadata", {}
        )
        managed = meta.get("KeyManager") == "CUSTOMER" if meta else None
        rotation = None
        if managed:
            got = guard(lambda: reader.call(client, "GetKeyRotationStatus", KeyId=ref), unread)
            rotation = None if got is None else bool(got.get("KeyRotationEnabled"))
        policy = guard(
            lambda: reader.call(client, "GetKeyPolicy", KeyId=ref, PolicyName="default"), unread
        )
        decrypt = None
        if policy is not None:
            decrypt = tuple(g for g in grants(policy.get("Policy") or "{}") if _decrypts(g))
        enabled = meta.get("KeyState") == "Enabled" if meta else False
        return KeyFacts(ref, managed, enabled, rotation, decrypt, tuple(unread))

    return reader.each("keys", one, refs)


def _decrypts(grant: Grant) -> bool:
    return any(a.lower() in _DECRYPT for a in grant.actions)


def _role(reader: Reader, arn: str) -> RoleFacts:
    name, iam = arn.rsplit("/", 1)[-1], reader.client("iam")
    unread: list[str] = []
    found: list[Grant] = []
    inline = guard(
        lambda: reader.pages(iam, "ListRolePolicies", "PolicyNames", RoleName=name), unread
    )
    for policy in inline or ():
        doc = guard(
            functools.partial(reader.call, iam, "GetRolePolicy", RoleName=name, PolicyName=policy),
            unread,
        )
        found += grants((doc or {}).get("PolicyDocument") or {})
    attached = guard(
        lambda: reader.pages(iam, "ListAttachedRolePolicies", "AttachedPolicies", RoleName=name),
        unread,
    )
    for policy in attached or ():
        found += _managed_policy(reader, str(policy["PolicyArn"]), unread)
    return RoleFacts(arn, tuple(found), 0, tuple(unread), ROLE_KEYS)


def _managed_policy(reader: Reader, arn: str, unread: list[str]) -> list[Grant]:
    iam = reader.client("iam")
    meta = guard(lambda: reader.call(iam, "GetPolicy", PolicyArn=arn), unread)
    version = (meta or {}).get("Policy", {}).get("DefaultVersionId")
    if not version:
        return []
    doc = guard(
        lambda: reader.call(iam, "GetPolicyVersion", PolicyArn=arn, VersionId=version), unread
    )
    return list(grants((doc or {}).get("PolicyVersion", {}).get("Document") or {}))


def _trails(reader: Reader, unread: list[Unread]) -> list[TrailFacts]:
    listed: dict[str, dict[str, Any]] = {}
    described = _regional(
        reader,
        "trails",
        unread,
        lambda region: reader.call(
            reader.client("cloudtrail", region), "DescribeTrails", includeShadowTrails=False
        ),
    )
    for _, got in described:
        listed.update({str(t["TrailARN"]): t for t in got.get("trailList", [])})

    def one(trail: dict[str, Any]) -> TrailFacts:
        mine: list[str] = []
        client = reader.client("cloudtrail", trail.get("HomeRegion"))
        status = guard(lambda: reader.call(client, "GetTrailStatus", Name=trail["TrailARN"]), mine)
        return TrailFacts(
            str(trail["Name"]),
            bool(trail.get("IsMultiRegionTrail")),
            None if status is None else bool(status.get("IsLogging")),
            bool(trail.get("LogFileValidationEnabled")),
            str(trail.get("S3BucketName", "")),
            tuple(mine),
        )

    return reader.each("trails", one, [listed[a] for a in sorted(listed)])


def _log_bucket(reader: Reader, name: str) -> BucketFacts:
    s3 = reader.client("s3")
    unread: list[str] = []
    lock = guard(
        lambda: reader.call(
            s3,
            "GetObjectLockConfiguration",
            Bucket=name,
            absent=("ObjectLockConfigurationNotFoundError",),
        ),
        unread,
    )
    config = (lock or {}).get("ObjectLockConfiguration", {})
    retention = config.get("Rule", {}).get("DefaultRetention", {})
    enabled = config.get("ObjectLockEnabled") == "Enabled"
    days = int(retention.get("Days", 0)) or int(retention.get("Years", 0)) * 365
    versioning = guard(lambda: reader.call(s3, "GetBucketVersioning", Bucket=name), unread)
    block = guard(
        lambda: reader.call(
            s3,
            "GetPublicAccessBlock",
            Bucket=name,
            absent=("NoSuchPublicAccessBlockConfiguration",),
        ),
        unread,
    )
    flags = (block or {}).get("PublicAccessBlockConfiguration", {})
    return BucketFacts(
        name,
        None if lock is None else str(retention.get("Mode", "")) if enabled else "",
        days if enabled else 0,
        None if versioning is None else versioning.get("Status") == "Enabled",
        None if block is None else len(flags) == 4 and all(flags.values()),
        tuple(unread),
    )


def _load_balancers(
    reader: Reader, phi: frozenset[str], unread: list[Unread]
) -> list[EndpointFacts]:
    out: list[EndpointFacts] = []
    listings = _paged(
        reader, "load-balancers", unread, "elbv2", "DescribeLoadBalancers", "LoadBalancers"
    )
    for region, lbs in listings:
        client = reader.client("elbv2", region)
        mine = [lb for lb in lbs if str(lb["LoadBalancerArn"]) in phi]
        for found in reader.each(
            "load balancers", functools.partial(_listeners, reader, client), mine
        ):
            out += found
    return out


def _listeners(reader: Reader, client: Any, lb: dict[str, Any]) -> list[EndpointFacts]:
    arn, name = str(lb["LoadBalancerArn"]), str(lb.get("LoadBalancerName", ""))
    mine: list[str] = []
    attrs = guard(
        lambda: reader.call(client, "DescribeLoadBalancerAttributes", LoadBalancerArn=arn), mine
    )
    logging = None
    if attrs is not None:
        values = {a["Key"]: a["Value"] for a in attrs.get("Attributes", [])}
        logging = values.get("access_logs.s3.enabled") == "true"
    listeners = guard(
        lambda: reader.pages(client, "DescribeListeners", "Listeners", LoadBalancerArn=arn), mine
    )
    out = []
    for listener in listeners or ():
        policy, proto, floor = listener.get("SslPolicy"), str(listener.get("Protocol", "")), None
        if policy and proto in ("HTTPS", "TLS"):
            got = guard(
                functools.partial(reader.call, client, "DescribeSSLPolicies", Names=[policy]), mine
            )
            protocols = ((got or {}).get("SslPolicies") or [{}])[0].get("SslProtocols", [])
            floor = min_tls(protocols)
        actions = listener.get("DefaultActions", [])
        redirects = bool(actions) and all(
            a.get("Type") == "redirect" and a.get("RedirectConfig", {}).get("Protocol") == "HTTPS"
            for a in actions
        )
        label = f"{name}:{listener.get('Port')}"
        out.append(
            EndpointFacts(
                "load-balancer-listener", label, proto, floor, redirects, logging, tuple(mine)
            )
        )
    return out or [EndpointFacts("load-balancer", name, "", None, False, logging, tuple(mine))]


def _apis(reader: Reader, phi: frozenset[str], unread: list[Unread]) -> list[EndpointFacts]:
    out: list[EndpointFacts] = []
    for region, (client, domains, apis) in _regional(
        reader, "apis", unread, lambda r: _listed(reader, "apigateway", r, "items", "GetRestApis")
    ):
        for d in domains:
            policy = str(d.get("securityPolicy", "TLS_1_0"))
            out.append(
                EndpointFacts("api-domain", str(d["domainName"]), "HTTPS", min_tls([policy]))
            )
        for api in _phi_apis(reader, phi, f"arn:aws:apigateway:{region}::/restapis/", apis, "id"):
            mine: list[str] = []
            stages = guard(
                functools.partial(reader.pages, client, "GetStages", "item", restApiId=api["id"]),
                mine,
            )
            out += _stages(str(api.get("name", api["id"])), stages, mine)
    return out + _http_apis(reader, phi, {e.name for e in out}, unread)


def _http_apis(
    reader: Reader, phi: frozenset[str], seen: set[str], unread: list[Unread]
) -> list[EndpointFacts]:
    """API Gateway v2 (HTTP and WebSocket APIs): their custom domains and PHI stages."""
    out: list[EndpointFacts] = []
    for region, (client, domains, apis) in _regional(
        reader, "apis", unread, lambda r: _listed(reader, "apigatewayv2", r, "Items", "GetApis")
    ):
        for d in domains:  # custom domains are shared with the REST APIs: each once
            name = str(d["DomainName"])
            policies = [
                str(c.get("SecurityPolicy", "TLS_1_0"))
                for c in d.get("DomainNameConfigurations", [])
            ]
            if name not in seen:
                out.append(
                    EndpointFacts("api-domain", name, "HTTPS", min_tls(policies or ["TLS_1_0"]))
                )
        v2 = [_camel(a) for a in apis]
        for api in _phi_apis(reader, phi, f"arn:aws:apigateway:{region}::/apis/", v2, "apiId"):
            mine: list[str] = []
            stages = guard(
                functools.partial(reader.pages, client, "GetStages", "Items", ApiId=api["apiId"]),
                mine,
            )
            out += _stages(str(api.get("name", api["apiId"])), stages, mine)
    return out


def _listed(
    reader: Reader, service: str, region: str, key: str, operation: str
) -> tuple[Any, list[Any], list[Any]]:
    """An API Gateway (v1 or v2) client in ``region``, its custom domains and its APIs."""
    client = reader.client(service, region)
    return client, reader.pages(client, "GetDomainNames", key), reader.pages(client, operation, key)


def _phi_apis(
    reader: Reader, phi: frozenset[str], prefix: str, apis: list[dict[str, Any]], ident: str
) -> list[dict[str, Any]]:
    """The APIs whose ARN (``prefix`` + their ``ident``) is in scope, or tagged PHI."""
    key, value = reader.scope.phi_tag
    return [
        api
        for api in apis
        if prefix + str(api[ident]) in phi or (api.get("tags") or {}).get(key) == value
    ]


def _camel(fields: dict[str, Any]) -> dict[str, Any]:
    """API Gateway v2's top-level field names as v1 spells them (``StageName``: ``stageName``)."""
    return {k[:1].lower() + k[1:]: v for k, v in fields.items()}


def _stages(api: str, stages: list[dict[str, Any]] | None, mine: list[str]) -> list[EndpointFacts]:
    """An API's stages, v1's or v2's (:func:`_camel`), and whether each logs its access."""
    if stages is None:  # not listed: one entry point whose access logging is unknown
        return [EndpointFacts("api-stage", f"{api}/*", "HTTPS", None, False, None, tuple(mine))]
    out = []
    for stage in map(_camel, stages):
        logs = _camel(stage.get("accessLogSettings") or {})
        logged = bool(logs.get("destinationArn"))
        label = f"{api}/{stage['stageName']}"
        out.append(EndpointFacts("api-stage", label, "HTTPS", None, False, logged, tuple(mine)))
    return out


def _subnets(reader: Reader, ids: list[str]) -> list[SubnetFacts]:
    def one(subnet: str) -> SubnetFacts:
        ec2 = reader.client("ec2")
        unread: list[str] = []
        found = guard(
            lambda: reader.pages(ec2, "DescribeSubnets", "Subnets", SubnetIds=[subnet]), unread
        )
        vpc = str(found[0].get("VpcId", "")) if found else ""
        own = [{"Name": "association.subnet-id", "Values": [subnet]}]
        tables = guard(
            lambda: reader.pages(ec2, "DescribeRouteTables", "RouteTables", Filters=own), unread
        )
        if tables == [] and vpc:  # no table of its own: the VPC's main table
            main = [
                {"Name": "vpc-id", "Values": [vpc]},
                {"Name": "association.main", "Values": ["true"]},
            ]
            tables = guard(
                lambda: reader.pages(ec2, "DescribeRouteTables", "RouteTables", Filters=main),
                unread,
            )
        if not tables:
            return SubnetFacts(subnet, False, tuple(unread or ["no route table read"]), vpc)
        routes = [r for t in tables for r in t.get("Routes", [])]
        public = any(
            str(r.get("GatewayId", "")).startswith("igw-")
            and (
                r.get("DestinationCidrBlock") == "0.0.0.0/0"
                or r.get("DestinationIpv6CidrBlock") == "::/0"
            )
            for r in routes
        )
        return SubnetFacts(subnet, not public, tuple(unread), vpc)

    return reader.each("subnets", one, ids)


def _vpc_endpoints(
    reader: Reader, vpcs: list[str], unread: list[Unread]
) -> list[PrivateEndpointFacts]:
    """The available VPC endpoints of the networks PHI functions run in."""
    if not any(vpcs):
        return []
    filters = [{"Name": "vpc-id", "Values": [v for v in vpcs if v]}]
    try:
        found = reader.pages(
            reader.client("ec2"), "DescribeVpcEndpoints", "VpcEndpoints", Filters=filters
        )
    except Unreadable as exc:
        unread.append(Unread("private-endpoints", str(exc)))
        return []
    return [
        PrivateEndpointFacts(str(e["VpcId"]), str(e["ServiceName"]).rsplit(".", 1)[-1])
        for e in found
        if e.get("State", "available").lower() == "available"
    ]


def _backup_plans(reader: Reader, unread: list[Unread]) -> list[BackupPlanFacts]:
    out = []
    listings = _paged(
        reader, "backup-plans", unread, "backup", "ListBackupPlans", "BackupPlansList"
    )
    for region, plans in listings:
        client = reader.client("backup", region)
        for plan in plans:
            why: list[str] = []
            got = guard(
                functools.partial(
                    reader.call, client, "GetBackupPlan", BackupPlanId=plan["BackupPlanId"]
                ),
                why,
            )
            if got is None:
                unread.extend(Unread("backup-plans", w) for w in why)
                continue
            rules = got.get("BackupPlan", {}).get("Rules", [])
            out.append(BackupPlanFacts(str(plan.get("BackupPlanName", "")), len(rules)))
    return out
